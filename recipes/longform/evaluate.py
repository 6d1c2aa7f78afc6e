"""Steps 3 and 4 of `scripts.longform`: the evaluation grid (method x length x question, one ``results.jsonl``
line per cell as it is done; a re-run skips the cells already there) and the Partial YaRN sweep at the longest
length (kept in ``sweep.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from recipes.common.atomic import atomic_write_text
from recipes.longform.cache import progress_bar
from recipes.longform.task import QUESTIONS, TOKENS_PER_ITEM, Method, TaskTokens, accuracy

if TYPE_CHECKING:
    from recipes.longform.config import LongformConfig


def methods_for(kind: str, cutoff: int) -> list[Method]:
    """The extensions a run of ``kind`` is evaluated with (VLAT runs: none and partial_pi)."""
    if kind in ("vlat", "vlat_mix"):
        return [Method("none"), Method("partial_pi")]
    return [
        Method("none"),
        Method("partial_pi"),
        Method("partial_yarn", cutoff, 1.0),
        Method("whole_pi"),
        Method("whole_yarn"),
    ]


def load_done(path: Path) -> dict[tuple, dict]:
    """The cells of ``results.jsonl`` by (run, method, items, question); a line cut by a crash is skipped."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: that cell is simply redone
                continue
            done[(row["run"], row["method"], row["items"], row["question"])] = row
    return done


def evaluate_run(
    cfg: LongformConfig,
    run: dict,
    model,
    tokens: TaskTokens,
    cache: dict,
    cutoff: int,
    done: dict,
    results_path: Path,
    console: Console,
) -> None:
    """Evaluate every cell of ``run`` not in ``done``, appending each to ``results_path`` (and to ``done``)."""
    methods = methods_for(run["kind"], cutoff)
    cells = [(m, n, q) for m in methods for n in cfg.eval_items for q in QUESTIONS]
    todo = [c for c in cells if (run["name"], c[0].label, c[1], c[2]) not in done]
    base_seconds = cfg.base_tokens / model.config.audio_tokens_per_second
    with progress_bar(console) as progress, open(results_path, "a") as f:
        task = progress.add_task(f"evaluate {run['name']}", total=len(todo))
        for method, n, question in todo:
            method.apply(model, base_seconds)
            ev = cache["eval"][n]
            correct, total = accuracy(model, tokens, ev["frames"], ev["items"], question)
            row = {
                "run": run["name"],
                "kind": run["kind"],
                "seed": run["seed"],
                "method": method.label,
                "items": n,
                "audio_tokens": n * TOKENS_PER_ITEM,
                "seconds": n * TOKENS_PER_ITEM / model.config.audio_tokens_per_second,
                "question": question,
                "correct": correct,
                "n": total,
                "accuracy": correct / total,
            }
            f.write(json.dumps(row) + "\n")
            f.flush()
            done[(run["name"], method.label, n, question)] = row
            progress.advance(task)
    Method("none").apply(model, base_seconds)


def run_sweep_at_longest(cfg: LongformConfig, model, tokens: TaskTokens, cache: dict, out: Path, console: Console):
    """Partial YaRN accuracy (all questions) over ``cfg``'s cutoff x temperature grid at the longest length:
    `scripts.sweep`'s CSV, heatmap and table; reused from ``sweep.json`` when the grid is unchanged."""
    from recipes.evaluation.sweep import SweepPoint, plot_heatmap, sweep_table, write_csv

    n = max(cfg.eval_items)
    done_path = out / "sweep.json"
    grid = [(c, t) for c in cfg.sweep_cutoffs for t in cfg.sweep_temperatures]
    if done_path.is_file():
        points = [SweepPoint(**p) for p in json.loads(done_path.read_text())]
        if [(p.cutoff, p.temperature) for p in points] == grid:
            console.print(sweep_table(points))
            return points
    ev = cache["eval"][n]
    base_seconds = cfg.base_tokens / model.config.audio_tokens_per_second
    points = []
    with progress_bar(console) as progress:
        task = progress.add_task(f"sweep at {n} items", total=len(grid))
        for c, t in grid:
            Method("partial_yarn", c, t).apply(model, base_seconds)
            correct = total = 0
            for q in QUESTIONS:
                k, m = accuracy(model, tokens, ev["frames"], ev["items"], q)
                correct, total = correct + k, total + m
            points.append(SweepPoint(c, t, correct / total, total, correct, 0))
            progress.advance(task)
    Method("none").apply(model, base_seconds)
    atomic_write_text(done_path, json.dumps([asdict(p) for p in points]))
    write_csv(points, out / "sweep.csv")
    plot_heatmap(points, out / "sweep.png", title=f"partial_yarn at 8x T ({n * TOKENS_PER_ITEM} tokens), all questions")
    console.print(sweep_table(points))
    return points
