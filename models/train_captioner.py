"""Caption data preparation (tokens, vocabulary, cached encoder features) and decoder training, both resumable.

denocap caption prepare
denocap caption train --hours 2
"""
import json
import logging
import math
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models import checkpoint, training
from models.captioner import Captioner, CaptionerConfig
from models.decode import ALPHA, beam_search
from models.encoder import FEATURE_DIM, GRID, INPUT, Encoder
from models.vocab import Vocabulary, tokenize

log = logging.getLogger(__name__)
SPLITS = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}


def read_flickr8k(root: Path) -> tuple[dict[str, list[str]], dict[str, list[list[str]]]]:
    """Returns the split -> image names and image name -> tokenized reference captions."""
    refs: dict[str, list[list[str]]] = {}
    for line in (root / "Flickr8k.token.txt").read_text().splitlines():
        if "\t" in line:
            key, text = line.split("\t", 1)
            refs.setdefault(key.split("#")[0], []).append(tokenize(text))
    splits = {s: [n for n in (root / f).read_text().split() if n in refs] for s, f in SPLITS.items()}
    return splits, refs


def prepare(root: Path, out: Path, batch: int = 32, threads: int = 1) -> None:
    """Writes out/vocab.json, out/captions.json, out/features.f16 (N, 49, 1280) memmap and out/names.json.
    Feature extraction resumes from out/features.done."""
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    splits, refs = read_flickr8k(root)
    vocab = Vocabulary.build(c for n in splits["train"] for c in refs[n])
    vocab.save(out / "vocab.json")
    names = [n for s in ("train", "dev", "test") for n in splits[s]]
    done_file = out / "features.done"
    if (out / "captions.json").exists() and stale(out):
        done_file.unlink(missing_ok=True)  # features of another encoder input: made again, not resumed
    (out / "names.json").write_text(json.dumps(names))
    (out / "captions.json").write_text(json.dumps({"splits": splits, "refs": {n: refs[n] for n in names},
                                                   "encoder": INPUT}))
    feats = np.lib.format.open_memmap(out / "features.npy", mode="r+" if (out / "features.npy").exists() else "w+",
                                      dtype=np.float16, shape=(len(names), GRID, FEATURE_DIM))
    done = int(done_file.read_text()) if done_file.exists() else 0
    encoder = Encoder()
    t0 = time.monotonic()
    for start in range(done, len(names), batch):
        chunk = names[start:start + batch]
        images = torch.stack([load_rgb(root / "images" / n) for n in chunk])
        with torch.inference_mode():
            feats[start:start + len(chunk)] = encoder(images).numpy().astype(np.float16)
        feats.flush()
        done_file.write_text(str(start + len(chunk)))
        rate = (start + len(chunk) - done) / (time.monotonic() - t0)
        log.info("features %d/%d  %.1f images/s", start + len(chunk), len(names), rate)
    log.info("vocabulary %d words, %d images", len(vocab), len(names))


def load_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0


def stale(prepared: Path) -> str:
    """Why a prepared folder's features are not those of today's encoder input; empty when they are."""
    if not (prepared / "captions.json").is_file():
        return f"{prepared} is not a prepared folder (no captions.json): run denocap caption prepare"
    made = json.loads((prepared / "captions.json").read_text()).get("encoder", "not recorded")
    return "" if made == INPUT else (f"{prepared} holds features of another encoder input ({made}; now {INPUT}): "
                                     "run denocap caption prepare again")


class CaptionData:
    """Cached features and encoded captions of one prepared folder."""

    def __init__(self, prepared: Path, max_len: int) -> None:
        meta = json.loads((prepared / "captions.json").read_text())
        if meta.get("encoder") != INPUT:
            raise ValueError(stale(prepared))
        self.vocab = Vocabulary.load(prepared / "vocab.json")
        self.splits: dict[str, list[str]] = meta["splits"]
        self.refs: dict[str, list[list[str]]] = meta["refs"]
        names = json.loads((prepared / "names.json").read_text())
        self.row = {n: i for i, n in enumerate(names)}
        self.features = np.load(prepared / "features.npy", mmap_mode="r")
        self.max_len = max_len

    def features_of(self, names: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.features[self.row[n]] for n in names]).astype(np.float32))

    def tokens_of(self, captions: list[list[str]]) -> torch.Tensor:
        ids = torch.zeros(len(captions), self.max_len, dtype=torch.long)
        for i, c in enumerate(captions):
            enc = self.vocab.encode(c, self.max_len)
            ids[i, :len(enc)] = torch.tensor(enc)
        return ids


def caption_names(model: Captioner, data: CaptionData, names: list[str], beam: int,
                  alpha: float = ALPHA) -> dict[str, str]:
    model.eval()
    out = {}
    for n in names:
        memory = model.memory(data.features_of([n]).to(next(model.parameters()).device))
        v = data.vocab
        out[n] = v.decode(beam_search(model, memory, v.bos, v.eos, beam=beam, alpha=alpha,
                                      forbid=(v.pad, v.bos, v.unk)))
    model.train()
    return out


def score(captions: dict[str, str], refs: dict[str, list[list[str]]]) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D and ROUGE-L from pycocoevalcap (inputs already tokenized, so no Java)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    gts = {n: [" ".join(r) for r in refs[n]] for n in captions}
    res = {n: [c or "a"] for n, c in captions.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {**{f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}, "CIDEr": float(cider), "ROUGE-L": float(rouge)}


def train(prepared: Path, run_dir: Path, export: Path, hours: float = 1.0, epochs: int = 40, batch: int = 64,
          lr: float = 4e-4, threads: int = 1, val_images: int = 250, config: CaptionerConfig | None = None,
          seed: int = 0, exclude: frozenset[str] = frozenset()) -> float:
    """One epoch = every training image once with one of its captions at random (but those in `exclude`). Keeps
    the best dev CIDEr."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = CaptionData(prepared, (config or CaptionerConfig(vocab_size=1)).max_len)
    last = run_dir / "last.pt"
    state = training.saved(last)
    config = CaptionerConfig(**state["config"]) if state else (config or CaptionerConfig(vocab_size=len(data.vocab)))
    model = Captioner(config).to(device)
    run = training.Run(last, "epoch", model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01))
    if run.resume(state):
        log.info("resumed after epoch %d (best dev CIDEr %.3f)", run.done, run.best)
    train_names = [n for n in data.splits["train"] if n not in exclude]
    dev_names = data.splits["dev"][:val_images]
    steps_per_epoch = math.ceil(len(train_names) / batch)
    rng = np.random.default_rng(seed + run.done)
    for epoch in run.rounds(epochs, hours):
        order = rng.permutation(len(train_names))
        t0, total = time.monotonic(), 0.0
        for i in range(steps_per_epoch):
            names = [train_names[j] for j in order[i * batch:(i + 1) * batch]]
            tokens = data.tokens_of([data.refs[n][rng.integers(len(data.refs[n]))] for n in names]).to(device)
            logits = model(model.memory(data.features_of(names).to(device)), tokens[:, :-1])
            loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], ignore_index=data.vocab.pad,
                                   label_smoothing=0.1)
            step = epoch * steps_per_epoch + i
            warmup = min(1.0, (step + 1) / 300)
            run.step(loss, lr * warmup * 0.5 * (1 + math.cos(math.pi * step / (epochs * steps_per_epoch))), clip=1.0)
            total += loss.item()
        scores = score(caption_names(model, data, dev_names, beam=1), data.refs)
        run.keep(epoch + 1, scores["CIDEr"], partial(export_weights, model, data.vocab, export, epoch + 1, scores))
        log.info("epoch %d  %.0f captions/s  loss %.3f  dev BLEU-4 %.3f CIDEr %.3f  best CIDEr %.3f", epoch + 1,
                 len(train_names) / (time.monotonic() - t0), total / steps_per_epoch, scores["BLEU-4"],
                 scores["CIDEr"], run.best)
    return run.best


def export_weights(model: Captioner, vocab: Vocabulary, path: Path, epoch: int, scores: dict[str, float]) -> None:
    checkpoint.save_atomic({"arch": "attention", "config": asdict(model.config), "state": checkpoint.half_state(model),
                            "vocab": vocab.words, "epoch": epoch, "dev_scores": scores}, path)
