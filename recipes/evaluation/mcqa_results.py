"""Outputs of `scripts.eval_mcqa`: ``results.json``, ``predictions.csv`` and ``buckets.csv`` (each written
atomically), and the printed table."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from recipes.common.atomic import atomic_write_text
from recipes.evaluation.mcqa_scoring import MCQAResult, Prediction


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


def _predictions_csv(result: MCQAResult) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=[k for k in Prediction.__dataclass_fields__])
    writer.writeheader()
    for p in result.predictions:
        writer.writerow(asdict(p))
    return text.getvalue()


def _buckets_csv(result: MCQAResult) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["bucket", "n", "correct", "invalid", "accuracy"])
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
    return text.getvalue()


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
    atomic_write_text(paths["predictions"], _predictions_csv(result))
    atomic_write_text(paths["buckets"], _buckets_csv(result))
    atomic_write_text(paths["json"], json.dumps(payload, indent=2))  # last: its "complete" vouches for the rest
    return paths
