"""Four-choice audio question answering, as the paper evaluates YODAS2-MCQA: the prompt, the batched answers, and
`evaluate_mcqa` (crash-safe through `recipes.evaluation.mcqa_run`), shared by `scripts.eval_mcqa` and
`scripts.sweep`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from audio_adapter.encoders.whisper import SAMPLING_RATE
from recipes.common.journal import weights_fingerprint
from recipes.evaluation.mcqa_items import MCQAItem
from recipes.evaluation.mcqa_run import MCQARun, answer_all
from recipes.evaluation.mcqa_scoring import DEFAULT_BUCKET_EDGES, MCQAResult
from recipes.inference.common import (
    chat_prompt,
    check_cli_text,
)

MCQA_INSTRUCTION = (
    "Using information from the given audio, answer the question. Your answer MUST be in the format "
    '"(NUMBER) STATEMENT": for example, if the answer were (4) A pen, you would ONLY output "(4) A pen". '
    "Do NOT include any other text.\n{question}"
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
    the summary files (`recipes.evaluation.mcqa_results.write_results`, with ``settings``) are rewritten atomically
    every `recipes.evaluation.mcqa_run.SUMMARY_EVERY_SECONDS`, at the end, and when the run stops on an error. Questions
    already answered in that journal are not asked again (their answers are reused), so a re-run after a crash
    completes the same result.
    Raises ValueError when the journal belongs to a run with other `recipes.evaluation.mcqa_run.RESUME_KEYS`
    settings."""
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
