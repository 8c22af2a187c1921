from models.heldout import f1, named


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
