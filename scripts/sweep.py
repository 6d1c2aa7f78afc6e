"""Partial YaRN hyper-parameter sweep: MCQA accuracy over a cutoff x temperature grid.

    python -m scripts.sweep --model ckpt/ --data mcqa_5min.jsonl --base-audio-seconds 120 --out sweep/

Defaults are the paper's grid (App. D.2): cutoff in {56, 48, 40, 32, 24, 16, 8} (for head_dim 128) and
temperature 0.5..1.6 step 0.1; override with ``--cutoffs`` / ``--temperatures`` (a model with a smaller
head needs smaller cutoffs: at most head_dim / 2). Each grid point runs `recipes.evaluation.mcqa.evaluate_mcqa`
with ``partial_yarn`` at that (cutoff, temperature). Writes ``sweep.csv`` (cutoff, temperature, accuracy, n,
correct, invalid, unreadable) and ``sweep.png``, a heatmap like the paper's Figures 5-8 (temperature on x,
cutoff on y, high cutoffs at the bottom; the best cell outlined).

Crash-safe like `scripts.eval_mcqa`, through the same code: each grid point journals its answers under
``--out/points/c<cutoff>_t<temperature>/`` as they come (distinct values, distinct folders), and ``sweep.csv``
is rewritten atomically after every point. Re-running with the same ``--out`` reuses every answer already given
and asks only what is missing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from recipes.evaluation.mcqa import add_eval_args, check_eval_args, run_settings
from recipes.evaluation.mcqa_items import load_mcqa
from recipes.evaluation.sweep import (
    PAPER_CUTOFFS,
    PAPER_TEMPERATURES,
    SweepPoint,
    check_distinct,
    plot_heatmap,
    run_sweep,
    sweep_table,
    temperature_label,
    write_csv,
)
from recipes.inference.common import add_model_args, load_model_and_processor


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_eval_args(parser)
    parser.add_argument("--cutoffs", type=int, nargs="+", default=list(PAPER_CUTOFFS))
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(PAPER_TEMPERATURES))
    parser.add_argument("--base-audio-seconds", type=float, default=30.0, help="audio length stretched from")
    parser.add_argument("--out", default="sweep", help="output directory (sweep.csv, sweep.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> list[SweepPoint]:
    """CLI entry: run the grid, print it, write CSV + heatmap; returns the points."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_eval_args(parser, args)
    try:
        check_distinct(args.cutoffs, args.temperatures)
    except ValueError as exc:
        parser.error(str(exc))
    console = Console()
    items = load_mcqa(args.data, limit=args.limit)
    model, processor = load_model_and_processor(args.model, device=args.device, dtype=args.dtype)
    head_dim = model.model.language_model.rotary_emb.inv_freq.numel() * 2
    too_big = [c for c in args.cutoffs if c > head_dim // 2]
    if too_big:
        parser.error(f"cutoffs {too_big} exceed head_dim // 2 = {head_dim // 2} for this model; pass --cutoffs")
    points = run_sweep(
        model,
        processor,
        items,
        cutoffs=args.cutoffs,
        temperatures=args.temperatures,
        base_audio_seconds=args.base_audio_seconds,
        show_progress=not args.no_progress,
        console=console,
        out_dir=args.out,
        settings=run_settings(args, model),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        bucket_edges=args.bucket_edges,
        instruction=args.instruction,
    )
    out = Path(args.out)
    csv_path = write_csv(points, out / "sweep.csv")
    title = f"{Path(args.data).name}: partial_yarn from {args.base_audio_seconds:g}s (n={len(items)})"
    png_path = plot_heatmap(points, out / "sweep.png", title=title)
    console.print(sweep_table(points))
    best = max(points, key=lambda p: p.accuracy)
    console.print(
        f"best: cutoff {best.cutoff}, temperature {temperature_label(best.temperature)} -> {best.accuracy:.3f}; "
        f"{csv_path}, {png_path}"
    )
    return points


if __name__ == "__main__":
    main()
