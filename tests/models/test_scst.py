"""Self-critical fine-tuning: the reward is pycocoevalcap's CIDEr-D, sampling respects the caption format, and a
positive advantage makes the rewarded caption more likely."""
import numpy as np
import torch
from pycocoevalcap.cider.cider import Cider

from models.scst import CorpusCider, policy_loss, sample
from tests.tiny import tiny_captioner

REFS = [["a dog runs on the grass", "a brown dog runs"], ["a cat sits on a sofa", "the cat sits"],
        ["two men ride bikes", "men on bicycles"]]


def test_reward_equals_pycocoevalcap_cider_when_the_corpus_is_the_batch() -> None:
    captions = ["a dog runs", "a cat on the grass", "two men ride bikes"]
    ours = CorpusCider(REFS).rewards(captions, REFS)
    gts = {i: [f"{r} <eos>" for r in refs] for i, refs in enumerate(REFS)}
    res = {i: [f"{c} <eos>"] for i, c in enumerate(captions)}
    _, theirs = Cider().compute_score(gts, res)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_reward_uses_corpus_frequencies_and_prefers_the_reference() -> None:
    cider = CorpusCider(REFS)
    batch = [REFS[0]]  # one image: a batch-level idf would make every n-gram worthless
    good, bad, cut = cider.rewards(["a dog runs on the grass", "two men ride bikes", "a dog runs on the"], batch * 3)
    assert good > cut > bad and good > 1.0


def test_sampled_captions_are_well_formed() -> None:
    model, vocab = tiny_captioner()
    torch.manual_seed(0)
    tokens = sample(model, model.memory(torch.randn(64, 49, 1280)), vocab)
    assert (tokens[:, 0] == vocab.bos).all() and tokens.shape[1] <= model.config.max_len
    for row in tokens.tolist():
        body = row[1:row.index(vocab.eos)]
        assert body and not {vocab.pad, vocab.bos, vocab.unk, vocab.eos} & set(body)
        assert set(row[row.index(vocab.eos) + 1:]) <= {vocab.pad}


def test_positive_advantage_raises_the_probability_of_the_caption() -> None:
    model, vocab = tiny_captioner()
    memory = model.memory(torch.randn(2, 49, 1280)).detach()
    tokens = sample(model, memory, vocab)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = -policy_loss(model, memory, tokens, torch.ones(2), vocab.pad).item()
    for _ in range(5):
        opt.zero_grad()
        policy_loss(model, memory, tokens, torch.ones(2), vocab.pad).backward()
        opt.step()
    assert -policy_loss(model, memory, tokens, torch.ones(2), vocab.pad).item() > before + 0.5


def test_top_1_sampling_is_greedy_and_top_k_stays_in_the_top_k() -> None:
    model, vocab = tiny_captioner()
    memory = model.memory(torch.randn(1, 49, 1280)).detach().expand(16, -1, -1)
    torch.manual_seed(1)
    greedy = sample(model, memory, vocab, top_k=1)
    assert (greedy == greedy[0]).all()  # the same image gives the same caption 16 times
    first = model.step(model.start(memory[:1]), torch.tensor([vocab.bos]))[0]
    first[[vocab.pad, vocab.bos, vocab.unk, vocab.eos]] = float("-inf")
    allowed = set(first.topk(2).indices.tolist())
    assert set(sample(model, memory, vocab, top_k=2)[:, 1].tolist()) <= allowed
