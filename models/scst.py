"""Self-critical fine-tuning of the caption decoder for CIDEr-D (resumable).

Rennie et al., "Self-critical Sequence Training for Image Captioning", 2017, with the baseline of
Luo, "A Better Variant of Self-Critical Sequence Training", 2020: K captions are sampled per image and each
one's reward is compared with the mean reward of the other K-1.

denocap caption train --scst --hours 2
"""
import logging
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_refs, cook_test

from models import checkpoint, training
from models.captioner import Captioner, CaptionerConfig
from models.train_captioner import CaptionData, caption_names, export_weights, score
from models.vocab import EOS, Vocabulary

log = logging.getLogger(__name__)
TOP_K = 5
ROUND_STEPS = 50  # steps between dev evaluations and checkpoints


class CorpusCider(CiderScorer):
    """pycocoevalcap's CIDEr-D, with document frequencies from all training references instead of the batch's
    (as SCST uses it). The end token is scored as a word, so a caption cut off mid-phrase earns less."""

    def __init__(self, corpus: list[list[str]]) -> None:
        super().__init__()
        self.crefs = [cook_refs([f"{r} {EOS}" for r in refs]) for refs in corpus]
        self.compute_doc_freq()
        self._log_corpus = float(np.log(len(corpus)))

    @property
    def ref_len(self) -> float:
        return self._log_corpus

    @ref_len.setter
    def ref_len(self, value: float | None) -> None:
        """compute_cider() sets this from the batch size; the corpus size is kept instead."""

    def rewards(self, captions: list[str], refs: list[list[str]]) -> np.ndarray:
        self.crefs = [cook_refs([f"{r} {EOS}" for r in rs]) for rs in refs]
        self.ctest = [cook_test(f"{c} {EOS}") for c in captions]
        return np.asarray(self.compute_cider())


@torch.no_grad()
def sample(model: Captioner, memory: torch.Tensor, vocab: Vocabulary, top_k: int = TOP_K) -> torch.Tensor:
    """One caption sampled per memory row from the `top_k` likeliest words at each step: (N, T) ids starting with
    <bos>, <pad> after <eos>. Sampling the whole vocabulary draws a rare word into most captions (the decoder was
    trained with label smoothing), and pushing those down made the first runs' greedy captions degenerate."""
    cache = model.start(memory)
    tokens = torch.full((len(memory), 1), vocab.bos, dtype=torch.long, device=memory.device)
    done = torch.zeros(len(memory), dtype=torch.bool, device=memory.device)
    for t in range(1, model.config.max_len):
        logp = model.step(cache, tokens[:, -1])
        logp[:, [vocab.pad, vocab.bos, vocab.unk]] = float("-inf")
        if t == 1:
            logp[:, vocab.eos] = float("-inf")
        kth = logp.topk(top_k, dim=-1).values[:, -1:]
        nxt = torch.multinomial(logp.masked_fill(logp < kth, float("-inf")).exp(), 1)[:, 0]
        if t == model.config.max_len - 1:
            nxt[:] = vocab.eos
        nxt[done] = vocab.pad
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == vocab.eos
        if done.all():
            break
    return tokens


def policy_loss(model: Captioner, memory: torch.Tensor, tokens: torch.Tensor, advantage: torch.Tensor,
                pad: int) -> torch.Tensor:
    """REINFORCE: -(reward - baseline) * log p(caption), the caption's <eos> included."""
    logp = torch.log_softmax(model(memory, tokens[:, :-1]), dim=-1)
    target = tokens[:, 1:]
    token_logp = logp.gather(2, target[..., None])[..., 0] * (target != pad)
    return -(advantage * token_logp.sum(1)).mean()


def finetune(prepared: Path, init: Path, run_dir: Path, export: Path, hours: float = 1.0, rounds: int = 100,
             batch: int = 32, samples: int = 5, lr: float = 1e-5, threads: int = 1, val_images: int = 250,
             seed: int = 0) -> float:
    """Fine-tune `init` (shipped weights) by sampled CIDEr-D; export when greedy dev CIDEr-D beats `init`'s.
    A round is ROUND_STEPS steps (fewer for a small training set), then a dev evaluation and a checkpoint.
    Dropout is off: the sampled policy is the deployed network."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    last = run_dir / "scst_last.pt"
    state = training.saved(last)
    shipped = checkpoint.load(init)
    config = CaptionerConfig(**(state or shipped)["config"])
    data = CaptionData(prepared, config.max_len)
    assert data.vocab.words == shipped["vocab"], f"{init} was trained with another vocabulary"
    model = Captioner(config).to(device).eval()
    model.load_state_dict({k: v.float() for k, v in shipped["state"].items()})
    run = training.Run(last, "round", model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0),
                       shipped["dev_scores"].get("CIDEr", -math.inf))
    if run.resume(state):
        log.info("resumed after round %d (best dev CIDEr %.3f)", run.done, run.best)
    else:
        log.info("starting from %s (dev CIDEr %.3f)", init, run.best)
    train_names, dev_names = data.splits["train"], data.splits["dev"][:val_images]
    cider = CorpusCider([[" ".join(r) for r in data.refs[n]] for n in train_names])
    batch = min(batch, len(train_names))
    round_steps = min(ROUND_STEPS, math.ceil(len(train_names) / batch))
    for done in run.rounds(rounds, hours):
        rng = np.random.default_rng(seed + done)  # a round's images depend on its number only: resumable
        t0, rewards = time.monotonic(), []
        for _ in range(round_steps):
            names = [train_names[j] for j in rng.choice(len(train_names), batch, replace=False)]
            memory = model.memory(data.features_of(names).to(device)).repeat_interleave(samples, dim=0)
            tokens = sample(model, memory.detach(), data.vocab)
            captions = [data.vocab.decode(row.tolist()) for row in tokens]
            refs = [[" ".join(r) for r in data.refs[n]] for n in names for _ in range(samples)]
            reward = torch.from_numpy(cider.rewards(captions, refs)).float().view(-1, samples)
            baseline = (reward.sum(1, keepdim=True) - reward) / (samples - 1)
            loss = policy_loss(model, memory, tokens, (reward - baseline).flatten().to(device), data.vocab.pad)
            run.step(loss, clip=1.0)
            rewards.append(reward.mean().item())
        scores = score(caption_names(model, data, dev_names, beam=1), data.refs)
        model.eval()  # caption_names() leaves the model in training mode
        run.keep(done + 1, scores["CIDEr"], partial(export_weights, model, data.vocab, export, done + 1, scores))
        log.info("round %d  %.1f images/s  train CIDEr-D of samples %.3f  dev BLEU-4 %.3f CIDEr %.3f  best CIDEr %.3f",
                 done + 1, round_steps * batch / (time.monotonic() - t0), float(np.mean(rewards)), scores["BLEU-4"],
                 scores["CIDEr"], run.best)
    return run.best
