"""Outputs of `scripts.longform`: seed aggregates, ``longform.csv``, the printed table and ``longform.png``
(accuracy against audio length, a panel per question)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from recipes.common.atomic import atomic_open
from recipes.longform.task import ITEM_NAMES, ITEM_SECONDS, ITEMS_PER_WINDOW, QUESTIONS

if TYPE_CHECKING:
    from recipes.longform.config import LongformConfig


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean, min and max over seeds of every (kind, method, items, question)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["method"], r["items"], r["question"]), []).append(r["accuracy"])
    out = []
    for (kind, method, items, question), accs in groups.items():
        out.append(
            {
                "kind": kind,
                "method": method,
                "items": items,
                "question": question,
                "seeds": len(accs),
                "mean": sum(accs) / len(accs),
                "min": min(accs),
                "max": max(accs),
            }
        )
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as a CSV (header from the first row), written atomically."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def result_table(agg: list[dict], cfg: LongformConfig) -> Table:
    """Accuracy per (trained kind, method, question) and audio length: mean over seeds [min-max]."""
    table = Table(title="accuracy (mean over seeds [min-max]); chance 0.125; T = 64 audio tokens = 5.12 s")
    table.add_column("trained")
    table.add_column("method")
    table.add_column("question")
    for n in cfg.eval_items:
        table.add_column(f"{n // ITEMS_PER_WINDOW}x ({n * ITEM_SECONDS:.1f} s)", justify="right")
    keyed = {(r["kind"], r["method"], r["items"], r["question"]): r for r in agg}
    order = []
    for r in agg:
        key = (r["kind"], r["method"], r["question"])
        if key not in order:
            order.append(key)
    kinds = ("vanilla", "vlat", "vlat_mix")
    order.sort(key=lambda k: (kinds.index(k[0]), k[1] != "none", k[1], QUESTIONS.index(k[2])))
    for kind, method, question in order:
        cells = []
        for n in cfg.eval_items:
            r = keyed.get((kind, method, n, question))
            if r is None:
                cells.append("-")
            elif r["seeds"] > 1:
                cells.append(f"{r['mean']:.2f} [{r['min']:.2f}-{r['max']:.2f}]")
            else:
                cells.append(f"{r['mean']:.2f}")
        table.add_row(kind, method, question, *cells)
    return table


def plot(agg: list[dict], cfg: LongformConfig, path: Path) -> None:
    """``longform.png``: accuracy against audio length, one line per (kind, method), a panel per question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(QUESTIONS), figsize=(15, 4.4), sharey=True)
    lines = sorted(
        {(r["kind"], r["method"]) for r in agg}, key=lambda k: (("vanilla", "vlat", "vlat_mix").index(k[0]), k[1])
    )
    seconds = [n * ITEM_SECONDS for n in cfg.eval_items]
    for ax, question in zip(axes, QUESTIONS):
        for kind, method in lines:
            rows = {
                r["items"]: r for r in agg if r["kind"] == kind and r["method"] == method and r["question"] == question
            }
            ys = [rows[n]["mean"] if n in rows else float("nan") for n in cfg.eval_items]
            lo = [rows[n]["min"] if n in rows else float("nan") for n in cfg.eval_items]
            hi = [rows[n]["max"] if n in rows else float("nan") for n in cfg.eval_items]
            style = {"vlat": "--", "vlat_mix": ":"}.get(kind, "-")
            (line,) = ax.plot(seconds, ys, style, marker="o", label=f"{kind}: {method}")
            ax.fill_between(seconds, lo, hi, color=line.get_color(), alpha=0.12)
        ax.axvline(ITEMS_PER_WINDOW * ITEM_SECONDS, color="gray", lw=0.8, ls=":")
        ax.axhline(1 / len(ITEM_NAMES), color="gray", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(seconds, [f"{s:.1f}" for s in seconds])
        ax.set(title=f"question: {question}", xlabel="audio length, s (trained T = 5.12 s, dotted)", ylim=(0, 1.03))
    axes[0].set_ylabel("accuracy (8 choices; chance 0.125)")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
