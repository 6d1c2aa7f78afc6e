"""Scores of the pretrained main job, fair to every writer of digits.

Whisper writes "three one seven" as "3 1 7", "317" or "3-1-7"; our model writes "3 1 7". Both sides are
compared as WORDS after `words`: lower case, punctuation dropped, every digit spelled out on its own ("317" ->
"three one seven"), so a digit string and its spoken words are the same transcript.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from recipes.evaluation.transcripts import edit_distance
from recipes.synthetic.speech import DIGIT_WORDS


def words(text: str) -> list[str]:
    """``text`` as normalised words (see the module docstring)."""
    text = re.sub(r"\d", lambda m: f" {DIGIT_WORDS[int(m.group())]} ", text.lower())
    return re.sub(r"[^a-z' ]+", " ", text).split()


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Edit distance over all clips / reference words over all clips, on `words`."""
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references (need equal, > 0)")
    errors = sum(edit_distance(words(h), words(r)) for h, r in zip(hypotheses, references))
    return errors / max(1, sum(len(words(r)) for r in references))


def agreement(answers: Sequence[str], typed_answers: Sequence[str]) -> float:
    """Fraction of spoken-question answers whose `words` equal the LM's answer to the typed question."""
    if len(answers) != len(typed_answers) or not answers:
        raise ValueError(f"{len(answers)} answers for {len(typed_answers)} typed answers (need equal, > 0)")
    return sum(words(a) == words(t) for a, t in zip(answers, typed_answers)) / len(answers)
