"""The long-form benchmark in miniature: train only on short recordings, evaluate 1x/2x/4x/8x longer ones.

    python -m scripts.longform --out runs/longform            # the full run (about 23 CPU-minutes of one core)
    python -m scripts.longform --out runs/longform --quick    # every step at smoke scale (seconds)
    # the same work spread over processes (one thread each) once the first has written cache.pt, then collected:
    python -m scripts.longform --out runs/longform --threads 1 --only vanilla_s0 vlat_s1 &
    python -m scripts.longform --out runs/longform --threads 1 --only vanilla_s1 vlat_s0 vlatmix_s0; wait
    python -m scripts.longform --out runs/longform

Steps (each result is written as soon as it exists; re-running the same command resumes):

1. A stand-in encoder (the tiny Whisper encoder fitted with a CTC head on the tone items, then frozen; no
   pretrained Whisper can be downloaded here). Its pooled frames of every recording are computed once and
   cached: the encoder sees one 5.12 s window at a time, so it contributes no long-range positions.
2. Training, only on recordings of 4..16 items (16..64 audio tokens; trained length T = 64 tokens = 5.12 s):
   the projector and the whole tiny language model learn from scratch (a random LM adapted with LoRA has no
   positional behaviour of its own to extend). Vanilla runs see raw positions 0..L-1 only; the script records
   the largest position any training prompt had and refuses to go on if a long evaluation does not reach past it.
   The VLAT twin trains the same way with `virtual_audio_tokens` drawn by `VirtualLengthSampler("limited")`;
   the variant ``vlat_mix`` (not the paper's) keeps raw positions for half of its samples.
3. Evaluation of the three questions (`recipes.longform.task`) at 16/32/64/128 items (1x/2x/4x/8x T) with
   none, partial_pi, partial_yarn (cutoff 4: the rotary pairs with wavelengths of 6-35 tokens keep raw
   positions; t 1.0), whole_pi, whole_yarn from the base T; the VLAT runs with none and partial_pi.
   Control: `partial_pi` puts every audio position of a long recording back inside 0..T (the LM has seen each
   of them); where it recovers what `none` loses on the same recordings, the content is still answerable and
   the loss was positional. `last` (answer next to the question) is the near-answer control.
4. The Partial YaRN cutoff x temperature sweep at the longest length (`scripts.sweep`'s CSV, table, heatmap).

Outputs in ``--out``: results.jsonl (one line per cell), longform.csv, longform.png (accuracy against audio
length, one line per method, a panel per question), sweep.csv / sweep.png, summary.json.

Code: step 1 in `recipes.longform.cache`, 2 in `recipes.longform.train`, 3-4 in `recipes.longform.evaluate`, the
outputs in `recipes.longform.report`; this file holds the configuration, the order of the steps and the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from recipes.common.atomic import atomic_write_text
from recipes.longform.cache import build_encoder_and_cache
from recipes.longform.evaluate import evaluate_run, load_done, run_sweep_at_longest
from recipes.longform.report import aggregate, plot, result_table, write_csv
from recipes.longform.task import ITEMS_PER_WINDOW, LONGFORM_MODEL, TOKENS_PER_ITEM, TaskTokens, rotary_wavelengths
from recipes.longform.train import check_positions, run_specs, trained_model


@dataclass
class LongformConfig:
    out_dir: str = "runs/longform"
    pool_clips: int = 1500
    standin_clips: int = 1000
    standin_steps: int = 400
    standin_batch: int = 16
    eval_items: tuple[int, ...] = (16, 32, 64, 128)
    eval_n: int = 200
    steps: int = 2000  # vanilla: 100 % training accuracy long before this
    vlat_steps: int = 3000  # VLAT learns the local-order question more slowly
    batch_size: int = 32
    vanilla_seeds: tuple[int, ...] = (0, 1)
    vlat_seeds: tuple[int, ...] = (0, 1)
    vlat_strategy: str = "limited"
    # a VLAT variant (not the paper's): half the samples keep raw positions, so dense spacing is seen too
    vlat_mix_seeds: tuple[int, ...] = (0,)
    vlat_raw_share: float = 0.5
    partial_yarn_cutoff: int = 4
    sweep_cutoffs: tuple[int, ...] = (0, 2, 4, 5, 6, 8, 16)
    sweep_temperatures: tuple[float, ...] = (0.8, 1.0, 1.3)
    threads: int = 2
    model: dict = field(default_factory=lambda: dict(LONGFORM_MODEL))

    @classmethod
    def quick(cls, **kwargs) -> LongformConfig:
        return cls(
            pool_clips=16,
            standin_clips=16,
            standin_steps=2,
            eval_items=(16, 32),
            eval_n=2,
            steps=3,
            vlat_steps=3,
            batch_size=4,
            vanilla_seeds=(0,),
            vlat_seeds=(0,),
            vlat_mix_seeds=(0,),
            sweep_cutoffs=(0, 4),
            sweep_temperatures=(1.0,),
            threads=1,
            **kwargs,
        )  # smoke-scale tensors: one thread avoids the synchronisation cost

    @property
    def base_tokens(self) -> int:
        return ITEMS_PER_WINDOW * TOKENS_PER_ITEM


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/longform")
    parser.add_argument("--quick", action="store_true", help="every step at smoke scale (learns nothing)")
    parser.add_argument("--vanilla-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--vlat-seeds", type=int, nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps of the vanilla runs")
    parser.add_argument("--vlat-steps", type=int, default=None, help="training steps of the VLAT runs")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="RUN",
        help="train/evaluate only these runs now (e.g. vanilla_s1 vlat_s0), to share the work "
        "between processes on one --out; a final call without --only collects all",
    )
    parser.add_argument("--eval-n", type=int, default=None, help="recordings per length")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; --quick: 1)")
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LongformConfig:
    """The `LongformConfig` of the parsed flags (parser.error on a count below 1)."""
    cfg = LongformConfig.quick(out_dir=args.out) if args.quick else LongformConfig(out_dir=args.out)
    if args.threads is not None:
        cfg.threads = args.threads
    if args.vanilla_seeds is not None:
        cfg.vanilla_seeds = tuple(args.vanilla_seeds)
    if args.vlat_seeds is not None:
        cfg.vlat_seeds = tuple(args.vlat_seeds)
    for flag, name in (("--steps", "steps"), ("--vlat-steps", "vlat_steps"), ("--eval-n", "eval_n")):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"{flag} must be >= 1, got {value}")
            setattr(cfg, name, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run_longform(config_from_args(parser, args), only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
