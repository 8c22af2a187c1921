from pathlib import Path

import pytest

from models.eval_captioner import consensus, meteor

REFS = {"a.jpg": [["a", "red", "car", "on", "the", "road"], ["a", "car", "drives", "fast"]]}


def test_meteor_matches_synonyms_through_wordnet(tmp_path: Path) -> None:
    exact = meteor({"a.jpg": "a red car on the road"}, REFS, tmp_path)
    synonym = meteor({"a.jpg": "a red auto on the road"}, REFS, tmp_path)  # car.n.01 in WordNet
    unrelated = meteor({"a.jpg": "a red boat on the road"}, REFS, tmp_path)
    assert exact == pytest.approx(0.9977, abs=1e-3)  # the fragmentation penalty keeps a perfect match below 1
    assert synonym == pytest.approx(exact) and unrelated < 0.85
    assert (tmp_path / "corpora" / "wordnet" / "lexnames").is_file()
    assert b"\r" not in (tmp_path / "corpora" / "wordnet" / "data.noun").read_bytes()[:4096]


def test_consensus_picks_the_caption_closest_to_the_others() -> None:
    candidates = [["a", "dog", "runs"], ["a", "dog", "runs", "fast"], ["a", "cat", "sleeps"]]
    assert consensus(candidates) == ["a", "dog", "runs"]
