"""Beam search over the captioner's step(), with length normalization and no repeated words."""
import torch

from models.captioner import Captioner

BEAM, ALPHA = 1, 0.5  # chosen on the Flickr8k dev split (python -m models.eval_captioner --tune): after
# self-critical training greedy decoding scored best on every metric; ALPHA is for a larger --beam


@torch.inference_mode()
def beam_search(model: Captioner, memory: torch.Tensor, bos: int, eos: int, beam: int = BEAM,
                max_len: int | None = None, alpha: float = ALPHA, forbid: tuple[int, ...] = ()) -> list[int]:
    """memory: (1, grid, d) for one image. Returns the best token ids (without <bos>/<eos>).

    Hypotheses are ranked by log p / len^alpha (Wu et al., 2016); a word already in a hypothesis
    is not allowed again unless it is a short function word, which stops 'a man a man a man' loops.
    """
    assert memory.shape[0] == 1, "one image at a time"
    max_len = min(max_len or model.config.max_len, model.config.max_len)
    tokens = torch.full((1, 1), bos, dtype=torch.long, device=memory.device)
    scores = torch.zeros(1, device=memory.device)
    finished: list[tuple[float, list[int]]] = []
    cache = model.start(memory)
    for t in range(1, max_len):
        logp = model.step(cache, tokens[:, -1])  # (B, V)
        logp = _block_repeats(logp, tokens)
        logp[:, list(forbid)] = float("-inf")
        if t == 1:
            logp[:, eos] = float("-inf")  # a caption has at least one word
        if t == max_len - 1:
            keep = torch.full_like(logp, float("-inf"))
            keep[:, eos] = logp[:, eos]
            logp = keep
        total = (scores[:, None] + logp).flatten()
        top = total.topk(min(beam * 2, total.numel()))
        vocab = logp.shape[1]
        rows = torch.div(top.indices, vocab, rounding_mode="floor")
        words = top.indices % vocab
        next_tokens, next_scores, kept = [], [], []
        for score, row, word in zip(top.values.tolist(), rows.tolist(), words.tolist()):
            if score == float("-inf"):
                continue
            seq = tokens[row].tolist()[1:]
            if word == eos:
                finished.append((score / max(len(seq), 1) ** alpha, seq))
            elif len(next_tokens) < beam:
                next_tokens.append(tokens[row].tolist() + [word])
                next_scores.append(score)
                kept.append(row)
        if not next_tokens or len(finished) >= beam:
            break
        tokens = torch.tensor(next_tokens, device=memory.device)
        scores = torch.tensor(next_scores, device=memory.device)
        cache.reorder(torch.tensor(kept, device=memory.device))
    return max(finished)[1] if finished else tokens[0, 1:].tolist()


def _block_repeats(logp: torch.Tensor, tokens: torch.Tensor, free: int = 12) -> torch.Tensor:
    """Forbid a word that already occurs in the prefix; ids below `free` (specials and the most
    frequent words: 'a', 'the', 'in', ...) may repeat, but never twice in a row."""
    blocked = logp.clone()
    rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None].expand_as(tokens)
    content = tokens >= free
    blocked[rows[content], tokens[content]] = float("-inf")
    blocked[rows[:, -1], tokens[:, -1]] = float("-inf")
    return blocked
