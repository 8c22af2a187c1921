import numpy as np
import pytest
import torch

from models.ffdnet import FFDNet
from models.tiling import denoise_many
from tests.tiny import tiny_denoiser


def denoise_tiled(net: FFDNet, x: torch.Tensor, sigma: float | None, tile: int, overlap: int) -> torch.Tensor:
    """One image, one tile at a time."""
    return denoise_many(net, [x], [sigma], tile, overlap)[0][0]


@pytest.mark.parametrize("shape", [(1, 3, 33, 47), (2, 1, 16, 15), (1, 3, 1, 1)])
def test_any_shape_in_same_shape_out(shape: tuple[int, ...]) -> None:
    net = tiny_denoiser(shape[1])
    with torch.inference_mode():
        out = net(torch.rand(shape), torch.full((shape[0],), 0.1))
    assert out.shape == shape


def test_tiled_equals_untiled_on_512() -> None:
    torch.manual_seed(1)
    net = tiny_denoiser(3)
    x = torch.rand(1, 3, 512, 512)
    whole = denoise_tiled(net, x, 0.1, tile=1024, overlap=32)
    tiled = denoise_tiled(net, x, 0.1, tile=160, overlap=32)
    mse_whole = float(((whole.clamp(0, 1) - x) ** 2).mean())
    mse_tiled = float(((tiled.clamp(0, 1) - x) ** 2).mean())
    assert abs(10 * np.log10(mse_whole / mse_tiled)) < 0.05
    assert torch.allclose(whole, tiled, atol=1e-4)


def test_sigma_changes_the_output() -> None:
    net = tiny_denoiser(3)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert not torch.allclose(net(x, torch.tensor([0.0])), net(x, torch.tensor([0.3])))


def test_micro_batches_of_same_size_tiles_equal_one_at_a_time() -> None:
    torch.manual_seed(2)
    net = tiny_denoiser(3)
    images = [torch.rand(1, 3, 300, 260), torch.rand(1, 3, 300, 260), torch.rand(1, 3, 40, 50),
              torch.rand(1, 3, 130, 500)]
    sigmas = [0.05, None, 0.1, 0.3]
    batched, levels = denoise_many(net, images, sigmas, tile=128, overlap=16, max_batch=8)
    for x, s, y, level in zip(images, sigmas, batched, levels, strict=True):
        torch.testing.assert_close(y, denoise_tiled(net, x, s, tile=128, overlap=16), atol=1e-5, rtol=1e-5)
        with torch.inference_mode():
            assert level == pytest.approx(float(net.estimate(x).mean()), rel=1e-3)  # one map, tiled or not


def test_blind_uses_the_estimated_map_and_a_level_fills_the_map() -> None:
    net = tiny_denoiser(3)
    x = torch.rand(2, 3, 31, 40)
    with torch.inference_mode():
        estimate = net.estimate(x)
        assert estimate.shape == (2, 3, 16, 20) and (estimate >= 0).all()
        torch.testing.assert_close(net(x, torch.tensor([0.1, 0.2])),
                                   net(x, torch.tensor([0.1, 0.2]).view(-1, 1, 1, 1).expand(-1, 3, 16, 20)))
        assert not torch.allclose(net(x, estimate), net(x, torch.tensor([0.1, 0.2])))


def test_denoiser_many_mixes_gray_and_color(weights_dir) -> None:  # type: ignore[no-untyped-def]
    from models.registry import load_denoiser
    denoiser = load_denoiser("ffdnet", weights_dir, "cpu")
    denoiser.max_batch = 4
    rng = np.random.default_rng(0)
    images = [rng.random((64, 80, 3), dtype=np.float32), rng.random((64, 80, 1), dtype=np.float32),
              rng.random((64, 80, 3), dtype=np.float32)]
    together, _ = denoiser.many(images, [0.1, 0.1, None], 48, 8)
    for img, s, out in zip(images, [0.1, 0.1, None], together, strict=True):
        assert out.shape == img.shape
        np.testing.assert_allclose(out, denoiser(img, s, 48, 8), atol=1e-5)


def test_self_ensemble_averages_the_eight_rotations_and_flips(weights_dir) -> None:  # type: ignore[no-untyped-def]
    from models.registry import ModelError, load_denoiser
    img = np.random.default_rng(0).random((40, 56, 3), dtype=np.float32)
    turned = np.ascontiguousarray(np.rot90(img))
    plain, eight = load_denoiser("ffdnet", weights_dir, "cpu"), load_denoiser("ffdnet", weights_dir, "cpu", ensemble=8)
    assert np.abs(plain(turned, 0.1, 512, 32) - np.rot90(plain(img, 0.1, 512, 32))).max() > 1e-3
    np.testing.assert_allclose(eight(turned, 0.1, 512, 32), np.rot90(eight(img, 0.1, 512, 32)), atol=1e-5)
    two, mid = load_denoiser("ffdnet", weights_dir, "cpu", ensemble=2), 0.45 + 0.1 * img  # nothing clipped
    by_hand = (plain(mid, 0.1, 512, 32) + np.rot90(plain(np.ascontiguousarray(np.rot90(mid)), 0.1, 512, 32), -1)) / 2
    assert 0 < by_hand.min() and by_hand.max() < 1
    np.testing.assert_allclose(two(mid, 0.1, 512, 32), by_hand, atol=1e-5)
    assert eight.version == f"{plain.version}-x8"
    with pytest.raises(ModelError, match="ensemble must be one of 1, 2, 4, 8, got 3"):
        load_denoiser("ffdnet", weights_dir, "cpu", ensemble=3)


def test_precision_auto_runs_bfloat16_on_a_cpu_that_has_it_and_says_so(weights_dir) -> None:  # type: ignore[no-untyped-def]
    from models.precision import cpu_bfloat16
    from models.registry import ModelError, load_denoiser
    auto, exact = load_denoiser("ffdnet", weights_dir, "cpu"), load_denoiser("ffdnet", weights_dir, "cpu", precision="float32")
    reduced = cpu_bfloat16()
    assert exact.dtype is None and auto.dtype == (torch.bfloat16 if reduced else None)
    assert auto.version == exact.version + ("-bf16" if reduced else "")
    img = np.random.default_rng(1).random((64, 80, 3), dtype=np.float32)
    diff = np.abs(auto(img, None, 512, 32) - exact(img, None, 512, 32))
    assert diff.max() < 0.05 and (diff.max() > 0) == reduced
    with pytest.raises(ModelError, match="precision must be one of auto, float32, got 'float16'"):
        load_denoiser("ffdnet", weights_dir, "cpu", precision="float16")


@pytest.mark.parametrize("shape", [(4, 4), (1, 1), (3, 90), (1, 40)])
def test_a_flat_image_has_one_noise_level_whatever_its_size(shape: tuple[int, int]) -> None:
    """Zero padding all around made a tiny image all edge: with the shipped weights a 4x4 crop of sigma-25 noise
    read as 72. A tiny image or a strip is shown to the network mirrored out to 64 px a side."""
    torch.manual_seed(0)
    net = tiny_denoiser(3)
    mirrored = (1, 3, max(shape[0], 64), max(shape[1], 64))
    (big,), (level,) = denoise_many(net, [torch.full(mirrored, 0.4)], [None], 512, 32)
    (small,), (small_level,) = denoise_many(net, [torch.full((1, 3, *shape), 0.4)], [None], 512, 32)
    assert small.shape == (1, 3, *shape) and torch.allclose(small, big[..., :shape[0], :shape[1]])
    assert small_level == pytest.approx(level, rel=1e-6)


def test_a_tiny_image_is_mirrored_at_its_far_edges_and_cut_back() -> None:
    from models.tiling import mirrored
    torch.manual_seed(0)
    x = torch.rand(1, 3, 5, 7)
    grown = mirrored(x)
    assert grown.shape == (1, 3, 64, 64) and torch.equal(grown[..., :5, :7], x)
    assert torch.equal(grown[..., 5, :7], x[..., 3, :]) and torch.equal(grown[..., :5, 7], x[..., :, 5])  # mirrored
    net = tiny_denoiser(3)
    (out,), _ = denoise_many(net, [x], [None], 512, 32)
    (whole,), _ = denoise_many(net, [grown], [None], 512, 32)
    assert torch.equal(out, whole[..., :5, :7])
