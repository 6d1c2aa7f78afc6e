"""Four-choice audio question answering accuracy, as the paper evaluates YODAS2-MCQA.

    python -m scripts.eval_mcqa --model ckpt/ --data mcqa.jsonl --out results/ \\
        --method partial_yarn --cutoff 32 --temperature 1.2 --base-audio-seconds 120

Data: JSONL, one question per line (this is what `recipes.synthetic.make_mcqa_dataset` writes)::

    {"key": "q0", "audio": "clips/a.flac", "question": "Who speaks first?",
     "choices": ["Ann", "Bob", "Cy", "Di"], "answer": 2}

- ``audio``: path to the clip, absolute or relative to the JSONL file's directory;
- ``question``: the question text; ``choices``: 2-9 strings (the paper: 4);
- ``answer``: 0-based index of the right choice (the model answers with the 1-based number, "(3) Cy");
- optional ``key`` (default: line number) and ``seconds`` (clip length; default: read from the file header).
Other fields (``kind``, ``prompt``, ``response``, ...) are ignored.

Prompt: an instruction to answer in the form "(NUMBER) STATEMENT", the question, then the choices numbered
"(1) ..." to "(4) ...". The answer is the first match of the paper's regex ``\\((\\d)\\)`` in the response;
a response without a match, or with a number outside 1..len(choices), is *invalid* and counts as wrong
(``accuracy`` = correct / all, as the authors' script computes it; ``accuracy_parsable`` = correct / valid is
reported too). Accuracy is broken down by audio-length bucket (``--bucket-edges``, seconds; default the
paper's 1/2/5/10-minute lengths). Writes ``results.json`` (summary, settings, every prediction),
``predictions.csv`` and ``buckets.csv`` to ``--out``.

Nothing is lost on a crash: every answer is appended to ``--out/predictions.jsonl`` (flushed and fsynced per
item) as it is generated, and the summary files are rewritten atomically every few seconds and at the end (also
when the run stops on an error), with ``"complete": false`` until every question is done. Re-running with the
same ``--out`` asks only the questions not yet answered (matched by key, clip path, question, choices and
answer) and ends with the same results as an uninterrupted run; a re-run whose model, instruction,
``--max-new-tokens`` or extension differ is refused. A clip that cannot be read (missing, undecodable) does not
stop the run: its question is recorded under ``unreadable`` (key, path, error; counted in the summary, not in
the accuracy) and asked again on the next re-run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audio_adapter.audio_lengths import SAMPLING_RATE
from audio_adapter.tokenizer import control_tokens_in
from recipes.atomic import atomic_write_text
from scripts._common import (
    add_extension_args,
    add_model_args,
    apply_extension_args,
    audio_seconds,
    chat_prompt,
    check_cli_text,
    extension_label,
    load_model_and_processor,
    parse_with_extension,
    read_audio,
)
from scripts._journal import Journal

ANSWER_PATTERN = re.compile(r"\((\d)\)")  # the paper's answer regex
MCQA_INSTRUCTION = (
    "Using information from the given audio, answer the question. Your answer MUST be in the format "
    '"(NUMBER) STATEMENT": for example, if the answer were (4) A pen, you would ONLY output "(4) A pen". '
    "Do NOT include any other text.\n{question}"
)
DEFAULT_BUCKET_EDGES = (60.0, 120.0, 300.0, 600.0)  # the paper's 1, 2, 5, 10 minute test sets
JOURNAL = "predictions.jsonl"
RESUME_KEYS = ("model", "instruction", "max_new_tokens", "extension")  # must match to resume a run's journal
SUMMARY_EVERY_SECONDS = 10.0  # rewrite results.json / *.csv at most this often while answering


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
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(items) >= limit:
                break
            try:
                record = json.loads(line)
                items.append(_item(record, path.parent, line_no))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: bad MCQA record: {exc}") from None
    if not items:
        raise ValueError(f"{path}: no MCQA records")
    return items


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


# ------------------------------------------------------------------------------------------ prompt, parsing
def question_text(question: str, choices: Sequence[str], instruction: str = MCQA_INSTRUCTION) -> str:
    """The user text of one question: instruction, question, choices numbered (1)..(n)."""
    body = "\n".join([question] + [f"({i + 1}) {c}" for i, c in enumerate(choices)])
    return instruction.replace("{question}", body)


def parse_answer(response: str, n_choices: int = 4) -> int | None:
    """The 1-based choice number of the first ``(d)`` in ``response``; None when there is none or it is
    outside 1..n_choices (an invalid answer)."""
    match = ANSWER_PATTERN.search(response)
    if match is None:
        return None
    number = int(match.group(1))
    return number if 1 <= number <= n_choices else None


# ------------------------------------------------------------------------------------------ buckets
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


# ------------------------------------------------------------------------------------------ evaluation
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


def answer_batch(
    model,
    processor,
    items: Sequence[MCQAItem],
    audio: Sequence[np.ndarray],
    instruction: str = MCQA_INSTRUCTION,
    max_new_tokens: int = 32,
) -> list[str]:
    """Greedy responses to a batch of questions (one left-padded ``generate`` call)."""
    prompts = [chat_prompt(processor, question_text(it.question, it.choices, instruction)) for it in items]
    inputs = processor(
        text=prompts,
        audio=list(audio),
        sampling_rate=SAMPLING_RATE,
        return_tensors="pt",
        padding=True,
        padding_side="left",
    ).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])


def item_id(item: MCQAItem) -> str:
    """Resume key of a question: its key, clip path, question, choices and answer (a changed one is asked again)."""
    blob = json.dumps([item.key, item.audio, item.question, item.choices, item.answer], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def _read_cached(path: str, audio_cache: dict) -> np.ndarray | Exception:
    """The 16 kHz waveform of ``path``, or the error that reading it raised (cached too: read once a run)."""
    if path not in audio_cache:
        try:
            audio_cache[path] = read_audio(path)
        except (OSError, ValueError) as exc:
            audio_cache[path] = exc
    return audio_cache[path]


def _prediction(item: MCQAItem, response: str, seconds: float, bucket_edges: Sequence[float]) -> Prediction:
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


def evaluate_mcqa(
    model,
    processor,
    items: Sequence[MCQAItem],
    batch_size: int = 8,
    max_new_tokens: int = 32,
    bucket_edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    instruction: str = MCQA_INSTRUCTION,
    audio_cache: dict[str, np.ndarray | Exception] | None = None,
    show_progress: bool = True,
    console: Console | None = None,
    respond: Callable[..., list[str]] | None = None,
    out_dir: str | os.PathLike | None = None,
    settings: dict | None = None,
) -> MCQAResult:
    """Answer every question with the model's current context extension and score the answers.

    Questions are batched longest-first (less padding); predictions come back in ``items`` order. A clip that
    cannot be read is listed in ``result.unreadable`` instead of stopping the run. ``audio_cache`` (path ->
    16 kHz waveform, or the read error) is filled and reused, e.g. across a sweep. ``respond`` replaces
    `answer_batch` (same signature) — for tests and custom decoding.

    With ``out_dir``: each answer is appended to ``out_dir/predictions.jsonl`` as it comes (flushed, fsynced);
    the summary files (`write_results`, with ``settings``) are rewritten atomically every
    `SUMMARY_EVERY_SECONDS`, at the end, and when the run stops on an error. Questions already answered in that
    journal are not asked again (their answers are reused), so a re-run after a crash completes the same result.
    Raises ValueError when the journal belongs to a run with other `RESUME_KEYS` settings."""
    respond = respond or answer_batch
    audio_cache = {} if audio_cache is None else audio_cache
    extension = model.context_extension.to_dict() if hasattr(model, "context_extension") else {}
    run_settings = {
        **(settings or {}),
        "instruction": instruction,
        "max_new_tokens": max_new_tokens,
        "extension": extension,
    }
    ids = [item_id(it) for it in items]
    answered: dict[str, tuple[str, float]] = {}  # id -> (response, seconds)
    unreadable: dict[str, dict] = {}
    journal = Journal(Path(out_dir) / JOURNAL, run_settings, RESUME_KEYS) if out_dir is not None else None
    if journal is not None:
        wanted = set(ids)
        for record in journal.records:
            if record.get("type") == "prediction" and record.get("id") in wanted:
                answered[record["id"]] = (record["response"], float(record["seconds"]))

    def result() -> MCQAResult:
        predictions = [_prediction(it, *answered[i], bucket_edges) for it, i in zip(items, ids) if i in answered]
        lost = [unreadable[i] for i in dict.fromkeys(ids) if i in unreadable and i not in answered]
        return MCQAResult(
            predictions=predictions,
            bucket_edges=list(bucket_edges),
            extension=extension,
            unreadable=[{k: u[k] for k in ("key", "audio", "error")} for u in lost],
            n_items=len(items),
        )

    def answer(batch: list[int]) -> None:
        texts = respond(
            model,
            processor,
            [items[i] for i in batch],
            [audio_cache[items[i].audio] for i in batch],
            instruction=instruction,
            max_new_tokens=max_new_tokens,
        )
        if len(texts) != len(batch):
            raise RuntimeError(f"got {len(texts)} responses for a batch of {len(batch)} questions")
        for i, text in zip(batch, texts):
            seconds = items[i].seconds
            if not math.isfinite(seconds):  # the header could not tell; the decoded clip can
                seconds = len(audio_cache[items[i].audio]) / SAMPLING_RATE
            answered[ids[i]] = (text, seconds)
            if journal is not None:
                journal.append(
                    {"type": "prediction", "id": ids[i], **asdict(_prediction(items[i], text, seconds, bucket_edges))}
                )

    def length(i: int) -> float:
        return items[i].seconds if math.isfinite(items[i].seconds) else 0.0

    order = sorted((i for i in range(len(items)) if ids[i] not in answered), key=lambda i: -length(i))
    progress = Progress(
        TextColumn("[bold]MCQA"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    last_write = time.monotonic()
    try:
        with progress:
            task = progress.add_task("mcqa", total=len(items), completed=len(items) - len(order))
            batch: list[int] = []
            for n_seen, i in enumerate(order, 1):
                audio = _read_cached(items[i].audio, audio_cache)
                if isinstance(audio, Exception):
                    record = {
                        "type": "unreadable",
                        "id": ids[i],
                        "key": items[i].key,
                        "audio": items[i].audio,
                        "error": str(audio),
                    }
                    unreadable[ids[i]] = record
                    if journal is not None:
                        journal.append(record)
                    progress.advance(task)
                else:
                    batch.append(i)
                if len(batch) == batch_size or (batch and n_seen == len(order)):
                    answer(batch)
                    progress.advance(task, len(batch))
                    batch = []
                    if out_dir is not None and time.monotonic() - last_write >= SUMMARY_EVERY_SECONDS:
                        write_results(result(), out_dir, run_settings)
                        last_write = time.monotonic()
    finally:
        if journal is not None:
            journal.close()
            write_results(result(), out_dir, run_settings)  # also after an error: the answers so far
    return result()


# ------------------------------------------------------------------------------------------ reporting
def results_table(result: MCQAResult, title: str = "MCQA accuracy") -> Table:
    """A rich table: one row per non-empty length bucket, then the total."""
    table = Table(title=title)
    for name in ("bucket", "n", "correct", "invalid", "accuracy"):
        table.add_column(name, justify="left" if name == "bucket" else "right")
    for row in result.by_bucket():
        table.add_row(row["bucket"], str(row["n"]), str(row["correct"]), str(row["invalid"]), f"{row['accuracy']:.3f}")
    table.add_row(
        "all", str(result.n), str(result.correct), str(result.invalid), f"{result.accuracy:.3f}", style="bold"
    )
    return table


def write_results(result: MCQAResult, out_dir: str | os.PathLike, settings: dict | None = None) -> dict[str, Path]:
    """Write ``results.json`` (summary, settings, predictions, unreadable items), ``predictions.csv`` and
    ``buckets.csv`` under ``out_dir``, each atomically (a crash leaves the previous version); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "predictions": out / "predictions.csv", "buckets": out / "buckets.csv"}
    payload = {
        "summary": result.summary(),
        "settings": settings or {},
        "predictions": [asdict(p) for p in result.predictions],
        "unreadable": list(result.unreadable),
    }
    predictions = io.StringIO(newline="")
    writer = csv.DictWriter(predictions, fieldnames=[k for k in Prediction.__dataclass_fields__])
    writer.writeheader()
    for p in result.predictions:
        writer.writerow(asdict(p))
    buckets = io.StringIO(newline="")
    writer = csv.DictWriter(buckets, fieldnames=["bucket", "n", "correct", "invalid", "accuracy"])
    writer.writeheader()
    for row in result.by_bucket():
        writer.writerow(row)
    writer.writerow(
        {
            "bucket": "all",
            "n": result.n,
            "correct": result.correct,
            "invalid": result.invalid,
            "accuracy": result.accuracy,
        }
    )
    atomic_write_text(paths["predictions"], predictions.getvalue())
    atomic_write_text(paths["buckets"], buckets.getvalue())
    atomic_write_text(paths["json"], json.dumps(payload, indent=2))  # last: its "complete" vouches for the rest
    return paths


# ------------------------------------------------------------------------------------------ CLI
def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Data and decoding options shared with `scripts.sweep`."""
    parser.add_argument("--data", required=True, help="MCQA JSONL (schema: see scripts/eval_mcqa.py)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--bucket-edges",
        type=float,
        nargs="+",
        default=list(DEFAULT_BUCKET_EDGES),
        metavar="SECONDS",
        help="upper edges of the audio-length buckets (default: 60 120 300 600)",
    )
    parser.add_argument("--instruction", default=MCQA_INSTRUCTION, help="prompt template with a {question} field")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_eval_args(parser)
    parser.add_argument(
        "--out",
        default="mcqa_eval",
        help="output directory (predictions.jsonl as it goes, results.json, *.csv); re-run to resume",
    )
    add_extension_args(parser)
    return parser


def check_eval_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if "{question}" not in args.instruction:
        parser.error("--instruction must contain a {question} field")
    check_cli_text(parser, instruction=args.instruction)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if sorted(args.bucket_edges) != list(args.bucket_edges) or len(set(args.bucket_edges)) != len(args.bucket_edges):
        parser.error("--bucket-edges must be strictly increasing")


def main(argv: Sequence[str] | None = None) -> MCQAResult:
    """CLI entry: evaluate, print the table, write the results; returns the `MCQAResult`."""
    parser = build_parser()
    args = parse_with_extension(parser, argv)
    check_eval_args(parser, args)
    console = Console()
    items = load_mcqa(args.data, limit=args.limit)
    model, processor = load_model_and_processor(args.model, device=args.device, dtype=args.dtype)
    extension = apply_extension_args(model, args)
    settings = {"model": str(Path(args.model).resolve()), "data": str(args.data), "batch_size": args.batch_size}
    result = evaluate_mcqa(
        model,
        processor,
        items,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        bucket_edges=args.bucket_edges,
        instruction=args.instruction,
        show_progress=not args.no_progress,
        console=console,
        out_dir=args.out,
        settings=settings,
    )
    console.print(f"{Path(args.data).name}: {result.n} questions, extension {extension_label(extension)}")
    console.print(results_table(result))
    if result.unreadable:
        console.print(
            f"[yellow]{len(result.unreadable)} unreadable clip(s) (not answered, not in the accuracy), listed in "
            f"results.json; fix them and re-run with the same --out to ask only those: "
            + ", ".join(u["key"] for u in result.unreadable[:5])
        )
    json_path = Path(args.out) / "results.json"
    console.print(
        f"accuracy {result.accuracy:.3f} ({result.correct}/{result.n}, {result.invalid} invalid) -> {json_path}"
    )
    return result


if __name__ == "__main__":
    main()
