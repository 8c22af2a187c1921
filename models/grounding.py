"""Caption words from the encoder's own ImageNet-1k classifier, to guide decoding on photos unlike Flickr8k.

`imagenet_words.tsv` maps each of the 1,000 classes to an everyday caption word (every dog breed to "dog", espresso
to "coffee", beacon to "lighthouse") and a kind: an in-vocabulary stand-in ("structure") that the decoder says where
it does not know the word itself, replaced by the word afterwards. Class probabilities are summed per word; a word
at or above the threshold (else its kind, summed over the kind's words, at or above it) must appear in the caption
(constrained beam search, see models.decode), as its subject when it can be one ("a <kind> ..."), and it rules out
the Flickr8k subjects and scenes (people, dogs, balls, water, snow, grass) that the training references of photos
with that confident word rarely mention. Whatever the top word, a subject is also ruled out when the words that
allow it get almost no probability; and on an unsure photo a subject kind that outweighs the evidence of every
habitual subject is said instead of them. People are also ruled out when a person probe (logistic regression on the
encoder's features, max-pooled over the grid, trained on Flickr8k and on labelled photos that are not all of people)
sees no one: the classifier's words cannot tell, since ImageNet has no person class and Flickr8k's mountains and
beaches are full of climbers and swimmers (the probe and all levels fitted by models.train_grounding)."""
import colorsys
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.vocab import Vocabulary

TABLE = Path(__file__).with_name("imagenet_words.tsv")
NOT_SUBJECTS = ("clothing", "instrument", "object", "person")  # kinds worn, held or played: not said for an unsure
# word, never the caption's subject
SCENES = ("beach", "lake", "mountain", "ocean")  # said, but not as the subject
GROUPS: dict[str, tuple[str, ...]] = {  # what a Flickr8k-trained decoder says by habit: the subjects and scenes its
    # captions name over 1,500 times (people, dogs, water, balls, grass, snow)
    # the people nouns of Flickr8k's vocabulary: those WordNet puts under person.n.01 in their first noun sense, read
    # through by hand ("white", "tiger", "german" and "american" are not people here), and "male" and "female",
    # whose first sense is any animal: with the others banned, the decoder said "a young asian" or "a male"
    "person": ("man", "men", "woman", "women", "boy", "boys", "girl", "girls", "child", "children", "kid", "kids",
               "person", "people", "guy", "guys", "lady", "ladies", "baby", "babies", "player", "players", "adult",
               "adults", "teen", "teens", "teenager", "teenagers", "toddler", "toddlers", "infant", "newborn", "youth",
               "someone", "individuals", "crowd", "audience", "spectators", "onlookers", "pedestrian", "pedestrians",
               "passengers", "family", "friend", "friends", "member", "members", "fans", "mother", "mom", "father",
               "dad", "parent", "parents", "daughter", "son", "sister", "brother", "bride", "groom", "bridesmaids",
               "groomsmen", "gentleman", "brunette", "skateboarder", "skateboarders", "snowboarder", "snowboarders",
               "boarder", "skier", "skiers", "skater", "skaters", "rollerblader", "surfer", "surfers", "swimmer",
               "swimmers", "diver", "hiker", "hikers", "backpacker", "climber", "climbers", "runner", "runners",
               "rider", "riders", "cyclist", "cyclists", "bicyclist", "bicyclists", "bicycler", "motorcyclist",
               "motorcyclists", "biker", "bikers", "driver", "jockey", "jockeys", "cowboy", "cowgirl", "equestrian",
               "athlete", "athletes", "gymnast", "wrestler", "wrestlers", "boxer", "fencers", "goalie", "pitcher",
               "catcher", "batter", "batsman", "quarterback", "footballer", "footballers", "teammate", "opponent",
               "rival", "referee", "coach", "trainer", "instructor", "cheerleader", "cheerleaders", "dancer", "dancers",
               "singer", "musician", "musicians", "guitarist", "drummer", "performer", "artist", "clown", "clowns",
               "photographer", "photographers", "cameraman", "worker", "workers", "vendor", "waiter", "officer",
               "officers", "policeman", "policemen", "cop", "soldier", "guard", "fireman", "firefighter", "fisherman",
               "owner", "owners", "student", "students", "pirate", "ninja", "asian", "african", "european", "indian",
               "japanese", "oriental", "native", "blond", "blonde", "homeless", "fellow", "dj", "official", "male",
               "males", "female", "females"),
    "dog": ("dog", "dogs", "puppy", "puppies"),
    "ball": ("ball", "balls"),
    "water": ("water",),
    "snow": ("snow",),
    "grass": ("grass", "grassy"),
}


PLAIN_STD = 0.01  # a picture whose every channel varies less than this (2.5 of 255) has nothing in it to name
HUES = ((15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (255, "blue"), (290, "purple"), (345, "pink"),
        (360, "red"))  # the upper end of each hue's degrees


def plain(image: np.ndarray) -> str | None:
    """"a plain white image" for a picture of one colour (a blank page in a scanned batch), which the decoder would
    fill with its habits (people, a dog); None for any other. image: (H, W, C) in [0, 1]."""
    step = max(1, max(image.shape[:2]) // 256)
    samples = image[::step, ::step].reshape(-1, image.shape[2])
    if samples.std(axis=0).max() >= PLAIN_STD:
        return None
    red, green, blue = np.broadcast_to(samples.mean(axis=0).clip(0, 1), 3)
    hue, saturation, value = colorsys.rgb_to_hsv(red, green, blue)
    if value < 0.2:
        colour = "black"
    elif saturation < 0.2:
        colour = "white" if value > 0.8 else "gray"
    else:
        colour = next(name for top, name in HUES if hue * 360 < top)
        colour = "brown" if colour == "orange" and value < 0.6 else colour
    return f"a plain {colour} image"


@dataclass(frozen=True)
class WordTable:
    words: tuple[str, ...]  # distinct caption words, sorted
    of_class: torch.Tensor  # (1000,) position in `words` of each class's word
    kind: dict[str, str]  # word -> stand-in

    def probabilities(self, class_probs: torch.Tensor) -> torch.Tensor:
        """(N, 1000) class probabilities -> (N, len(words)) summed per word."""
        out = class_probs.new_zeros(class_probs.shape[0], len(self.words))
        return out.index_add_(1, self.of_class.to(class_probs.device), class_probs)

    def top(self, word_probs: torch.Tensor) -> list[tuple[str, float]]:
        """word_probs: (N, len(words)). The likeliest word of each image and its probability."""
        p, i = word_probs.max(dim=1)
        return [(self.words[j], float(q)) for j, q in zip(i.tolist(), p.tolist(), strict=True)]

    def top_kind(self, word_probs: torch.Tensor) -> list[tuple[str, float]]:
        """The likeliest kind that can be a photo's subject (not clothing, a small object or a person), summed over
        its words: "animal" for a photo split between weasel, mink and otter."""
        kinds = sorted({k for k in self.kind.values() if k not in NOT_SUBJECTS})
        member = torch.tensor([[self.kind[w] == k for k in kinds] for w in self.words], dtype=word_probs.dtype,
                              device=word_probs.device)  # (words, kinds)
        p, i = (word_probs @ member).max(dim=1)
        return [(kinds[j], float(q)) for j, q in zip(i.tolist(), p.tolist(), strict=True)]


def read_table(path: Path = TABLE) -> WordTable:
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(1000)), "one row per ImageNet class, in order"
    words = tuple(sorted({r[2] for r in rows}))
    position = {w: i for i, w in enumerate(words)}
    return WordTable(words, torch.tensor([position[r[2]] for r in rows]), {r[2]: r[3] for r in rows})


@dataclass(frozen=True)
class Grounding:
    threshold: float  # a word this likely must be in the caption
    suppress: dict[str, tuple[str, ...]] = field(default_factory=dict)  # word -> groups of GROUPS it rules out
    absent: float = 0.0  # a group whose words (those that do not rule it out) are less likely than this: ruled out
    dominant: float = 1.0  # a subject kind this likely that outweighs every group's evidence is said
    nobody: float = 0.0  # people are ruled out when the person probe gives less than this
    probe: tuple[float, ...] = ()  # the person probe: a weight per max-pooled encoder feature, then the bias
    alone: float | None = None  # the threshold instead on a photo the probe sees no one in (None: the same)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"threshold": self.threshold, "absent": self.absent, "dominant": self.dominant,
                                    "nobody": self.nobody, "alone": self.alone, "suppress": self.suppress,
                                    "probe": [round(w, 6) for w in self.probe]},
                                   indent=0, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "Grounding":
        data = json.loads(path.read_text())
        return cls(data["threshold"], {w: tuple(g) for w, g in data["suppress"].items()}, data["absent"],
                   data["dominant"], data.get("nobody", 0.0), tuple(data.get("probe", ())), data.get("alone"))

    def people(self, features: torch.Tensor) -> list[float]:
        """features: (N, 49, 1280) from the encoder. The probe's probability that a person is in each photo (1 when
        there is no probe)."""
        if not self.probe:
            return [1.0] * len(features)
        w = features.new_tensor(self.probe)
        return torch.sigmoid(features.amax(1) @ w[:-1] + w[-1]).tolist()  # max over the grid: a small person counts

    def evidence(self, word_probs: torch.Tensor, table: WordTable) -> list[dict[str, float]]:
        """word_probs: (N, len(table.words)). Per image and group of GROUPS: the probability of the words that do
        not rule the group out (a word missing from `suppress` rules all out)."""
        allows = torch.tensor([[g not in self.suppress.get(w, tuple(GROUPS)) for g in GROUPS] for w in table.words],
                              dtype=word_probs.dtype, device=word_probs.device)
        return [dict(zip(GROUPS, row.tolist(), strict=True)) for row in word_probs @ allows]


@dataclass(frozen=True)
class Guide:
    """What decoding one image must and must not say."""
    must: tuple[int, ...] = ()  # token ids, one of which the caption contains
    forbid: tuple[int, ...] = ()
    stand_in: str = ""  # the token said for `word`, replaced by it afterwards (empty: none)
    word: str = ""
    start: tuple[int, ...] = ()  # token ids the caption begins with: "a <kind>" when the word is the subject


def guide(word: tuple[str, float], kind: tuple[str, float], evidence: dict[str, float], grounding: Grounding,
          table: WordTable, vocab: Vocabulary, person: float = 1.0) -> Guide:
    """word, kind: the image's likeliest word and subject kind (WordTable.top, .top_kind) with their probabilities;
    evidence: Grounding.evidence of the image; person: Grounding.people of the image. The word is said when it
    reaches the threshold (`alone` when the probe sees no one: the decoder's habits are then people, and wrong);
    else the kind when it does, or when it reaches `dominant` and outweighs the evidence for every habitual
    subject."""
    nobody = {"person"} if person < grounding.nobody else set()
    evidence = {g: 0.0 if g in nobody else e for g, e in evidence.items()}  # the words' evidence for no one
    absent = nobody | {g for g, e in evidence.items() if e < grounding.absent}
    threshold = grounding.threshold if not nobody or grounding.alone is None else grounding.alone
    (word, p), (kind_word, q) = word, kind
    if p < threshold:
        if not (q >= threshold or q >= grounding.dominant and q > max(evidence.values())):
            return Guide(forbid=_ids({w for g in absent for w in GROUPS[g]}, vocab))
        word, absent = kind_word, {g for g, e in evidence.items() if e < q}  # the kind outweighs these (and no one)
    kind = table.kind[word] if p >= threshold else word
    # A subject begins the caption as "a <kind>", the kind said for the word: the decoder knows how sentences
    # about an animal or a building go on, not how those about a word it saw a few times do.
    subject = kind in vocab.index and kind not in NOT_SUBJECTS + SCENES + GROUPS["dog"]
    said = kind if subject or word not in vocab.index else word
    forms = {said, said + "s", said + "es", said.removesuffix("s")} if said == word else {said}
    banned = {w for g in absent.union(grounding.suppress.get(word, ())) for w in GROUPS[g]} - forms
    start = (vocab.index["a"], vocab.index[said]) if subject else ()
    return Guide(_ids(forms, vocab), _ids(banned, vocab), "" if said == word else said, word, start)


def _ids(words: set[str], vocab: Vocabulary) -> tuple[int, ...]:
    return tuple(sorted(vocab.index[w] for w in words if w in vocab.index))


def realize(words: list[str], g: Guide) -> str:
    """The decoded words with the stand-in replaced by the word, and 'a'/'an' agreeing with it."""
    out = [g.word if g.stand_in and w == g.stand_in else w for w in words]
    for i in range(1, len(out)):
        if g.word and out[i] == g.word and out[i - 1] in ("a", "an"):
            out[i - 1] = "an" if g.word[0] in "aeiou" else "a"
    return " ".join(out)
