"""The held-out-object protocol (Hendricks et al., CVPR 2016, "Deep compositional captioning"): a decoder trained
on Flickr8k without any photo whose captions name one of a few objects that ImageNet knows; then, on the test
photos, how well the captions name those objects (F1 per object: a caption names it when it says one of its
forms, a photo shows it when one of its five references does), for that decoder alone and grounded by the
encoder's ImageNet classifier (models.grounding, its levels as shipped, its ruled-out subjects refitted on the
photos kept). The shipped decoder, which saw those photos, is scored in the same run for reference.

denocap caption heldout [--hours 1] [--epochs 20] [--threads 2]
"""
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from models.grounding import Grounding, read_table
from models.registry import CaptionModel, load_captioner
from models.train_captioner import CaptionData, score, train
from models.train_grounding import caption_dev, suppressions, top_words

log = logging.getLogger(__name__)
OBJECTS = {"cat": ("cat", "cats", "kitten", "kittens"), "horse": ("horse", "horses", "pony", "ponies"),
           "bicycle": ("bicycle", "bicycles", "bike", "bikes"), "car": ("car", "cars"),
           "boat": ("boat", "boats", "canoe", "canoes", "kayak", "kayaks", "sailboat", "sailboats"),
           "bird": ("bird", "birds")}


def named(words: set[str]) -> set[str]:
    return {o for o, forms in OBJECTS.items() if words.intersection(forms)}


def f1(captions: dict[str, str], refs: dict[str, list[list[str]]]) -> dict[str, dict[str, float]]:
    """Per object: precision, recall and F1 of captions naming it, against photos whose references name it."""
    said = {n: named(set(c.split())) for n, c in captions.items()}
    shown = {n: named({w for r in refs[n] for w in r}) for n in captions}
    out = {}
    for o in OBJECTS:
        tp = sum(o in said[n] and o in shown[n] for n in captions)
        precision = tp / max(1, sum(o in said[n] for n in captions))
        recall = tp / max(1, sum(o in shown[n] for n in captions))
        out[o] = {"photos": sum(o in shown[n] for n in captions), "precision": precision, "recall": recall,
                  "f1": 2 * precision * recall / (precision + recall) if tp else 0.0}
    return out


def protocol(prepared: Path, weights_dir: Path, run_dir: Path, hours: float = 1.0, epochs: int = 20,
             threads: int = 2) -> dict:
    """Trains (resumably) into run_dir, then scores the three captioners on the Flickr8k test split."""
    torch.set_num_threads(threads)
    data = CaptionData(prepared, max_len=22)
    held = frozenset(n for n in data.splits["train"] if named({w for r in data.refs[n] for w in r}))
    log.info("%d of %d training photos name a held-out object", len(held), len(data.splits["train"]))
    train(prepared, run_dir, run_dir / "captioner.pt", hours, epochs, threads=threads, exclude=held)
    shipped = Grounding.load(weights_dir / "grounding.json")
    plain = load_captioner("attention", run_dir, "cpu", grounded=False)
    assert isinstance(plain, CaptionModel)
    plain.table = read_table()
    kept = [n for n in data.splits["train"] if n not in held]
    rules = suppressions(top_words(plain, data, kept), [data.refs[n] for n in kept], plain.table, shipped.threshold)
    replace(shipped, suppress=rules).save(run_dir / "grounding.json")  # the probe and levels as shipped
    models = {"without the held-out photos, decoder alone": plain,
              "without the held-out photos, grounded": load_captioner("attention", run_dir, "cpu"),
              "shipped (trained with them), grounded": load_captioner("attention", weights_dir, "cpu")}
    test = data.splits["test"]
    out: dict = {"held_out_training_photos": len(held), "objects": OBJECTS, "epochs": epochs}
    for name, model in models.items():
        assert isinstance(model, CaptionModel)
        captions = caption_dev(model, data, test)
        out[name] = {"f1": f1(captions, data.refs), "scores": score(captions, data.refs)}
        log.info("%s: %s", name, json.dumps({o: round(v["f1"], 3) for o, v in out[name]["f1"].items()}))
    return out
