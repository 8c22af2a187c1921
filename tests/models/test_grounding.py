import json

import numpy as np
import pytest
import torch
from torchvision.models._meta import _IMAGENET_CATEGORIES

from models.grounding import GROUPS, TABLE, Grounding, Guide, WordTable, guide, read_table, realize
from models.grounding import plain as grounding_plain
from models.registry import CaptionModel, load_captioner
from models.train_grounding import nobody_levels, person_probe, suppressions
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
    expected = [("dog", torch.tensor(0.8).item()), ("coffee", torch.tensor(0.9).item())]
    assert table.top(table.probabilities(probs)) == expected


def test_an_unsure_animal_is_still_an_animal() -> None:
    table = read_table()
    probs = torch.zeros(2, 1000)
    probs[0, [356, 357, 360]] = 0.25  # weasel, mink, otter
    probs[0, 610] = 0.25  # jersey: clothing is never the kind said
    probs[1, 610] = 0.9
    words = table.probabilities(probs)
    assert table.top(words)[0][1] == 0.25
    assert table.top_kind(words)[0] == ("animal", 0.75) and table.top_kind(words)[1][1] == 0.0


def test_guide_uses_a_stand_in_for_an_unknown_word_and_rules_out_groups() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "an", "structure", "man", "dog", "dogs", "cat"])
    table = WordTable(("cat", "dog", "lighthouse"), torch.zeros(1000, dtype=torch.long),
                      {"lighthouse": "structure", "cat": "animal", "dog": "dog"})
    grounding = Grounding(0.5, {"lighthouse": ("person", "dog"), "dog": ("dog",)})
    assert guide(("lighthouse", 0.4), ("structure", 0.4), {"dog": 0.5}, grounding, table, vocab) == Guide()
    g = guide(("lighthouse", 0.6), ("structure", 0.6), {"dog": 0.9}, grounding, table, vocab)
    assert g.must == (vocab.index["structure"],) and g.stand_in == "structure"
    assert set(g.forbid) == {vocab.index[w] for w in ("man", "dog", "dogs")}
    assert g.start == (vocab.index["a"], vocab.index["structure"])  # the subject, in the decoder's words
    assert realize(["a", "structure", "near", "a", "man"], g) == "a lighthouse near a man"
    d = guide(("dog", 0.9), ("dog", 0.9), {"dog": 0.9}, grounding, table, vocab)
    assert set(d.must) == {vocab.index["dog"], vocab.index["dogs"]} and d.forbid == ()  # never its own word
    assert d.start == () and realize(["a", "dog"], d) == "a dog"  # the decoder knows dogs: left free
    c = guide(("cat", 0.9), ("animal", 0.9), {"dog": 0.9}, grounding, table, vocab)  # "animal" not in this vocab
    assert c.must == (vocab.index["cat"],) and c.start == ()


def test_a_kind_that_outweighs_every_habitual_subject_is_the_subject() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "an", "animal", "man", "dog", "ball"])
    table = read_table()
    grounding = Grounding(0.5, dominant=0.2)
    evidence = {"person": 0.1, "dog": 0.3, "ball": 0.1, "water": 0.4, "snow": 0.1}
    g = guide(("horse", 0.2), ("animal", 0.45), evidence, grounding, table, vocab)
    assert g.start == (vocab.index["a"], vocab.index["animal"]) and g.must == (vocab.index["animal"],)
    assert set(g.forbid) == {vocab.index[w] for w in ("man", "dog", "ball")}  # each outweighed by the kind
    assert realize(["a", "animal", "near", "a", "dog"], g) == "an animal near a dog"
    assert guide(("horse", 0.2), ("animal", 0.45), {**evidence, "dog": 0.46}, grounding, table, vocab) == Guide()
    assert guide(("horse", 0.1), ("animal", 0.15), {"dog": 0.01}, grounding, table, vocab) == Guide()  # too unsure


def test_a_subject_is_ruled_out_when_the_words_that_allow_it_are_unlikely() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "man", "dog", "dogs", "ball"])
    table = read_table()
    allow_all = dict.fromkeys(table.words, ())
    grounding = Grounding(0.5, {**allow_all, "mountains": ("dog", "ball")}, absent=0.05)
    probs = torch.zeros(2, 1000)
    probs[0, 970], probs[0, 207] = 0.3, 0.04  # alp, golden retriever: dogs allowed by 0.04 of the probability
    probs[1, 970], probs[1, 207] = 0.3, 0.3
    words = table.probabilities(probs)
    (word, p), _ = table.top(words)
    evidence = grounding.evidence(words, table)
    assert word == "mountains" and evidence[0]["dog"] == torch.tensor(0.04).item()
    assert evidence[0]["person"] == torch.tensor(0.34).item()  # all the probability on words allowing people
    g = guide((word, p), ("dog", 0.04), evidence[0], grounding, table, vocab)
    assert g.must == () and g.forbid == (vocab.index["dog"], vocab.index["dogs"], vocab.index["ball"])
    assert guide((word, p), ("dog", 0.3), evidence[1], grounding, table, vocab) == Guide()  # the dog allows dogs
    assert Grounding(0.5).evidence(words, table)[0] == dict.fromkeys(GROUPS, 0.0)  # unknown words allow nothing


def test_ruling_people_out_rules_out_every_word_for_them() -> None:
    people = set(GROUPS["person"])
    ways_round_a_banned_man = {"hikers", "skateboarder", "adults", "crowd", "swimmer", "bride", "toddler", "asian", "male"}
    assert ways_round_a_banned_man <= people
    assert not people & {"white", "black", "tiger", "german", "shepherd", "american", "dog"}  # not people here


def test_people_are_ruled_out_when_the_probe_sees_no_one() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "an", "mountain", "mountains", "man", "people", "dog"])
    table = read_table()
    grounding = Grounding(0.5, {"mountains": ("dog",)}, absent=0.05, dominant=0.2, nobody=0.2)
    evidence = {"person": 0.9, "dog": 0.01, "ball": 0.01, "water": 0.01, "snow": 0.01}  # Flickr8k's climbers
    confident = guide(("mountains", 0.9), ("mountain", 0.9), evidence, grounding, table, vocab, person=0.1)
    assert set(confident.forbid) == {vocab.index[w] for w in ("man", "people", "dog")}
    assert guide(("mountains", 0.9), ("mountain", 0.9), evidence, grounding, table, vocab, person=0.3).forbid == (
        vocab.index["dog"],)  # the probe sees someone: the words' evidence stands
    unsure = guide(("mountains", 0.3), ("mountain", 0.4), evidence, grounding, table, vocab, person=0.1)
    assert set(unsure.must) == {vocab.index["mountain"], vocab.index["mountains"]}  # no longer outweighed
    assert vocab.index["man"] in unsure.forbid
    assert guide(("mountains", 0.3), ("mountain", 0.4), evidence, grounding, table, vocab, person=0.3).must == ()


def test_on_a_photo_the_probe_sees_no_one_in_the_word_is_said_from_the_lower_threshold() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "an", "structure", "man", "people", "dog"])
    table = read_table()
    grounding = Grounding(0.5, absent=0.05, dominant=0.9, nobody=0.2, alone=0.3)
    evidence = {"person": 0.5, "dog": 0.01, "ball": 0.01, "water": 0.01, "snow": 0.01, "grass": 0.01}
    alone = guide(("lighthouse", 0.35), ("structure", 0.35), evidence, grounding, table, vocab, person=0.1)
    assert alone.word == "lighthouse" and alone.start == (vocab.index["a"], vocab.index["structure"])
    assert guide(("lighthouse", 0.35), ("structure", 0.35), evidence, grounding, table, vocab, person=0.3).must == ()
    assert guide(("lighthouse", 0.25), ("structure", 0.25), evidence, grounding, table, vocab, person=0.1).must == ()
    unset = Grounding(0.5, absent=0.05, dominant=0.9, nobody=0.2)  # grounding.json of before: the one threshold
    assert guide(("lighthouse", 0.35), ("structure", 0.35), evidence, unset, table, vocab, person=0.1).must == ()


def test_the_person_probe_is_fitted_and_read_back(tmp_path) -> None:
    gen = torch.Generator().manual_seed(1)
    flickr_x = torch.randn(400, 8, generator=gen) + 3.0  # on another scale than the labelled photos: folded back
    flickr_y = (flickr_x[:, 0] > 3.0).float()
    photos_x = torch.randn(60, 8, generator=gen)
    photos_y = (photos_x[:, 0] > 0.5).float()
    probe, rows, held_out = person_probe((flickr_x, flickr_y), (photos_x, photos_y))
    assert len(probe) == 9 and len(rows) == 12 and max(r["cross_validated_auc"] for r in rows) > 0.9
    assert held_out.shape == (60,) and ((held_out > 0.5) == (photos_y > 0.5)).float().mean() > 0.7  # out of fold
    grounding = Grounding(0.5, nobody=0.2, probe=probe, alone=0.3)
    grounding.save(tmp_path / "grounding.json")
    assert Grounding.load(tmp_path / "grounding.json") == Grounding(0.5, nobody=0.2, probe=tuple(
        round(w, 6) for w in probe), alone=0.3)
    features = torch.zeros(2, 49, 8)
    features[0, 0, 0], features[1, :, 0] = 4.0, -4.0  # the feature that says "person", in one cell of the first
    seen, unseen = grounding.people(features)
    assert seen > 0.8 and unseen < 0.2  # a person in a corner of the photo is in it
    assert Grounding(0.5).people(features) == [1.0, 1.0]  # no probe: nobody is ruled out


def test_the_probe_level_is_scored_on_the_labelled_photos() -> None:
    held_out = torch.tensor([0.05, 0.15, 0.35, 0.45, 0.55, 0.9])
    person = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    rows = {r["nobody"]: r for r in nobody_levels(held_out, person)}
    assert rows[0.1] == pytest.approx({"nobody": 0.1, "people_photos_ruled_out": 0.0,
                                       "photos_without_ruled_out": 1 / 3, "labelled_accuracy": 4 / 6})
    assert rows[0.4]["labelled_accuracy"] == 1.0 and rows[0.5]["people_photos_ruled_out"] == pytest.approx(1 / 3)
    assert max(rows.values(), key=lambda r: r["labelled_accuracy"])["nobody"] == 0.4


def test_suppressions_follow_the_training_references() -> None:
    table = WordTable(("horse", "lighthouse", "zebra"), torch.zeros(1000, dtype=torch.long), {})
    tops = [("horse", 0.9)] * 10 + [("zebra", 0.9)] * 10 + [("zebra", 0.1)] * 10
    refs = [[["a", "man", "rides", "a", "horse"]]] * 10 + [[["zebras", "in", "the", "grass"]]] * 10
    refs += [[["a", "man", "and", "his", "dog", "play", "with", "a", "ball", "in", "the", "water", "and", "snow"]]] * 10  # not confident: base rates
    out = suppressions(tops, refs, table, threshold=0.5)
    assert "person" not in out["horse"] and set(out["horse"]) == set(GROUPS) - {"person"}
    assert set(out["zebra"]) == set(GROUPS) - {"grass"}  # its photos' references say "grass" more than all do
    assert set(out["lighthouse"]) == set(GROUPS)  # unseen: all ruled out


def test_a_grounded_captioner_says_the_confident_word(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    blank = (0.97 + np.random.default_rng(1).normal(0, 0.003, (30, 20, 1))).astype(np.float32)  # a page's grain
    assert model([blank, image, blank]) == ["a plain white image", model([image])[0], "a plain white image"]
    def not_asked(_: np.ndarray) -> None:
        raise AssertionError("the decoder alone is as trained: no rule for plain pictures")
    monkeypatch.setattr("models.registry.plain", not_asked)
    assert plain([blank])[0]


@pytest.mark.parametrize(("rgb", "said"), [((0.02, 0.02, 0.03), "black"), ((0.5, 0.5, 0.52), "gray"),
                                           ((0.9, 0.1, 0.1), "red"), ((0.5, 0.3, 0.1), "brown"),
                                           ((0.95, 0.6, 0.1), "orange"), ((0.2, 0.3, 0.9), "blue")])
def test_a_picture_of_one_colour_is_said_to_be_one(rgb: tuple[float, float, float], said: str) -> None:
    flat = np.broadcast_to(np.array(rgb, np.float32), (64, 48, 3))
    assert grounding_plain(flat) == f"a plain {said} image"
    textured = flat + np.random.default_rng(0).normal(0, 0.02, flat.shape).astype(np.float32)
    assert grounding_plain(textured) is None  # a foggy photo, a clear sky: more than a blank page's grain


def test_precision_auto_runs_the_encoder_in_bfloat16_on_a_cpu_that_has_it_and_says_so(tmp_path) -> None:
    from models.precision import cpu_bfloat16
    from models.registry import ModelError
    folder = write_weights(tmp_path / "w")
    auto = load_captioner("attention", folder, "cpu")
    exact = load_captioner("attention", folder, "cpu", precision="float32")
    assert isinstance(auto, CaptionModel) and isinstance(exact, CaptionModel)
    reduced = cpu_bfloat16()
    assert auto.version == exact.version + ("-bf16" if reduced else "")  # no grounding.json here
    images = torch.rand(2, 3, 96, 128)
    with torch.inference_mode():
        a, e = auto.encoder(images), exact.encoder(images)
    assert a.dtype == e.dtype == torch.float32 and a.shape == e.shape == (2, 49, 1280)
    assert (a != e).any() == reduced and torch.allclose(a, e, atol=0.1 * float(e.abs().max()))
    with pytest.raises(ModelError, match="precision must be one of auto, float32"):
        load_captioner("attention", folder, "cpu", precision="float16")
