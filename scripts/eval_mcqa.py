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
answer) and ends with the same results as an uninterrupted run; a re-run whose model folder, the weights in it
(another model saved there since), ``--dtype``, instruction, ``--max-new-tokens`` or extension differ is
refused. A clip that cannot be read (missing, undecodable) does not
stop the run: its question is recorded under ``unreadable`` (key, path, error; counted in the summary, not in
the accuracy) and asked again on the next re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from audio_adapter.audio_lengths import SAMPLING_RATE
from audio_adapter.tokenizer import control_tokens_in
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
)
from scripts._journal import weights_fingerprint
from scripts._mcqa_results import results_table
from scripts._mcqa_run import MCQARun, answer_all
from scripts._mcqa_scoring import DEFAULT_BUCKET_EDGES, MCQAResult

MCQA_INSTRUCTION = (
    "Using information from the given audio, answer the question. Your answer MUST be in the format "
    '"(NUMBER) STATEMENT": for example, if the answer were (4) A pen, you would ONLY output "(4) A pen". '
    "Do NOT include any other text.\n{question}"
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


# ------------------------------------------------------------------------------------------ prompt
def question_text(question: str, choices: Sequence[str], instruction: str = MCQA_INSTRUCTION) -> str:
    """The user text of one question: instruction, question, choices numbered (1)..(n)."""
    body = "\n".join([question] + [f"({i + 1}) {c}" for i, c in enumerate(choices)])
    return instruction.replace("{question}", body)


# ------------------------------------------------------------------------------------------ evaluation
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
    the summary files (`scripts._mcqa_results.write_results`, with ``settings``) are rewritten atomically every
    `scripts._mcqa_run.SUMMARY_EVERY_SECONDS`, at the end, and when the run stops on an error. Questions
    already answered in that journal are not asked again (their answers are reused), so a re-run after a crash
    completes the same result.
    Raises ValueError when the journal belongs to a run with other `scripts._mcqa_run.RESUME_KEYS` settings."""
    respond = respond or answer_batch
    extension = model.context_extension.to_dict() if hasattr(model, "context_extension") else {}
    run_settings = {
        **(settings or {}),
        "instruction": instruction,
        "max_new_tokens": max_new_tokens,
        "extension": extension,
    }
    run = MCQARun(items, bucket_edges, extension, run_settings, out_dir)

    def ask(batch: list[MCQAItem], audio: list[np.ndarray]) -> list[str]:
        return respond(model, processor, batch, audio, instruction=instruction, max_new_tokens=max_new_tokens)

    audio_cache = {} if audio_cache is None else audio_cache
    return answer_all(run, ask, batch_size, audio_cache, show_progress=show_progress, console=console)


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


def run_settings(args: argparse.Namespace, model) -> dict:
    """The settings a CLI run records in its journal: the model folder, the weights it holds now and the dtype
    they run in (a re-run with other weights or another ``--dtype`` is refused, not mixed in), the data."""
    return {
        "model": str(Path(args.model).resolve()),
        "weights": weights_fingerprint(args.model),
        "dtype": str(model.dtype).removeprefix("torch."),
        "data": str(args.data),
        "batch_size": args.batch_size,
    }


def main(argv: Sequence[str] | None = None) -> MCQAResult:
    """CLI entry: evaluate, print the table, write the results; returns the `MCQAResult`."""
    parser = build_parser()
    args = parse_with_extension(parser, argv)
    check_eval_args(parser, args)
    console = Console()
    items = load_mcqa(args.data, limit=args.limit)
    model, processor = load_model_and_processor(args.model, device=args.device, dtype=args.dtype)
    extension = apply_extension_args(model, args)
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
        settings=run_settings(args, model),
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
