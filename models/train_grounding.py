"""Fit the grounding of captions (models.grounding) on Flickr8k: which habitual subjects a confident ImageNet
word rules out (training split), and the confidence threshold (dev split). No general photos are used.

denocap caption ground [--threads 1]
"""
import logging
from dataclasses import replace
from pathlib import Path

import torch

from models.grounding import GROUPS, Grounding, WordTable, read_table
from models.registry import CaptionModel, load_captioner
from models.train_captioner import CaptionData, score

log = logging.getLogger(__name__)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ABSENT = (0.01, 0.02, 0.05, 0.1, 0.2)
DOMINANT = (0.2, 0.3, 0.4)  # not lower: a kind is never said on a fifth of the probability
PRIOR = 5  # pseudo-photos that do not mention a group: a word seen on few training photos rules groups out
MIN_RATIO = 0.25  # a group mentioned for a word's photos at under this fraction of its rate on all photos: ruled out
TOLERANCE = 0.01  # dev CIDEr-D a lower threshold may cost


def top_words(model: CaptionModel, data: CaptionData, names: list[str], batch: int = 256) -> list[tuple[str, float]]:
    assert model.table is not None
    out = []
    with torch.inference_mode():
        for i in range(0, len(names), batch):
            probs = model.encoder.classify(data.features_of(names[i:i + batch]))
            out += model.table.top(model.table.probabilities(probs))
    return out


def suppressions(tops: list[tuple[str, float]], refs: list[list[list[str]]], table: WordTable,
                 threshold: float) -> dict[str, tuple[str, ...]]:
    """For every word of the table: the groups that the references of training photos with that confident word
    mention at under MIN_RATIO times the group's rate over all training photos (counting PRIOR more photos that
    mention nothing, so a word never or rarely confident on Flickr8k rules them all out)."""
    seen = {w: 0 for w in table.words}
    mentioned = {w: dict.fromkeys(GROUPS, 0) for w in table.words}
    overall = dict.fromkeys(GROUPS, 0)
    for (word, p), captions in zip(tops, refs, strict=True):
        said = {w for c in captions for w in c}
        hits = {g: bool(said.intersection(members)) for g, members in GROUPS.items()}
        for g in GROUPS:
            overall[g] += hits[g]
            if p >= threshold:
                mentioned[word][g] += hits[g]
        seen[word] += p >= threshold
    rate = {g: n / len(tops) for g, n in overall.items()}
    return {w: tuple(g for g in GROUPS if mentioned[w][g] / (seen[w] + PRIOR) < MIN_RATIO * rate[g])
            for w in table.words}


def caption_dev(model: CaptionModel, data: CaptionData, names: list[str]) -> dict[str, str]:
    out = {}
    with torch.inference_mode():
        for n in names:
            features = data.features_of([n])
            out[n] = model.caption(model.decoder.memory(features), model.guides(features)[0])
    return out


def fit(prepared: Path, weights_dir: Path, out: Path, threads: int = 1) -> list[dict[str, float]]:
    """Writes out (grounding.json). The threshold: the lowest of THRESHOLDS whose dev CIDEr-D is within
    TOLERANCE of the best (a lower threshold guides more general photos, Flickr8k dev prices it); then, with it,
    the highest of ABSENT (subjects whose words are less likely are ruled out) still within TOLERANCE of the best;
    then the lowest of DOMINANT (an unsure photo's kind outweighing every subject's evidence is said) within it."""
    torch.set_num_threads(threads)
    data = CaptionData(prepared, max_len=22)
    model = load_captioner("attention", weights_dir, "cpu", grounded=False)
    assert isinstance(model, CaptionModel)
    model.table = read_table()
    train, dev = data.splits["train"], data.splits["dev"]
    train_tops = top_words(model, data, train)
    rows, fits = [], {}
    for threshold in THRESHOLDS:
        fits[threshold] = Grounding(threshold, suppressions(train_tops, [data.refs[n] for n in train], model.table,
                                                            threshold))
        model.grounding = fits[threshold]
        scores = score(caption_dev(model, data, dev), data.refs)
        guided = sum(p >= threshold for _, p in top_words(model, data, dev))
        rows.append({"threshold": threshold, "dev_images_guided": guided, **scores})
        log.info("threshold %.2f  guided %d  BLEU-4 %.3f CIDEr-D %.3f", threshold, guided, scores["BLEU-4"],
                 scores["CIDEr"])
    best = max(r["CIDEr"] for r in rows)
    chosen = fits[min(r["threshold"] for r in rows if r["CIDEr"] >= best - TOLERANCE)]
    chosen = sweep(model, data, chosen, "absent", ABSENT, best, rows)
    chosen = sweep(model, data, chosen, "dominant", tuple(reversed(DOMINANT)), best, rows)
    chosen.save(out)
    log.info("threshold %.2f absent %.2f dominant %.2f written to %s", chosen.threshold, chosen.absent,
             chosen.dominant, out)
    return rows


def sweep(model: CaptionModel, data: CaptionData, base: Grounding, field: str, levels: tuple[float, ...],
          best: float, rows: list[dict[str, float]]) -> Grounding:
    """base with `field` at the last of `levels` whose dev CIDEr-D is within TOLERANCE of `best` (unchanged when
    none is); every level's scores are appended to rows."""
    chosen = base
    for level in levels:
        model.grounding = replace(base, **{field: level})
        scores = score(caption_dev(model, data, data.splits["dev"]), data.refs)
        rows.append({"threshold": base.threshold, "absent": base.absent, field: level, **scores})
        log.info("%s %.2f  BLEU-4 %.3f CIDEr-D %.3f", field, level, scores["BLEU-4"], scores["CIDEr"])
        chosen = model.grounding if scores["CIDEr"] >= best - TOLERANCE else chosen
    return chosen
