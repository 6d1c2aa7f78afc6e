"""What the pretrained main job speaks: short sentences to transcribe and questions the LM can answer from text.

Sentences are drawn from small word lists (`sentence`); training and held-out sentences never coincide (the
held-out split drops any sentence of the training split). Questions come in four categories (capitals, simple
arithmetic, colours, yes/no facts), each with TRAINING templates and HELD-OUT templates: a held-out question
is worded in a way no training clip was (its filler -- the country, the numbers -- may recur).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ADJECTIVES = ("old", "small", "big", "red", "quiet", "happy", "tall", "young", "green", "little")
NOUNS = ("man", "dog", "girl", "teacher", "cat", "boy", "farmer", "woman", "doctor", "bird")
OBJECTS = ("door", "window", "book", "letter", "box", "car", "garden", "table", "ball", "light")
VERBS_PAST = ("opened", "closed", "found", "painted", "watched", "carried", "cleaned", "bought", "moved", "saw")
VERBS_IMPERATIVE = ("open", "close", "clean", "paint", "bring", "find", "move", "check")
PLACES = ("kitchen", "garden", "office", "school", "station", "park", "house", "shop")


def sentence(rng: np.random.Generator) -> str:
    """A short sentence (4-8 words), one of three shapes, words drawn from ``rng``."""

    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(0, len(words)))]

    shape = int(rng.integers(0, 3))
    if shape == 0:
        return f"The {pick(ADJECTIVES)} {pick(NOUNS)} {pick(VERBS_PAST)} the {pick(OBJECTS)}."
    if shape == 1:
        return f"Please {pick(VERBS_IMPERATIVE)} the {pick(OBJECTS)} in the {pick(PLACES)}."
    return f"My {pick(NOUNS)} is in the {pick(PLACES)}."


def sentences(n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """``n`` sentences from ``seed``'s stream, none in ``exclude`` (held-out: exclude the training ones)."""
    rng = np.random.default_rng([seed, 21])
    out: list[str] = []
    for _ in range(200 * max(1, n)):
        if len(out) == n:
            return out
        s = sentence(rng)
        if s not in exclude:
            out.append(s)
    raise ValueError(f"could not draw {n} sentences outside the {len(exclude)} excluded ones: lower the count")


COUNTRIES = ("France", "Germany", "Italy", "Spain", "Japan", "China", "Russia", "Egypt", "Canada", "Greece")
THINGS = ("grass", "snow", "the sky", "a banana", "blood", "coal", "milk", "an orange")
FACTS = (
    "the sun is hot",
    "fish can swim",
    "ice is cold",
    "cats can fly",
    "water is wet",
    "dogs have four legs",
    "birds have wings",
    "snow is black",
    "fire is cold",
    "the moon is made of cheese",
)
NUMBERS = tuple(range(2, 10))


def filler_lists(n: int, seed: int, per_clip: int = 3) -> list[str]:
    """``n`` short lists of the questions' fillers to transcribe ("Japan, the sky, fish can swim."), ``per_clip``
    a list: every country, thing and fact in turn (a shuffled pass over all of them, then the next pass), so each
    is spoken about ``n * per_clip / len(pool)`` times (the pool: 28). A question holds its filler once, so each
    country is otherwise heard in only ~6 training questions against ~800 spoken digits, too few for the
    projector to learn it; a list clip is short, and a clip costs the frozen encoder the same padded window
    whatever its length."""
    if per_clip < 1:
        raise ValueError(f"per_clip must be >= 1, got {per_clip}")
    pool = [*COUNTRIES, *THINGS, *FACTS]
    rng = np.random.default_rng([seed, 24])
    order: list[str] = []
    while len(order) < n * per_clip:
        order.extend(pool[int(i)] for i in rng.permutation(len(pool)))
    texts = (", ".join(order[i * per_clip : (i + 1) * per_clip]) for i in range(n))
    return [text[0].upper() + text[1:] + "." for text in texts]


# category -> (training templates, held-out templates); {x}: the filler. Several training wordings per category,
# each opening differently: with one or two, the model learnt the wording's opening ("Tell me ..." answered as
# the imperative sentences "Please ...") instead of the words that carry the question ("capital", the country).
# A held-out wording is one whose typed answer opens as the training wordings' do (measured on SmolLM2-135M,
# 5 tokens: "The capital of Japan is", "The colour of snow is", "The answer to this question"): agreement then
# asks whether the question's content was heard, not whether an unseen wording's quirk was guessed ("Yes or no:
# fish can swim?" is answered "No: no."). Arithmetic has no such wording for this LM (its openings change with
# the numbers: "To add 7 and", "The answer to this classic math"); it is kept, and scored, as it is.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "capital": (
        (
            "What is the capital of {x}?",
            "What city is the capital of {x}?",
            "Which city is the capital of {x}?",
            "Name the capital of {x}.",
            "Do you know the capital of {x}?",
            "Please say the capital city of {x}.",
        ),
        ("Tell me the capital of {x}.",),
    ),
    "arithmetic": (
        (
            "What is {a} plus {b}?",
            "What is {a} times {b}?",
            "Add {a} and {b}.",
            "Please add {a} to {b}.",
            "What do you get from {a} plus {b}?",
            "Can you work out {a} plus {b}?",
        ),
        ("How much is {a} plus {b}?",),
    ),
    "colour": (
        (
            "What colour is {x}?",
            "Name a colour.",
            "Which colour is {x}?",
            "Please name the colour of {x}.",
            "Do you know what colour {x} is?",
            "Say the colour of {x}.",
        ),
        ("What is the colour of {x}?",),
    ),
    "fact": (
        (
            "Is it true that {x}?",
            "True or false: {x}?",
            "Do you think that {x}?",
            "Please say whether {x}.",
            "Would you say that {x}?",
            "Can it be that {x}?",
        ),
        ("Is it a fact that {x}?",),
    ),
}
CATEGORIES = tuple(TEMPLATES)


@dataclass(frozen=True)
class Question:
    """A question to speak: its ``category``, the ``template`` it was made from, and its ``text``."""

    category: str
    template: str
    text: str


def fill(template: str, rng: np.random.Generator, category: str) -> str:
    """``template`` with its filler drawn from ``rng`` (a country, two numbers, a thing or a fact)."""
    if category == "arithmetic":
        a, b = (NUMBERS[int(i)] for i in rng.integers(0, len(NUMBERS), size=2))
        return template.format(a=a, b=b)
    pool = {"capital": COUNTRIES, "colour": THINGS, "fact": FACTS}[category]
    return template.format(x=pool[int(rng.integers(0, len(pool)))])


def questions(n: int, seed: int, split: str) -> list[Question]:
    """``n`` questions of ``split`` (``"train"`` or ``"heldout"`` templates), categories in turn."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = np.random.default_rng([seed, 22])
    out = []
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        templates = TEMPLATES[category][0 if split == "train" else 1]
        template = templates[int(rng.integers(0, len(templates)))]
        out.append(Question(category, template, fill(template, rng, category)))
    return out


def content_words(question: str, category: str) -> list[str]:
    """The words of ``question`` that only hearing can give (lower case): the country, the thing's noun, the two
    numbers (spelled out), the fact's subject. Read back through the category's templates; raises ValueError
    for a question no template of ``category`` makes."""
    import re

    from recipes.hearing.scoring import words

    for template in (t for side in TEMPLATES[category] for t in side):
        pattern = re.escape(template).replace(r"\{x\}", "(?P<x>.+)").replace(r"\{a\}", "(?P<a>\\d+)")
        match = re.fullmatch(pattern.replace(r"\{b\}", "(?P<b>\\d+)"), question)
        if match is None:
            continue
        if category == "arithmetic":
            return words(f"{match['a']} {match['b']}")
        if "x" not in match.groupdict():  # "Name a colour.": nothing to hear but the wording
            return []
        filler = words(match["x"])
        return filler[-1:] if category == "colour" else [w for w in filler if w != "the"][:1]
    raise ValueError(f"{question!r} is made by no {category!r} template")
