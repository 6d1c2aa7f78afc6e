"""The long-form study's steps in order (`scripts.longform` is its CLI): the cache, the runs, the grid, the sweep,
the outputs; each result is written as soon as it exists, so re-running resumes."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console

from recipes.common.atomic import atomic_write_text
from recipes.longform.cache import build_encoder_and_cache
from recipes.longform.config import LongformConfig
from recipes.longform.evaluate import evaluate_run, load_done, run_sweep_at_longest
from recipes.longform.report import aggregate, plot, result_table, write_csv
from recipes.longform.task import TaskTokens, rotary_wavelengths
from recipes.longform.train import check_positions, run_specs, trained_model


def run_longform(cfg: LongformConfig, console: Console | None = None, only: Sequence[str] | None = None) -> dict:
    """Every step of the benchmark (see the module docstring); returns the summary also written as summary.json.

    ``only``: run names (``vanilla_s0``, ``vlat_s1``, ...) to train and evaluate now, e.g. to spread the runs
    over processes sharing ``out_dir``; a later call without it collects everything (and trains what is
    missing)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, console or Console(), only)
    finally:
        torch.set_num_threads(threads)


def _record_config(cfg: LongformConfig, out: Path) -> dict:
    """Write ``config.json`` (every setting but the folder and thread count); refuse a folder of another run."""
    config_path = out / "config.json"
    recorded = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "threads")}
    recorded = json.loads(json.dumps(recorded))
    if config_path.is_file() and json.loads(config_path.read_text()) != recorded:
        raise SystemExit(f"{out} holds a run with other settings ({config_path}); use another --out")
    atomic_write_text(config_path, json.dumps(recorded, indent=1))
    return recorded


def _select_runs(cfg: LongformConfig, only: Sequence[str] | None) -> list[dict]:
    specs = run_specs(cfg)
    if only is not None:
        unknown = sorted(set(only) - {r["name"] for r in specs})
        if unknown:
            raise SystemExit(f"unknown runs {unknown}; this configuration has {[r['name'] for r in specs]}")
        specs = [r for r in specs if r["name"] in only]
    return specs


class _Runs:
    """Steps 2-4 over the selected runs, collecting their logs, timings and the sweep."""

    def __init__(self, cfg: LongformConfig, out: Path, cache: dict, console: Console, timings: dict[str, float]):
        self.cfg, self.out, self.cache, self.console, self.timings = cfg, out, cache, console, timings
        self.results_path = out / "results.jsonl"
        self.done = load_done(self.results_path)
        self.logs: dict[str, dict] = {}
        self.sweep_points = None
        self.wavelengths: list[float] = []

    def train_and_evaluate(self, run: dict) -> None:
        cfg, console, timings = self.cfg, self.console, self.timings
        console.print(
            f"[bold]2-3/4[/bold] {run['name']}: train ({run['steps']} steps"
            f"{', VLAT ' + run['vlat'] if run['vlat'] else ''}) and evaluate"
        )
        t = time.perf_counter()
        model, processor, log = trained_model(cfg, run, self.cache, self.out, console)
        tokens = TaskTokens.build(model, processor.tokenizer)
        log["eval_reach"] = check_positions(cfg, tokens, log, run)
        self.logs[run["name"]] = log
        self.wavelengths = rotary_wavelengths(model)
        timings[f"train {run['name']}"] = time.perf_counter() - t
        t = time.perf_counter()
        evaluate_run(
            cfg, run, model, tokens, self.cache, cfg.partial_yarn_cutoff, self.done, self.results_path, console
        )
        timings[f"evaluate {run['name']}"] = time.perf_counter() - t
        if run["name"] == run_specs(cfg)[0]["name"]:
            console.print(f"[bold]4/4[/bold] Partial YaRN sweep at {max(cfg.eval_items)} items on {run['name']}")
            t = time.perf_counter()
            self.sweep_points = run_sweep_at_longest(cfg, model, tokens, self.cache, self.out, console)
            timings["sweep"] = time.perf_counter() - t

    def report(self) -> list[dict]:
        """Write longform.csv and longform.png of the runs done in this call, print the table; the aggregates."""
        rows = [r for r in load_done(self.results_path).values() if r["run"] in self.logs]
        write_csv(
            sorted(rows, key=lambda r: (r["run"], r["method"], r["items"], r["question"])), self.out / "longform.csv"
        )
        agg = aggregate(rows)
        plot(agg, self.cfg, self.out / "longform.png")
        self.console.print(result_table(agg, self.cfg))
        return agg


def _run(cfg: LongformConfig, console: Console, only: Sequence[str] | None = None) -> dict:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorded = _record_config(cfg, out)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    console.rule("[bold]long-form benchmark[/bold] (tiny model, CPU)")
    t = time.perf_counter()
    cache = build_encoder_and_cache(cfg, out, console)
    timings["encoder + frames"] = time.perf_counter() - t
    runs = _Runs(cfg, out, cache, console, timings)
    for run in _select_runs(cfg, only):
        runs.train_and_evaluate(run)
    agg = runs.report()
    total = time.perf_counter() - start
    summary = {
        "seconds": total,
        "timings": timings,
        "standin": cache["standin"],
        "partial_yarn_cutoff": cfg.partial_yarn_cutoff,
        "rotary_wavelengths": [round(w, 1) for w in runs.wavelengths],
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "losses"} for k, v in runs.logs.items()},
        "aggregate": agg,
        "sweep": [asdict(p) for p in runs.sweep_points] if runs.sweep_points else None,
        "config": recorded,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    console.print(f"{total:.0f} s in all; {out / 'longform.csv'}, {out / 'longform.png'}, {out / 'sweep.png'}")
    return summary
