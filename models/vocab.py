"""Caption tokenization (nltk) and the word <-> id vocabulary."""
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from nltk.tokenize import RegexpTokenizer

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
_tokenizer = RegexpTokenizer(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    return _tokenizer.tokenize(text.lower())


class Vocabulary:
    def __init__(self, words: list[str]) -> None:
        assert words[:4] == [PAD, BOS, EOS, UNK], "the first four words must be the special tokens"
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.pad, self.bos, self.eos, self.unk = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, captions: Iterable[list[str]], min_count: int = 5) -> "Vocabulary":
        counts = Counter(w for c in captions for w in c)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, BOS, EOS, UNK, *kept])

    def encode(self, tokens: list[str], max_len: int) -> list[int]:
        """<bos> w1 .. wk <eos>, at most max_len ids in all."""
        ids = [self.index.get(w, self.unk) for w in tokens[: max_len - 2]]
        return [self.bos, *ids, self.eos]

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            if i == self.eos:
                break
            if i not in (self.bos, self.pad):
                words.append(self.words[i])
        return " ".join(words)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.words))

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        return cls(json.loads(path.read_text()))
