import json

import numpy as np
import torch
from torchvision.models._meta import _IMAGENET_CATEGORIES

from models.grounding import GROUPS, TABLE, Grounding, Guide, WordTable, guide, read_table, realize
from models.registry import CaptionModel, load_captioner
from models.train_grounding import suppressions
from models.vocab import Vocabulary
from tests.tiny import WORDS, write_weights


def test_the_table_maps_every_imagenet_class_to_one_word() -> None:
    rows = [line.split("\t") for line in TABLE.read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == list(_IMAGENET_CATEGORIES)  # all 1,000, in class order, named as torchvision does
    assert all(len(r) == 4 and r[2].isalpha() and r[2].islower() and r[3].isalpha() for r in rows)
    words = {int(r[0]): r[2] for r in rows}
    assert {words[i] for i in range(151, 269)} == {"dog"}  # every dog breed
    assert words[281] == "cat" and words[967] == "coffee" and words[437] == "lighthouse"
    assert words[871] == "sailboat" and words[970] == words[979] == "mountains"
    assert words[21] == "bird"  # the kite is the bird, not the toy


def test_probabilities_are_summed_per_word() -> None:
    table = read_table()
    probs = torch.zeros(2, 1000)
    probs[0, 151:155] = 0.2  # four dog breeds
    probs[0, 281] = 0.2  # tabby
    probs[1, 967] = 0.9
    assert table.top(probs) == [("dog", torch.tensor(0.8).item()), ("coffee", torch.tensor(0.9).item())]


def test_guide_uses_a_stand_in_for_an_unknown_word_and_rules_out_groups() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "an", "structure", "man", "dog", "dogs", "cat"])
    table = WordTable(("cat", "dog", "lighthouse"), torch.zeros(1000, dtype=torch.long),
                      {"lighthouse": "structure", "cat": "animal", "dog": "dog"})
    grounding = Grounding(0.5, {"lighthouse": ("person", "dog"), "dog": ("dog",)})
    assert guide("lighthouse", 0.4, grounding, table, vocab) == Guide()
    g = guide("lighthouse", 0.6, grounding, table, vocab)
    assert g.must == (vocab.index["structure"],) and g.stand_in == "structure"
    assert set(g.forbid) == {vocab.index[w] for w in ("man", "dog", "dogs")}
    assert realize("a man near a structure".split(), g) == "a man near a lighthouse"
    d = guide("dog", 0.9, grounding, table, vocab)
    assert set(d.must) == {vocab.index["dog"], vocab.index["dogs"]} and d.forbid == ()  # never its own word
    assert realize("a dog".split(), d) == "a dog"


def test_suppressions_follow_the_training_references() -> None:
    table = WordTable(("horse", "lighthouse", "zebra"), torch.zeros(1000, dtype=torch.long), {})
    tops = [("horse", 0.9)] * 10 + [("zebra", 0.9)] * 10 + [("zebra", 0.1)] * 10
    refs = [[["a", "man", "rides", "a", "horse"]]] * 10 + [[["zebras", "in", "the", "grass"]]] * 10
    refs += [["a man and his dog play with a ball in the water and snow".split()]] * 10  # not confident: base rates
    out = suppressions(tops, refs, table, threshold=0.5)
    assert "person" not in out["horse"] and set(out["horse"]) == set(GROUPS) - {"person"}
    assert set(out["zebra"]) == set(GROUPS) and set(out["lighthouse"]) == set(GROUPS)  # unseen: all ruled out


def test_a_grounded_captioner_says_the_confident_word(tmp_path) -> None:
    folder = write_weights(tmp_path / "w")
    image = np.random.default_rng(0).random((40, 60, 3), dtype=np.float32)
    plain = load_captioner("attention", folder, "cpu", beam=2)  # no grounding.json: the decoder alone
    assert isinstance(plain, CaptionModel) and plain.grounding is None
    assert plain([image])[0] == "the dog"  # what the tiny decoder says alone
    Grounding(0.0, {"cat": ("dog",)}).save(folder / "grounding.json")
    model = load_captioner("attention", folder, "cpu", beam=2)
    assert isinstance(model, CaptionModel) and model.version.startswith(plain.version + "+")
    model.table = WordTable(("cat",), torch.zeros(1000, dtype=torch.long), {"cat": "animal"})  # every class: cat
    words = model([image])[0].split()
    assert "cat" in words and "dog" not in words and set(words) <= set(WORDS)
    assert json.loads((folder / "grounding.json").read_text())["threshold"] == 0.0
