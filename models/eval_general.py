"""The shipped decoder alone against the same decoder guided by the encoder's ImageNet classifier
(models.grounding), in one run: on the general photos of general_dev.json (CBSD68 and RNI15) the share of captions
that name the subject and of those with a wrong word, and seconds per image; on the Flickr8k test split
pycocoevalcap BLEU-1..4, CIDEr-D and ROUGE-L. Both from the image files, each image encoded once for the scores.

denocap caption compare [--json F]
"""
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.registry import CaptionModel, load_captioner
from models.train_captioner import load_rgb, read_flickr8k, score
from models.vocab import tokenize

log = logging.getLogger(__name__)
GENERAL_FOLDERS = {"cbsd68": ("denoise", "test", "cbsd68"), "rni15": ("denoise", "real", "rni15")}


def general_photo(shared: Path, key: str) -> np.ndarray:
    """A general_dev key ("cbsd68/101085.png") -> (H, W, 3) float32 in [0, 1]."""
    folder, name = key.split("/")
    path = shared.joinpath(*GENERAL_FOLDERS[folder], name)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def general_keys(shared: Path) -> dict[str, dict]:
    return {k: v for k, v in json.loads((shared / "caption" / "general_dev.json").read_text()).items()
            if not k.startswith("_")}


def general_rates(captions: dict[str, str], keys: dict[str, dict]) -> dict[str, float]:
    """A caption names the subject when one of its words is in `any`; it has a wrong word when one is in `never`."""
    words = {k: set(tokenize(c)) for k, c in captions.items()}
    return {"subject_named": float(np.mean([bool(words[k] & set(keys[k]["any"])) for k in captions])),
            "wrong_word": float(np.mean([bool(words[k] & set(keys[k]["never"])) for k in captions]))}


def on_general(models: dict[str, CaptionModel], shared: Path) -> dict[str, dict]:
    """Each photo captioned by every model in turn (end to end, from pixels), timed."""
    keys = general_keys(shared)
    captions: dict[str, dict[str, str]] = {m: {} for m in models}
    seconds: dict[str, list[float]] = {m: [] for m in models}
    for key in keys:
        pixels = general_photo(shared, key)  # decoded before the clock starts
        for name, model in models.items():
            t = time.perf_counter()
            captions[name][key] = model([pixels])[0]
            seconds[name].append(time.perf_counter() - t)
    return {name: {**general_rates(captions[name], keys), "seconds_per_image": float(np.median(seconds[name])),
                   "photos": len(keys), "captions": captions[name]} for name in models}


def on_flickr8k(models: dict[str, CaptionModel], root: Path, limit: int | None) -> dict[str, dict]:
    """Flickr8k test images encoded once, decoded by every model (all share the same encoder weights)."""
    splits, refs = read_flickr8k(root)
    names = splits["test"][:limit]
    captions: dict[str, dict[str, str]] = {m: {} for m in models}
    encoder = next(iter(models.values())).encoder
    with torch.inference_mode():
        for n in names:
            features = encoder(load_rgb(root / "images" / n)[None])
            for name, model in models.items():
                captions[name][n] = model.captions(model.decoder.memory(features), model.guides(features))[0]
    return {name: {**score(captions[name], refs), "images": len(names)} for name in models}


def compare(shared: Path, weights_dir: Path, threads: int = 1, limit: int | None = None,
            precision: str = "auto", candidate: Path | None = None) -> dict[str, dict]:
    """The decoder alone and grounded from `weights_dir`, and from `candidate` too when given."""
    torch.set_num_threads(threads)
    chosen = {"shipped (decoder alone)": (weights_dir, False), "grounded (ImageNet words)": (weights_dir, True)}
    if candidate:
        chosen |= {"candidate (decoder alone)": (candidate, False), "candidate, grounded": (candidate, True)}
    models = {name: load_captioner("attention", folder, "cpu", grounded=grounded, precision=precision)
              for name, (folder, grounded) in chosen.items()}
    assert all(isinstance(m, CaptionModel) for m in models.values())
    general = on_general(models, shared)  # type: ignore[arg-type]
    flickr = on_flickr8k(models, shared / "caption" / "flickr8k", limit)  # type: ignore[arg-type]
    return {name: {"versions": models[name].version, "general_dev": general[name], "flickr8k_test": flickr[name]}
            for name in models}
