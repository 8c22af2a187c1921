from models.grounding import read_table
from models.heldout import HELD_WORDS, f1, named
from models.train_captioner import substitutes
from models.vocab import Vocabulary


def test_an_object_is_named_by_any_of_its_forms() -> None:
    assert named({"a", "kitten", "and", "two", "horses"}) == {"cat", "horse"}
    assert named({"a", "man", "on", "motorcycle"}) == set()


def test_f1_counts_captions_against_the_photos_whose_references_name_the_object() -> None:
    refs = {"1": [["a", "horse"], ["a", "pony", "runs"]], "2": [["a", "horse", "in", "a", "field"]],
            "3": [["a", "dog", "runs"]], "4": [["a", "bird", "flies"]]}
    captions = {"1": "a horse runs", "2": "a dog runs", "3": "a horse runs", "4": "a bird flies"}
    scores = f1(captions, refs)
    assert scores["horse"] == {"photos": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert scores["bird"]["f1"] == 1.0 and scores["cat"] == {"photos": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_substitution_never_puts_a_held_out_word_in_a_caption() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "dog", "cat", "kitten", "bike", "tiger", "horse"])
    pool = {vocab.words[i] for i in substitutes(vocab, read_table().words, HELD_WORDS)}
    assert pool == {"dog", "tiger"}  # "a" is no table word; the rest are held-out forms
