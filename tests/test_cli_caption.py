"""`denocap caption` on real files, and prepare/train/eval end to end on a handful of images."""
import json
import shutil
from pathlib import Path

import numpy as np

from models.grounding import read_table
from models.heldout import OBJECTS
from models.train_grounding import NOBODY, PEOPLE
from tests.conftest import png, smooth_image
from tests.test_cli import denocap
from tests.tiny import WORDS, write_weights


def test_caption_images_and_bad_inputs(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image()))
    (tmp_path / "b.jpg").write_bytes(b"nope")
    out = denocap(env, "caption", str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "--beam", "2")
    assert out.returncode == 1
    name, caption = out.stdout.strip().split("\t")
    assert name == "a.png" and caption and set(caption.split()) <= set(WORDS)
    assert "b.jpg: not an image" in out.stderr
    first = denocap(env, "caption", "--beam", "2", str(tmp_path / "a.png"))  # options first: "No such option"
    assert first.returncode == 0 and first.stdout == out.stdout, first.stderr


def test_caption_help_says_how_to_caption_files(env: dict[str, str]) -> None:
    out = denocap(env, "caption", "--help")
    assert out.returncode == 0, out.stderr
    assert "denocap caption PHOTO.jpg" in out.stdout and "images" in out.stdout and "compare" in out.stdout


def test_caption_bad_arguments(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image()))
    out = denocap(env, "caption", str(tmp_path / "a.png"), "--captioner", "nosuch")
    assert out.returncode == 2 and out.stderr.strip() == "error: unknown captioner 'nosuch'; known: attention, blip"
    out = denocap(env, "caption", str(tmp_path / "a.png"), "--weights", str(tmp_path / "missing"))
    assert out.returncode == 2 and out.stderr.strip() == f"error: weights folder not found: {tmp_path / 'missing'}"
    out = denocap({**env, "DENOCAP_DEVICE": "cuda:99"}, "caption", str(tmp_path / "a.png"))  # a torch traceback
    assert out.returncode == 2
    assert out.stderr.strip() == "error: device cuda:99 asked for (DENOCAP_DEVICE), but this machine has no such CUDA GPU"


def fake_flickr8k(root: Path) -> Path:
    """Six images in the Flickr8k layout: 4 train, 1 dev, 1 test, two captions each."""
    data = root / "caption" / "flickr8k"
    (data / "images").mkdir(parents=True)
    names = [f"{i}.jpg" for i in range(6)]
    lines = []
    for i, name in enumerate(names):
        (data / "images" / name).write_bytes(png(smooth_image(224, 224, seed=i)))
        second = "a dog sits on the grass" if i == 0 else "A cat sits on the grass"  # photo 0 names no cat
        lines += [f"{name}#0\ta dog runs on the grass .", f"{name}#1\t{second}"]
    (data / "Flickr8k.token.txt").write_text("\n".join(lines))
    (data / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:4]))
    (data / "Flickr_8k.devImages.txt").write_text(names[4])
    (data / "Flickr_8k.testImages.txt").write_text(names[5])
    return root


def fake_cbsd432(root: Path) -> None:
    """A small image under each name of the person labels."""
    folder = root / "denoise" / "train" / "cbsd432"
    folder.mkdir(parents=True)
    for i, line in enumerate(PEOPLE.read_text().splitlines()[1:]):
        (folder / line.split("\t")[0]).write_bytes(png(smooth_image(32, 48, seed=i)))


def test_prepare_train_eval_end_to_end(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "DENOCAP_SHARED_DATA": str(fake_flickr8k(tmp_path / "shared")),
           "DENOCAP_WEIGHTS_DIR": str(tmp_path / "weights")}
    out = denocap(env, "caption", "prepare")
    assert out.returncode == 0, out.stderr
    prepared = Path(env["DENOCAP_DATA_DIR"]) / "caption"
    assert (prepared / "features.done").read_text() == "6"
    out = denocap(env, "caption", "train", "--epochs", "2")
    assert out.returncode == 0, out.stderr
    assert "epoch 2" in out.stderr and (tmp_path / "weights" / "captioner.pt").is_file()
    out = denocap(env, "caption", "train", "--epochs", "3")  # resumes after epoch 2
    assert "resumed after epoch 2" in out.stderr and "epoch 3" in out.stderr
    out = denocap(env, "caption", "train", "--scst", "--epochs", "1")  # self-critical, from the exported weights
    assert out.returncode == 0, out.stderr
    assert "starting from" in out.stderr and "train CIDEr-D of samples" in out.stderr
    assert (Path(env["DENOCAP_DATA_DIR"]) / "runs" / "captioner" / "scst_last.pt").is_file()
    out = denocap(env, "caption", "eval", "--json", str(tmp_path / "scores.json"))
    assert out.returncode == 0, out.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["attention (ours)"]) >= {"BLEU-1", "BLEU-4", "CIDEr", "ROUGE-L", "METEOR", "seconds_per_image"}
    assert scores["retrieval baseline"]["BLEU-1"] > 0.5  # its consensus caption is one of the references
    out = denocap(env, "caption", "ground")
    assert out.returncode == 2 and out.stderr.strip().startswith("error: not found: ")  # no labelled photos
    fake_cbsd432(Path(env["DENOCAP_SHARED_DATA"]))
    out = denocap(env, "caption", "ground")
    assert out.returncode == 0, out.stderr
    fitted = json.loads((tmp_path / "weights" / "grounding.json").read_text())
    assert 0.3 <= fitted["threshold"] <= 0.9 and len(fitted["suppress"]) == len(read_table().words)
    assert len(fitted["probe"]) == 1281 and fitted["nobody"] in (0.0, *NOBODY)  # a weight per feature, the bias
    fake_general_dev(Path(env["DENOCAP_SHARED_DATA"]))
    out = denocap(env, "caption", "compare", "--json", str(tmp_path / "compare.json"))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "compare.json").read_text())
    for name in ("shipped (decoder alone)", "grounded (ImageNet words)"):
        assert result[name]["general_dev"]["subject_named"] == 0.5 and result[name]["general_dev"]["wrong_word"] == 0.5
        assert result[name]["flickr8k_test"]["images"] == 1
    candidate = tmp_path / "candidate"
    out = denocap(env, "caption", "compare", "--candidate", str(candidate))
    assert out.returncode == 2 and out.stderr.strip().startswith("error: not found: "), out.stderr
    write_weights(candidate)  # another decoder: the tiny one, with its own words
    shutil.copy(tmp_path / "weights" / "grounding.json", candidate)
    out = denocap(env, "caption", "compare", "--candidate", str(candidate), "--json", str(tmp_path / "compare.json"))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "compare.json").read_text())
    assert {"candidate (decoder alone)", "candidate, grounded"} < set(result)
    assert result["candidate, grounded"]["versions"] != result["grounded (ImageNet words)"]["versions"]
    for caption in result["candidate (decoder alone)"]["general_dev"]["captions"].values():
        assert set(caption.split()) <= set(WORDS)
    out = denocap(env, "caption", "heldout", "--epochs", "1", "--json", str(tmp_path / "heldout.json"))
    assert out.returncode == 0, out.stderr
    heldout = json.loads((tmp_path / "heldout.json").read_text())
    assert heldout["held_out_training_photos"] == 3  # the training photos whose captions name a cat
    for name in ("without the held-out photos, decoder alone", "without the held-out photos, grounded",
                 "shipped (trained with them), grounded"):
        assert set(heldout[name]["f1"]) == set(OBJECTS) and heldout[name]["f1"]["cat"]["photos"] == 1


def test_features_of_another_encoder_input_are_refused_then_made_again(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "DENOCAP_SHARED_DATA": str(fake_flickr8k(tmp_path / "shared"))}
    assert denocap(env, "caption", "prepare").returncode == 0
    prepared = Path(env["DENOCAP_DATA_DIR"]) / "caption"
    meta = json.loads((prepared / "captions.json").read_text())
    (prepared / "captions.json").write_text(json.dumps({**meta, "encoder": "imagenet mean and std"}))
    features = np.load(prepared / "features.npy", mmap_mode="r+")
    features[:] = 0  # what the old input's features stand for here
    features.flush()
    out = denocap(env, "caption", "eval")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "another encoder input (imagenet mean and std" in out.stderr and "prepare again" in out.stderr
    assert denocap(env, "caption", "prepare").returncode == 0  # made again, not resumed from features.done
    assert np.load(prepared / "features.npy").any()
    assert json.loads((prepared / "captions.json").read_text())["encoder"] == meta["encoder"]


def fake_general_dev(shared: Path) -> None:
    """Two general photos with keys: one the tiny captioner's words name, one they cannot."""
    (shared / "denoise" / "test" / "cbsd68").mkdir(parents=True)
    (shared / "denoise" / "test" / "cbsd68" / "1.png").write_bytes(png(smooth_image(64, 48, seed=9)))
    (shared / "denoise" / "test" / "cbsd68" / "2.png").write_bytes(png(smooth_image(40, 56, seed=8)))
    keys = {"cbsd68/1.png": {"any": list(WORDS), "never": ["zebra"], "refs": ["a dog"]},
            "cbsd68/2.png": {"any": ["zebra"], "never": list(WORDS), "refs": ["a zebra"]}}
    (shared / "caption" / "general_dev.json").write_text(json.dumps(keys))


def test_study_writes_table_and_plots(env: dict[str, str], tmp_path: Path) -> None:
    shared = fake_flickr8k(tmp_path / "shared")
    fake_general_dev(shared)
    env = {**env, "DENOCAP_SHARED_DATA": str(shared)}
    out = denocap(env, "study", "--sigmas", "15,50", "--limit", "1", "--docs", str(tmp_path / "docs"))
    assert out.returncode == 0, out.stderr
    table = json.loads((tmp_path / "docs" / "study.json").read_text())
    flickr, general = table["flickr8k"], table["general_dev"]
    assert flickr["images"] == 1 and set(flickr["by_sigma"]) == {"15", "50"}
    assert flickr["by_sigma"]["50"]["psnr_noisy"] < flickr["by_sigma"]["15"]["psnr_noisy"]
    assert (tmp_path / "docs" / "study.png").stat().st_size > 10_000
    assert general["photos"] == 2 and set(general) >= {"clean", "15/noisy", "15/denoised", "50/noisy", "50/denoised"}
    assert all(general[k] == {"subject_named": 0.5, "wrong_word": 0.5} for k in ("clean", "50/denoised"))
    md = (tmp_path / "docs" / "study.md").read_text()
    assert "| 50 | denoised |" in md and "| 50 | denoised | 50.0% | 50.0% |" in md

    out = denocap(env, "study", "--sets", "general", "--sigmas", "25", "--docs", str(tmp_path / "docs"))
    assert out.returncode == 0, out.stderr
    table = json.loads((tmp_path / "docs" / "study.json").read_text())
    assert table["flickr8k"] == flickr and set(table["general_dev"]["sigmas"]) == {25}  # the other part is kept
    out = denocap(env, "study", "--sets", "imagenet")
    assert out.returncode == 2 and "--sets takes flickr8k and/or general" in out.stderr
