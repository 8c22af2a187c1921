"""Fit the grounding of captions (models.grounding) on Flickr8k: which habitual subjects a confident ImageNet
word rules out (training split), the person probe (training split and our labels of the CBSD432 photos), the
levels (dev split; the probe's on the labelled photos, guarded by the dev split). No photos of general_dev are used.

denocap caption ground [--threads 1]
"""
import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from models.grounding import GROUPS, Grounding, WordTable, read_table
from models.registry import CaptionModel, load_captioner
from models.train_captioner import CaptionData, load_rgb, score

log = logging.getLogger(__name__)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ABSENT = (0.01, 0.02, 0.05, 0.1, 0.2)
DOMINANT = (0.2, 0.3, 0.4)  # not lower: a kind is never said on a fifth of the probability
PRIOR = 5  # pseudo-photos that do not mention a group: a word seen on few training photos rules groups out
MIN_RATIO = 0.25  # a group mentioned for a word's photos at under this fraction of its rate on all photos: ruled out
TOLERANCE = 0.01  # dev CIDEr-D a lower threshold may cost
NOBODY = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # person probe levels under which people are ruled out
PEOPLE = Path(__file__).with_name("people_cbsd432.tsv")  # ours, by looking at each CBSD432 photo: is a real person
# in it (1) or not (0; statues, paintings and dolls are not people). Flickr8k alone has too few photos without people
# (its photos of mountains have climbers), so a probe trained on it alone sees people everywhere.
L2 = (0.03, 0.1, 0.3, 1.0)  # the probe's weight decay and the weight of a labelled photo against a Flickr8k one, chosen
WEIGHT = (10.0, 30.0, 100.0)  # by cross-validation over the labelled photos
FOLDS = 4


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


def person_probe(flickr: tuple[torch.Tensor, torch.Tensor], labelled: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[tuple[float, ...], list[dict[str, float]], torch.Tensor]:
    """Logistic regression of "a person is in the photo" on max-pooled encoder features (N, 1280), from Flickr8k photos
    (target: the share of their references that mention a person) and labelled photos (0 or 1). L2 and WEIGHT are
    chosen by the ROC AUC of FOLDS-fold cross-validation over the labelled photos, Flickr8k always trained on.
    Returns the weights and the bias on unstandardized features, a row per choice, and the chosen one's
    cross-validated probabilities of the labelled photos."""
    x, y = labelled
    folds = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).chunk(FOLDS)
    rows, held_out = [], []
    for l2 in L2:
        for weight in WEIGHT:
            p = torch.zeros(len(y))
            for fold in folds:
                keep = torch.ones(len(y), dtype=torch.bool)
                keep[fold] = False
                w, b = _logistic(flickr, (x[keep], y[keep]), weight, l2)
                p[fold] = torch.sigmoid(x[fold] @ w + b)
            rows.append({"probe_l2": l2, "probe_weight": weight, "cross_validated_auc": _auc(p, y > 0.5)})
            held_out.append(p)
            log.info("person probe l2 %.2f weight %.0f: AUC %.3f", l2, weight, rows[-1]["cross_validated_auc"])
    best = max(range(len(rows)), key=lambda i: rows[i]["cross_validated_auc"])
    w, b = _logistic(flickr, labelled, rows[best]["probe_weight"], rows[best]["probe_l2"])
    return (*w.tolist(), float(b)), rows, held_out[best]


def nobody_levels(p: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
    """Per level of NOBODY, from the cross-validated probabilities p of labelled photos y: the share of photos with
    a person whose people would be ruled out, of those without whose people would, and the share decided right."""
    person = y > 0.5
    return [{"nobody": level, "people_photos_ruled_out": float((p[person] < level).float().mean()),
             "photos_without_ruled_out": float((p[~person] < level).float().mean()),
             "labelled_accuracy": float(((p < level) == ~person).float().mean())} for level in NOBODY]


def _logistic(flickr: tuple[torch.Tensor, torch.Tensor], labelled: tuple[torch.Tensor, torch.Tensor], weight: float,
              l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.cat([flickr[0], labelled[0]]), torch.cat([flickr[1], labelled[1]])
    sample = torch.cat([torch.ones(len(flickr[1])), torch.full((len(labelled[1]),), weight)])
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        out = (F.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none") * sample).sum() / sample.sum()
        out = out + l2 * (w * w).sum()
        out.backward()
        return out
    opt.step(loss)
    with torch.no_grad():
        return w / std, b - (w * mean / std).sum()


def _auc(p: torch.Tensor, y: torch.Tensor) -> float:
    return float((p[y][:, None] > p[~y][None]).float().mean())


def people_data(model: CaptionModel, data: CaptionData, names: list[str], photos: Path
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Max-pooled features (as Grounding.people pools them) and person targets of the Flickr8k photos `names` and of
    the labelled photos in `photos`."""
    said = [[bool(set(c).intersection(GROUPS["person"])) for c in data.refs[n]] for n in names]
    flickr = (torch.cat([data.features_of(names[i:i + 256]).amax(1) for i in range(0, len(names), 256)]),
              torch.tensor([sum(s) / len(s) for s in said]))
    labels = [line.split("\t")[:2] for line in PEOPLE.read_text().splitlines()[1:]]
    with torch.inference_mode():
        x = torch.cat([model.encoder(load_rgb(photos / name)[None]).amax(1) for name, _ in labels])
    return flickr, (x, torch.tensor([float(label) for _, label in labels]))


def caption_dev(model: CaptionModel, data: CaptionData, names: list[str]) -> dict[str, str]:
    out = {}
    with torch.inference_mode():
        for n in names:
            features = data.features_of([n])
            out[n] = model.captions(model.decoder.memory(features), model.guides(features))[0]
    return out


def fit(prepared: Path, weights_dir: Path, out: Path, photos: Path, threads: int = 1) -> list[dict[str, float]]:
    """Writes out (grounding.json). The threshold: the lowest of THRESHOLDS whose dev CIDEr-D is within
    TOLERANCE of the best (a lower threshold guides more general photos, Flickr8k dev prices it); then, with it,
    the highest of ABSENT (subjects whose words are less likely are ruled out) still within TOLERANCE of the best;
    then the lowest of DOMINANT (an unsure photo's kind outweighing every subject's evidence is said) within it;
    then the person probe (photos: the CBSD432 folder) and the level of NOBODY that decides the most labelled
    photos right (cross-validated: the probe is for photos unlike Flickr8k's, whose dev split is 77% people), among
    those whose dev CIDEr-D is within TOLERANCE of the grounding's without the probe; last, the lowest of THRESHOLDS
    under the threshold to guide the photos the probe sees no one in (`alone`) within TOLERANCE of that."""
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
    flickr, labelled = people_data(model, data, train, photos)
    probe, probe_rows, held_out = person_probe(flickr, labelled)
    rows += probe_rows
    model.grounding = chosen
    without = score(caption_dev(model, data, dev), data.refs)["CIDEr"]
    levels = nobody_levels(held_out, labelled[1])
    rows += levels
    for level in sorted(levels, key=lambda r: -r["labelled_accuracy"]):
        candidate = sweep(model, data, replace(chosen, probe=probe), "nobody", (level["nobody"],), without, rows)
        if candidate.nobody:
            chosen = candidate
            break
    if chosen.nobody:
        model.grounding = chosen
        with_probe = score(caption_dev(model, data, dev), data.refs)["CIDEr"]
        lower = tuple(reversed([t for t in THRESHOLDS if t < chosen.threshold]))
        chosen = sweep(model, data, chosen, "alone", lower, with_probe, rows)
    chosen.save(out)
    log.info("threshold %.2f absent %.2f dominant %.2f nobody %.2f alone %s written to %s", chosen.threshold,
             chosen.absent, chosen.dominant, chosen.nobody, chosen.alone, out)
    return rows


def sweep(model: CaptionModel, data: CaptionData, base: Grounding, field: str, levels: tuple[float, ...],
          best: float, rows: list[dict[str, float]]) -> Grounding:
    """base with `field` at the last of `levels` whose dev CIDEr-D is within TOLERANCE of `best` (unchanged when
    none is); every level's scores are appended to rows."""
    chosen = base
    for level in levels:
        model.grounding = replace(base, **{field: level})
        scores = score(caption_dev(model, data, data.splits["dev"]), data.refs)
        rows.append({"threshold": base.threshold, "absent": base.absent, "dominant": base.dominant, field: level,
                     **scores})
        log.info("%s %.2f  BLEU-4 %.3f CIDEr-D %.3f", field, level, scores["BLEU-4"], scores["CIDEr"])
        chosen = model.grounding if scores["CIDEr"] >= best - TOLERANCE else chosen
    return chosen
