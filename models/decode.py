"""Beam search over the captioner's step(), with length normalization, no repeated words and an optional
constraints: the caption must contain one of a set of words, and may have to begin with given words."""
from dataclasses import dataclass

import torch

from models.captioner import Captioner

BEAM, ALPHA = 1, 0.5  # chosen on the Flickr8k dev split (denocap caption eval --tune): after
# self-critical training greedy decoding scored best on every metric; ALPHA is for a larger --beam


@dataclass(frozen=True)
class Ask:
    """What one image's search is asked: its beam width, words it may not say, words one of which it must say, and
    the words it begins with."""
    beam: int = BEAM
    forbid: tuple[int, ...] = ()
    must: tuple[int, ...] = ()
    start: tuple[int, ...] = ()


def beam_search(model: Captioner, memory: torch.Tensor, bos: int, eos: int, beam: int = BEAM,
                max_len: int | None = None, alpha: float = ALPHA, forbid: tuple[int, ...] = (),
                must: tuple[int, ...] = (), start: tuple[int, ...] = ()) -> list[int]:
    """memory: (1, grid, d) for one image. Returns the best token ids (without <bos>/<eos>); see beam_searches."""
    assert memory.shape[0] == 1, "one image: beam_searches takes several"
    return beam_searches(model, memory, bos, eos, [Ask(beam, forbid, must, start)], max_len, alpha)[0]


@torch.inference_mode()
def beam_searches(model: Captioner, memory: torch.Tensor, bos: int, eos: int, asks: list[Ask],
                  max_len: int | None = None, alpha: float = ALPHA) -> list[list[int]]:
    """memory: (N, grid, d), one row and one Ask per image. Returns each image's best token ids (without
    <bos>/<eos>). The images' hypotheses go through the decoder together, one step for all (a worker's two
    captions took 0.105 s an item this way, 0.140 one after the other: docs/results/profile_item.md); each image's
    search is its own.

    Hypotheses are ranked by log p / len^alpha (Wu et al., 2016); a word already in a hypothesis
    is not allowed again unless it is a short function word, which stops 'a man a man a man' loops.
    With `must`, a two-state automaton (no word of `must` yet / one seen) keeps `beam` hypotheses per state and
    only the second state may end (Anderson et al., "Guided Open Vocabulary Image Captioning with Constrained
    Beam Search", 2017): the caption contains a word of `must` whenever one fits in max_len - 1 tokens. Such a
    search goes on while a live hypothesis scores better than the best ended one: its first ended hypotheses are
    often a forced word and <eos> ("swing"), while "a little girl is playing on a swing" is still being written.
    (Without `must`, the search ends at its first ended hypotheses, as tuned; going on there cost a third more
    time for +0.003 dev CIDEr-D.)
    With `start`, the caption begins with those tokens.
    """
    assert memory.shape[0] == len(asks), "one Ask per image"
    max_len = min(max_len or model.config.max_len, model.config.max_len)
    device, vocab = memory.device, model.config.vocab_size
    owners = list(range(len(asks)))  # the image of each hypothesis; an image's hypotheses are consecutive rows
    tokens = torch.full((len(asks), 1), bos, dtype=torch.long, device=device)
    scores = torch.zeros(len(asks), device=device)
    met = torch.tensor([not a.must for a in asks], device=device)  # (B,) a word of `must` is in the hypothesis
    wanted = torch.zeros(len(asks), vocab, dtype=torch.bool, device=device)  # (N, V)
    banned = torch.zeros(len(asks), vocab, dtype=torch.bool, device=device)
    for i, a in enumerate(asks):
        wanted[i, list(a.must)] = True
        banned[i, [w for w in a.forbid if w not in a.must]] = True
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in asks]
    fallback: list[list[int]] = [[] for _ in asks]
    cache = model.start(memory)
    for t in range(1, max_len):
        owner = torch.tensor(owners, device=device)
        spans = {i: slice(owners.index(i), owners.index(i) + owners.count(i)) for i in dict.fromkeys(owners)}
        logp = _block_repeats(model.step(cache, tokens[:, -1]), tokens).masked_fill_(banned[owner], float("-inf"))
        for i, rows in spans.items():
            if t <= len(asks[i].start):
                logp[rows].masked_fill_(torch.arange(vocab, device=device) != asks[i].start[t - 1], float("-inf"))
        logp[~met, eos] = float("-inf")  # only a hypothesis that meets the constraint may end
        if t == 1:
            logp[:, eos] = float("-inf")  # a caption has at least one word
        if t == max_len - 1:
            keep = torch.full_like(logp, float("-inf"))
            keep[:, eos] = logp[:, eos]
            logp = keep
        total = scores[:, None] + logp
        reached = met[:, None] | wanted[owner]  # (B, V) the automaton's state after each word
        kept: list[tuple[int, int, float, bool, int]] = []  # row, word, score, state, image
        for i, rows in spans.items():
            a = asks[i]
            mine: list[tuple[int, int, float, bool]] = []
            for state in (True, False) if a.must else (True,):
                mine += _best(total[rows].masked_fill(reached[rows] != state, float("-inf")), tokens[rows], eos,
                              a.beam, alpha, finished[i], state)
            best_live = max((k[2] / t ** alpha for k in mine), default=float("-inf"))
            if not mine or len(finished[i]) >= a.beam and (not a.must or max(finished[i])[0] >= best_live):
                fallback[i] = tokens[rows.start, 1:].tolist()
                continue
            kept += [(rows.start + r, w, sc, st, i) for r, w, sc, st in mine]
        if not kept:
            break
        chosen = torch.tensor([k[0] for k in kept], device=device)
        tokens = torch.cat([tokens[chosen], torch.tensor([[k[1]] for k in kept], device=device)], dim=1)
        scores = torch.tensor([k[2] for k in kept], device=device)
        met = torch.tensor([k[3] for k in kept], device=device)
        owners = [k[4] for k in kept]
        cache.reorder(chosen)
    return [max(f)[1] if f else fb for f, fb in zip(finished, fallback, strict=True)]


def _best(total: torch.Tensor, tokens: torch.Tensor, eos: int, beam: int, alpha: float,
          finished: list[tuple[float, list[int]]], state: bool) -> list[tuple[int, int, float, bool]]:
    """The `beam` best continuations of one automaton state; those that end go to `finished`."""
    top = total.flatten().topk(min(beam * 2, total.numel()))
    rows = torch.div(top.indices, total.shape[1], rounding_mode="floor")
    kept = []
    for score, row, word in zip(top.values.tolist(), rows.tolist(), (top.indices % total.shape[1]).tolist()):
        if score == float("-inf"):
            continue
        if word == eos:
            seq = tokens[row].tolist()[1:]
            finished.append((score / max(len(seq), 1) ** alpha, seq))
        elif len(kept) < beam:
            kept.append((row, word, score, state))
    return kept


def _block_repeats(logp: torch.Tensor, tokens: torch.Tensor, free: int = 12) -> torch.Tensor:
    """Forbid a word that already occurs in the prefix; ids below `free` (specials and the most
    frequent words: 'a', 'the', 'in', ...) may repeat, but never twice in a row."""
    blocked = logp.clone()
    rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None].expand_as(tokens)
    content = tokens >= free
    blocked[rows[content], tokens[content]] = float("-inf")
    blocked[rows[:, -1], tokens[:, -1]] = float("-inf")
    return blocked
