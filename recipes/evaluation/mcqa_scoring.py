"""Scoring of `scripts.eval_mcqa`: the answer in a response, audio-length buckets, and the accuracy summary.

The answer is the first match of the paper's regex ``\\((\\d)\\)``; a response without one, or with a number
outside 1..len(choices), is *invalid* and counts as wrong (``accuracy`` = correct / all, as the authors'
script computes it; ``accuracy_parsable`` = correct / valid is reported too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recipes.evaluation.mcqa_items import MCQAItem

ANSWER_PATTERN = re.compile(r"\((\d)\)")  # the paper's answer regex
DEFAULT_BUCKET_EDGES = (60.0, 120.0, 300.0, 600.0)  # the paper's 1, 2, 5, 10 minute test sets


def parse_answer(response: str, n_choices: int = 4) -> int | None:
    """The 1-based choice number of the first ``(d)`` in ``response``; None when there is none or it is
    outside 1..n_choices (an invalid answer)."""
    match = ANSWER_PATTERN.search(response)
    if match is None:
        return None
    number = int(match.group(1))
    return number if 1 <= number <= n_choices else None


def bucket_label(seconds: float, edges: Sequence[float]) -> str:
    """Length bucket of a clip: ``<=60s``, ``60-120s``, ..., ``>600s`` for edges (60, 120, ..., 600)."""
    lower = None
    for edge in edges:
        if seconds <= edge:
            return f"<={edge:g}s" if lower is None else f"{lower:g}-{edge:g}s"
        lower = edge
    return f">{lower:g}s"


def bucket_order(edges: Sequence[float]) -> list[str]:
    """All bucket labels of ``edges``, shortest first."""
    probes = [e for e in edges] + [math.inf]
    return list(dict.fromkeys(bucket_label(p, edges) for p in probes))


@dataclass
class Prediction:
    key: str
    audio: str
    seconds: float
    bucket: str
    answer: int  # 1-based number of the right choice
    predicted: int | None  # 1-based number parsed from the response, None = invalid
    correct: bool
    response: str


def score_response(item: MCQAItem, response: str, seconds: float, bucket_edges: Sequence[float]) -> Prediction:
    """The `Prediction` of ``response`` to ``item`` (a clip of ``seconds``)."""
    predicted = parse_answer(response, len(item.choices))
    return Prediction(
        key=item.key,
        audio=item.audio,
        seconds=seconds,
        bucket=bucket_label(seconds, bucket_edges),
        answer=item.answer + 1,
        predicted=predicted,
        correct=predicted == item.answer + 1,
        response=response,
    )


@dataclass
class MCQAResult:
    """Predictions in data order and their summary."""

    predictions: list[Prediction]
    bucket_edges: list[float]
    extension: dict = field(default_factory=dict)
    unreadable: list[dict] = field(default_factory=list)  # {"key", "audio", "error"}: clips that could not be read
    n_items: int | None = None  # questions in the run (answered + unreadable + not reached); None: n + unreadable

    @property
    def n(self) -> int:
        return len(self.predictions)

    @property
    def correct(self) -> int:
        return sum(p.correct for p in self.predictions)

    @property
    def invalid(self) -> int:
        return sum(p.predicted is None for p in self.predictions)

    @property
    def accuracy(self) -> float:
        """Correct / all questions (invalid answers count as wrong)."""
        return self.correct / self.n if self.n else float("nan")

    @property
    def accuracy_parsable(self) -> float:
        """Correct / questions with a valid answer."""
        valid = self.n - self.invalid
        return self.correct / valid if valid else float("nan")

    def by_bucket(self) -> list[dict]:
        """Per length bucket (non-empty ones, shortest first): bucket, n, correct, invalid, accuracy."""
        rows = []
        for label in bucket_order(self.bucket_edges):
            preds = [p for p in self.predictions if p.bucket == label]
            if preds:
                correct = sum(p.correct for p in preds)
                invalid = sum(p.predicted is None for p in preds)
                rows.append(
                    {
                        "bucket": label,
                        "n": len(preds),
                        "correct": correct,
                        "invalid": invalid,
                        "accuracy": correct / len(preds),
                    }
                )
        return rows

    @property
    def complete(self) -> bool:
        """Every question is answered or recorded as unreadable."""
        return self.n_items is None or self.n + len(self.unreadable) >= self.n_items

    def summary(self) -> dict:
        return {
            "n": self.n,
            "n_items": self.n + len(self.unreadable) if self.n_items is None else self.n_items,
            "unreadable": len(self.unreadable),
            "complete": self.complete,
            "correct": self.correct,
            "invalid": self.invalid,
            "accuracy": self.accuracy,
            "accuracy_parsable": self.accuracy_parsable,
            "by_bucket": self.by_bucket(),
            "bucket_edges": list(self.bucket_edges),
            "extension": self.extension,
        }
