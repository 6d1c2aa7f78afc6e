"""MCQA questions: the JSONL format `scripts.eval_mcqa` reads (one question per line) and its loader."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from audio_adapter.processing.tokenizer import control_tokens_in
from recipes.inference.common import (
    audio_seconds,
)


# ------------------------------------------------------------------------------------------ data
@dataclass
class MCQAItem:
    """One question: the clip, the question, its choices and the 0-based index of the right one."""

    key: str
    audio: str
    question: str
    choices: list[str]
    answer: int
    seconds: float


def load_mcqa(path: str | os.PathLike, limit: int | None = None) -> list[MCQAItem]:
    """Read an MCQA JSONL file (schema in the module docstring). Raises ValueError naming the bad line."""
    path = Path(path)
    items: list[MCQAItem] = []
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is reported with its number, like any other
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(items) >= limit:
                break
            try:
                record = json.loads(line.decode("utf-8"))
                items.append(_item(record, path.parent, line_no))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: bad MCQA record: {exc}") from None
    if not items:
        raise ValueError(f"{path}: no MCQA records")
    return items


def _check_encodable(name: str, text: str) -> None:
    """ValueError unless ``text`` is valid Unicode: JSON can escape a lone surrogate (``"\\ud800"``) that no
    UTF-8 file, tokenizer or path can hold, and it would fail far from its line otherwise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise ValueError(
            f"{name} holds {bad} at character {exc.start}, a lone surrogate (half of a UTF-16 pair), not text; "
            "fix the JSON escape"
        ) from None


def _item(record: dict, base: Path, line_no: int) -> MCQAItem:
    missing = [k for k in ("audio", "question", "choices", "answer") if k not in record]
    if missing:
        raise KeyError(f"missing fields {missing}")
    choices = record["choices"]
    if not isinstance(choices, list) or not 2 <= len(choices) <= 9 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"choices must be a list of 2-9 strings, got {choices!r}")
    answer = record["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise ValueError(f"answer must be a 0-based index into choices, got {answer!r}")
    fields = {"key": record.get("key", ""), "audio": record["audio"], "question": record["question"]}
    fields.update({f"choice {i + 1}": c for i, c in enumerate(choices)})
    for name, text in fields.items():
        _check_encodable(name, str(text))
    audio = Path(record["audio"])
    audio = audio if audio.is_absolute() else base / audio
    for text in [str(record["question"]), *choices]:
        found = control_tokens_in(text)
        if found:
            raise ValueError(
                f"question or choice holds the control token(s) {found}: they would be parsed as chat structure"
            )
    seconds = record.get("seconds")
    if seconds is not None:
        seconds = float(seconds)
    else:
        try:
            seconds = audio_seconds(audio)
        except (OSError, RuntimeError, ValueError):  # missing / unreadable: recorded as such when evaluated
            seconds = math.nan
    return MCQAItem(
        key=str(record.get("key", line_no)),
        audio=str(audio),
        question=str(record["question"]),
        choices=list(choices),
        answer=answer,
        seconds=seconds,
    )
