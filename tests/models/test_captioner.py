import torch

from models.captioner import CaptionerConfig
from models.decode import Ask, beam_search, beam_searches
from models.vocab import Vocabulary, tokenize
from tests.tiny import tiny_captioner


def test_vocabulary_round_trip(tmp_path) -> None:
    captions = [tokenize("A dog runs on the grass."), tokenize("a DOG sits"), tokenize("zebra")]
    vocab = Vocabulary.build(captions, min_count=2)
    assert "dog" in vocab.index and "zebra" not in vocab.index
    ids = vocab.encode(tokenize("a dog sits"), max_len=10)
    assert ids[0] == vocab.bos and ids[-1] == vocab.eos
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.decode(ids) == "a dog <unk>"
    assert again.words == vocab.words


class ToyCache:
    def __init__(self, images: int) -> None:
        self.prefixes: list[list[int]] = [[] for _ in range(images)]

    def reorder(self, rows: torch.Tensor) -> None:
        self.prefixes = [self.prefixes[r] for r in rows.tolist()]


class ToyDecoder:
    """Next-token log-probabilities from a fixed table: prefix -> distribution (the decoder's cache protocol)."""

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], vocab: int = 20) -> None:
        self.config = CaptionerConfig(vocab_size=vocab, max_len=6)
        self.table, self.vocab = table, vocab

    def start(self, memory: torch.Tensor) -> ToyCache:
        return ToyCache(len(memory))

    def step(self, cache: ToyCache, last: torch.Tensor) -> torch.Tensor:
        cache.prefixes = [p + [w] for p, w in zip(cache.prefixes, last.tolist(), strict=True)]
        out = torch.full((len(cache.prefixes), self.vocab), -1e9)
        for row, prefix in enumerate(cache.prefixes):
            for word, p in self.table.get(tuple(prefix), {2: 1.0}).items():
                out[row, word] = torch.log(torch.tensor(p))
        return out


def test_beam_finds_the_best_sequence_greedy_misses() -> None:
    # greedy takes 15 (0.6) then is stuck with 0.6*0.3; the beam finds 16 -> 17 = 0.4*1.0
    table = {(1,): {15: 0.6, 16: 0.4}, (1, 15): {12: 0.3, 13: 0.3, 14: 0.4}, (1, 16): {17: 1.0},
             (1, 15, 14): {2: 1.0}, (1, 16, 17): {2: 1.0}}
    toy = ToyDecoder(table)
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=1) == [15, 14]
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=3) == [16, 17]


def test_no_repeated_content_words() -> None:
    table = {(1,): {15: 1.0}, (1, 15): {15: 0.9, 16: 0.1}, (1, 15, 16): {15: 0.9, 2: 0.1}}
    toy = ToyDecoder(table)
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=2) == [15, 16]


@torch.inference_mode()
def test_cached_steps_equal_the_full_forward_pass() -> None:
    model, vocab = tiny_captioner()
    model.eval()
    memory = model.memory(torch.randn(1, 49, 1280))
    tokens = torch.tensor([[vocab.bos, 4, 5, 6], [vocab.bos, 7, 8, 9], [vocab.bos, 4, 9, 5]])
    full = torch.log_softmax(model(memory.expand(3, -1, -1), tokens), dim=-1)  # (3, 4, vocab)
    cache = model.start(memory)
    for t in range(tokens.shape[1]):
        logp = model.step(cache, tokens[:, t])
        assert logp.shape == (3, len(vocab))
        torch.testing.assert_close(logp, full[:, t], atol=1e-4, rtol=1e-4)
    cache.reorder(torch.tensor([2, 0]))  # the beam kept hypotheses 2 and 0
    logp = model.step(cache, torch.tensor([6, 6]))
    again = torch.log_softmax(model(memory.expand(2, -1, -1), torch.cat([tokens[[2, 0]], torch.tensor([[6], [6]])], 1)),
                              dim=-1)[:, -1]
    torch.testing.assert_close(logp, again, atol=1e-4, rtol=1e-4)


def test_forbidden_ids_are_never_produced() -> None:
    table = {(1,): {3: 0.9, 15: 0.1}, (1, 15): {2: 1.0}}
    toy = ToyDecoder(table)
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=2) == [3]
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=2, forbid=(3,)) == [15]


def test_constrained_search_includes_an_unlikely_word() -> None:
    # 17 is never the likeliest word; the constraint still puts it in, and the caption stays a likely one
    table = {(1,): {15: 0.7, 16: 0.2, 17: 0.1}, (1, 15): {2: 0.8, 17: 0.2}, (1, 15, 17): {2: 1.0},
             (1, 16): {2: 1.0}, (1, 17): {15: 1.0}, (1, 17, 15): {2: 1.0}}
    toy = ToyDecoder(table)
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=1) == [15]
    for beam in (1, 3):
        assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=beam, must=(17,)) == [15, 17]
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=1, must=(15, 17)) == [15]  # either word
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=1, must=(16, 17)) == [15, 17]  # 0.14 / sqrt(2)
    # beats 0.2 / sqrt(1)
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=1, start=(17,)) == [17, 15]  # begins with it


def test_a_constrained_search_does_not_stop_at_its_first_forced_ending() -> None:
    # 17 alone then <eos> ends first; the likely caption says 17 last: 0.8 * 0.9 * 0.9 against 0.2 * 0.9
    table = {(1,): {15: 0.8, 17: 0.2}, (1, 15): {16: 0.9, 2: 0.1}, (1, 15, 16): {17: 0.9, 2: 0.1},
             (1, 15, 16, 17): {2: 1.0}, (1, 17): {2: 0.9, 15: 0.1}}
    toy = ToyDecoder(table)
    assert beam_search(toy, torch.zeros(1, 1, 1), bos=1, eos=2, beam=1, must=(17,)) == [15, 16, 17]


@torch.inference_mode()
def test_constrained_search_on_a_real_decoder_meets_every_constraint() -> None:
    model, vocab = tiny_captioner(seed=3)
    memory = model.memory(torch.randn(1, 49, 1280))
    for word in range(4, len(vocab)):
        for beam in (1, 2):
            ids = beam_search(model, memory, vocab.bos, vocab.eos, beam=beam, forbid=(0, 1, 3), must=(word,))
            assert word in ids and vocab.eos not in ids and len(ids) <= model.config.max_len - 2


@torch.inference_mode()
def test_images_searched_together_get_what_each_gets_alone() -> None:
    model, vocab = tiny_captioner(seed=1)
    memory = model.memory(torch.randn(4, 49, 1280, generator=torch.Generator().manual_seed(1)))
    plain = Ask(1, forbid=(0, 1, 3))
    asks = [plain, Ask(3, forbid=(0, 1, 3), must=(7,)), Ask(2, forbid=(0, 1, 3), start=(5,), must=(9, 10)), plain]
    together = beam_searches(model, memory, vocab.bos, vocab.eos, asks)
    alone = [beam_searches(model, memory[i:i + 1], vocab.bos, vocab.eos, [a])[0] for i, a in enumerate(asks)]
    assert together == alone
    assert together[0] != together[3]  # the same ask, another image: each hypothesis attends to its own grid
    assert 7 in together[1] and together[2][0] == 5 and {9, 10} & set(together[2])
