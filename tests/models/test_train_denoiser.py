from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models import checkpoint, train_denoiser
from models.ffdnet import FFDNet, FFDNetConfig
from models.train_denoiser import Patches, from_single_level, train


def coordinate_images() -> list[np.ndarray]:
    """Each pixel holds (row, column, image index), so a crop tells where it came from."""
    images = []
    for i, (h, w) in enumerate([(20, 30), (40, 12), (16, 16)]):
        rows, cols = np.mgrid[:h, :w]
        images.append(np.stack([rows, cols, np.full((h, w), i)], axis=-1).astype(np.uint8))
    return images


def test_patches_are_whole_windows_of_one_image_under_flips_and_transposes() -> None:
    images = coordinate_images()
    crops = Patches(images, "cpu").sample(400, 8, torch.Generator().manual_seed(0))
    assert crops.shape == (400, 3, 8, 8)
    corners = set()
    for crop in (crops * 255).round().long():
        index = crop[2].unique()
        assert len(index) == 1
        h, w = images[int(index)].shape[:2]
        rows, cols = crop[0], crop[1]
        if rows[0, 0] == rows[0, 1]:  # rows run down the crop: not transposed
            r0, c0 = rows, cols
        else:
            r0, c0 = rows.T, cols.T
        # A window of the original image, possibly flipped: 8 distinct rows and columns, each contiguous.
        assert sorted(r0[:, 0].tolist()) == list(range(int(r0.min()), int(r0.min()) + 8))
        assert sorted(c0[0].tolist()) == list(range(int(c0.min()), int(c0.min()) + 8))
        assert (r0 == r0[:, :1]).all() and (c0 == c0[:1]).all()
        assert int(r0.max()) < h and int(c0.max()) < w
        corners.add((bool(rows[0, 0] == rows.min()), bool(cols[0, 0] == cols.min()), bool(rows[0, 0] == rows[0, 1])))
    assert len(corners) == 8  # every flip/transpose combination drawn


def write_folder(folder: Path, count: int = 10) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        smooth = np.kron(rng.integers(0, 256, (6, 6, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        Image.fromarray(smooth).save(folder / f"{i}.png")
    return folder


def test_training_exports_and_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "train")
    run, export = tmp_path / "run", tmp_path / "w.pt"
    config = FFDNetConfig(channels=3, features=8, blocks=1)
    first = train(data, run, export, patch=16, batch=4, steps=6, eval_every=3, config=config)
    assert checkpoint.load(run / "last.pt")["step"] == 3 * 2
    shipped = checkpoint.load(export)
    assert shipped["val_psnr"] == first
    assert shipped["config"] == {"channels": 3, "features": 8, "blocks": 1, "estimator_features": 32}
    assert all(v.device.type == "cpu" for v in shipped["state"].values())
    resumed = train(data, run, export, patch=16, batch=4, steps=9, eval_every=3, config=config)
    state = checkpoint.load(run / "last.pt")
    assert state["step"] == 9 and resumed >= first and state["best"] == resumed


def test_a_collapsed_run_goes_back_to_its_last_checkpoint_at_half_the_rate(
        tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    scores = iter([20.0, 10.0, 21.0, float("nan"), 22.0])  # evaluations at steps 3, 6, 6, 9, 9
    monkeypatch.setattr(train_denoiser, "validate", lambda *_: next(scores))
    data = write_folder(tmp_path / "train")
    config = FFDNetConfig(channels=3, features=8, blocks=1)
    best = train(data, tmp_path / "run", tmp_path / "w.pt", patch=16, batch=4, steps=9, eval_every=3, config=config)
    state = checkpoint.load(tmp_path / "run" / "last.pt")
    assert best == 22.0 and state["step"] == 9 and state["lr_scale"] == 0.25
    assert [r.message for r in caplog.records if r.levelname == "WARNING"] == [
        "validation 10.00 dB, best 20.00: back to step 3, learning rate x0.5",
        "validation nan dB, best 21.00: back to step 6, learning rate x0.25"]


def test_a_patch_larger_than_an_image_is_refused() -> None:
    patches = Patches(coordinate_images(), "cpu")  # the narrowest image is 12 px wide
    with pytest.raises(AssertionError, match=r"larger than the smallest training image \(12 px\)"):
        patches.sample(4, 13, torch.Generator().manual_seed(0))


def test_weights_of_the_single_level_net_give_its_output_for_a_uniform_map() -> None:
    """The earlier net took one noise-level channel; its weights carry over exactly."""
    torch.manual_seed(0)
    new = FFDNet(FFDNetConfig(channels=3, features=8, blocks=1)).eval()
    old = new.state_dict()
    old["head.weight"] = torch.randn(8, 12 + 1, 3, 3)  # 4C image channels and one level channel
    del old["estimator.0.weight"]
    new.load_state_dict(from_single_level({k: v.half() for k, v in old.items()}, new))
    x, sigma = torch.rand(2, 3, 20, 22), torch.tensor([0.05, 0.2])
    down = F.pixel_unshuffle(x, 2)
    level = sigma.view(-1, 1, 1, 1).expand(-1, 1, 10, 11)
    by_hand = F.conv2d(torch.cat([down, level], 1), old["head.weight"].half().float(), new.head.bias, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(new.head(torch.cat([down, level.expand(-1, 3, -1, -1)], 1)), by_hand)


def test_the_learning_rate_warms_up_then_falls_to_its_floor() -> None:
    rate = train_denoiser.learning_rate
    assert rate(0, 1000, 1e-3, warmup=100) == pytest.approx(1e-3 / 100, rel=1e-3)
    assert rate(49, 1000, 1e-3, warmup=100) < rate(99, 1000, 1e-3, warmup=100) <= 1e-3
    assert rate(99, 1000, 1e-3, warmup=100) == pytest.approx(1e-3, rel=0.03)
    assert rate(1000, 1000, 1e-3, warmup=100) == pytest.approx(1e-5)
