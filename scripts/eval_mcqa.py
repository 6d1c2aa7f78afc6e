"""Four-choice audio question answering accuracy, as the paper evaluates YODAS2-MCQA.

    python -m scripts.eval_mcqa --model ckpt/ --data mcqa.jsonl --out results/ \\
        --method partial_yarn --cutoff 32 --temperature 1.2 --base-audio-seconds 120

Data: JSONL, one question per line (this is what `recipes.synthetic.datasets.make_mcqa_dataset` writes)::

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
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from recipes.evaluation.mcqa import add_eval_args, check_eval_args, evaluate_mcqa, run_settings
from recipes.evaluation.mcqa_items import load_mcqa
from recipes.evaluation.mcqa_results import results_table
from recipes.evaluation.mcqa_scoring import MCQAResult
from recipes.inference.common import (
    add_extension_args,
    add_model_args,
    apply_extension_args,
    extension_label,
    load_model_and_processor,
    parse_with_extension,
)


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
