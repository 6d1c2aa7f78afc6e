"""The journal-driven question loop of `recipes.evaluation.mcqa.evaluate_mcqa` (and so of `scripts.sweep`).

Every answer is appended to ``out_dir/predictions.jsonl`` (a `recipes.common.journal.Journal`) as it comes; the
summary files are rewritten every `SUMMARY_EVERY_SECONDS`, at the end and after an error. A re-run with the same
``out_dir`` reuses the answers there (matched by `item_id`) and asks only the questions still missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from audio_adapter.encoders.whisper import SAMPLING_RATE
from recipes.common.journal import Journal
from recipes.evaluation.mcqa_results import write_results
from recipes.evaluation.mcqa_scoring import MCQAResult, score_response
from recipes.inference.common import read_audio

if TYPE_CHECKING:
    from recipes.evaluation.mcqa_items import MCQAItem

JOURNAL = "predictions.jsonl"
# must match to resume a run's journal ("weights": `recipes.common.journal.weights_fingerprint` of the --model folder)
RESUME_KEYS = ("model", "weights", "dtype", "instruction", "max_new_tokens", "extension")
SUMMARY_EVERY_SECONDS = 10.0  # rewrite results.json / *.csv at most this often while answering

# (questions, their 16 kHz waveforms) -> one response each
Ask = Callable[[list["MCQAItem"], list[np.ndarray]], list[str]]


def item_id(item: MCQAItem) -> str:
    """Resume key of a question: its key, clip path, question, choices and answer (a changed one is asked again)."""
    blob = json.dumps([item.key, item.audio, item.question, item.choices, item.answer], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def read_cached(path: str, audio_cache: dict) -> np.ndarray | Exception:
    """The 16 kHz waveform of ``path``, or the error that reading it raised (cached too: read once a run)."""
    if path not in audio_cache:
        try:
            audio_cache[path] = read_audio(path)
        except (OSError, ValueError) as exc:
            audio_cache[path] = exc
    return audio_cache[path]


class MCQARun:
    """One evaluation's state: the answers so far (read back from the journal in ``out_dir`` when there is one),
    the unreadable clips, and the summary files written from them.

    Raises ValueError when the journal belongs to a run with other `RESUME_KEYS` settings."""

    def __init__(
        self,
        items: Sequence[MCQAItem],
        bucket_edges: Sequence[float],
        extension: dict,
        settings: dict,
        out_dir: str | os.PathLike | None = None,
    ):
        self.items = list(items)
        self.ids = [item_id(it) for it in self.items]
        self.bucket_edges = list(bucket_edges)
        self.extension = extension
        self.settings = settings
        self.out_dir = out_dir
        self.answered: dict[str, tuple[str, float]] = {}  # id -> (response, seconds)
        self.unreadable: dict[str, dict] = {}
        self.journal = Journal(Path(out_dir) / JOURNAL, settings, RESUME_KEYS) if out_dir is not None else None
        if self.journal is not None:
            wanted = set(self.ids)
            for record in self.journal.records:
                if record.get("type") == "prediction" and record.get("id") in wanted:
                    self.answered[record["id"]] = (record["response"], float(record["seconds"]))

    def result(self) -> MCQAResult:
        """The predictions so far in ``items`` order, and the unreadable clips not answered since."""
        predictions = [
            score_response(it, *self.answered[i], self.bucket_edges)
            for it, i in zip(self.items, self.ids)
            if i in self.answered
        ]
        lost = [self.unreadable[i] for i in dict.fromkeys(self.ids) if i in self.unreadable and i not in self.answered]
        return MCQAResult(
            predictions=predictions,
            bucket_edges=list(self.bucket_edges),
            extension=self.extension,
            unreadable=[{k: u[k] for k in ("key", "audio", "error")} for u in lost],
            n_items=len(self.items),
        )

    def todo(self) -> list[int]:
        """Indices of the questions not answered yet, longest clip first (less padding in a batch)."""

        def length(i: int) -> float:
            return self.items[i].seconds if math.isfinite(self.items[i].seconds) else 0.0

        return sorted((i for i in range(len(self.items)) if self.ids[i] not in self.answered), key=lambda i: -length(i))

    def record_unreadable(self, i: int, error: Exception) -> None:
        item = self.items[i]
        record = {"type": "unreadable", "id": self.ids[i], "key": item.key, "audio": item.audio, "error": str(error)}
        self.unreadable[self.ids[i]] = record
        if self.journal is not None:
            self.journal.append(record)

    def record_answers(self, batch: list[int], texts: list[str], audio_cache: dict) -> None:
        """Keep (and journal) the responses ``texts`` to the questions ``batch``."""
        if len(texts) != len(batch):
            raise RuntimeError(f"got {len(texts)} responses for a batch of {len(batch)} questions")
        for i, text in zip(batch, texts):
            item = self.items[i]
            seconds = item.seconds
            if not math.isfinite(seconds):  # the header could not tell; the decoded clip can
                seconds = len(audio_cache[item.audio]) / SAMPLING_RATE
            self.answered[self.ids[i]] = (text, seconds)
            if self.journal is not None:
                prediction = score_response(item, text, seconds, self.bucket_edges)
                self.journal.append({"type": "prediction", "id": self.ids[i], **asdict(prediction)})

    def write_summary(self) -> None:
        if self.out_dir is not None:
            write_results(self.result(), self.out_dir, self.settings)

    def close(self) -> None:
        """Close the journal and write the summary files (also after an error: the answers so far)."""
        if self.journal is not None:
            self.journal.close()
            self.write_summary()


def _progress(console: Console | None, show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]MCQA"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=False,
    )


def answer_all(
    run: MCQARun,
    ask: Ask,
    batch_size: int,
    audio_cache: dict[str, np.ndarray | Exception],
    show_progress: bool = True,
    console: Console | None = None,
) -> MCQAResult:
    """Ask ``run``'s missing questions in batches of ``batch_size`` (a clip that cannot be read is recorded,
    not asked), rewriting the summary files every `SUMMARY_EVERY_SECONDS`; closes ``run``."""
    items, order = run.items, run.todo()
    last_write = time.monotonic()
    try:
        with _progress(console, show_progress) as progress:
            task = progress.add_task("mcqa", total=len(items), completed=len(items) - len(order))
            batch: list[int] = []
            for n_seen, i in enumerate(order, 1):
                audio = read_cached(items[i].audio, audio_cache)
                if isinstance(audio, Exception):
                    run.record_unreadable(i, audio)
                    progress.advance(task)
                else:
                    batch.append(i)
                if len(batch) == batch_size or (batch and n_seen == len(order)):
                    texts = ask([items[j] for j in batch], [audio_cache[items[j].audio] for j in batch])
                    run.record_answers(batch, texts, audio_cache)
                    progress.advance(task, len(batch))
                    batch = []
                    if run.out_dir is not None and time.monotonic() - last_write >= SUMMARY_EVERY_SECONDS:
                        run.write_summary()
                        last_write = time.monotonic()
    finally:
        run.close()
    return run.result()
