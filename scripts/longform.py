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
3. Evaluation of the three questions (`recipes.longform`) at 16/32/64/128 items (1x/2x/4x/8x T) with
   none, partial_pi, partial_yarn (cutoff 4: the rotary pairs with wavelengths of 6-35 tokens keep raw
   positions; t 1.0), whole_pi, whole_yarn from the base T; the VLAT runs with none and partial_pi.
   Control: `partial_pi` puts every audio position of a long recording back inside 0..T (the LM has seen each
   of them); where it recovers what `none` loses on the same recordings, the content is still answerable and
   the loss was positional. `last` (answer next to the question) is the near-answer control.
4. The Partial YaRN cutoff x temperature sweep at the longest length (`scripts.sweep`'s CSV, table, heatmap).

Outputs in ``--out``: results.jsonl (one line per cell), longform.csv, longform.png (accuracy against audio
length, one line per method, a panel per question), sweep.csv / sweep.png, summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audio_adapter.audio_lengths import SAMPLING_RATE
from recipes.atomic import atomic_open, atomic_write_text
from recipes.longform import (
    ITEM_NAMES,
    ITEMS_PER_WINDOW,
    LONGFORM_MODEL,
    QUESTIONS,
    TOKENS_PER_ITEM,
    Method,
    TaskTokens,
    TrainPool,
    TrainSettings,
    accuracy,
    encode_clips,
    make_recordings,
    rotary_wavelengths,
    train_lm,
)


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


def _save(obj, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def new_model(cfg: LongformConfig, seed: int, encoder_state: dict | None = None):
    from audio_adapter.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(seed=seed, **cfg.model)
    if encoder_state is not None:
        model.audio_tower.load_state_dict(encoder_state)
    model.audio_tower.requires_grad_(False)
    return model, processor


def build_encoder_and_cache(cfg: LongformConfig, out: Path, console: Console) -> dict:
    """Fit the stand-in encoder once and cache pooled frames of the training pool and every eval length."""
    from audio_adapter.audio_features import extract_features
    from recipes.standin_encoder import ctc_exact_match, pretrain_standin_encoder

    cache = out / "cache.pt"
    if cache.is_file():
        console.print(f"[bold]1/4[/bold] cached encoder + frames found: {cache}")
        return torch.load(cache)
    console.print(
        f"[bold]1/4[/bold] stand-in encoder: CTC on {cfg.standin_clips} recordings of 16 items, "
        f"{cfg.standin_steps} steps; then frames of {cfg.pool_clips} training recordings and "
        f"{cfg.eval_n} per eval length"
    )
    model, processor = new_model(cfg, seed=0)
    stride = model.config.audio_pool_stride
    pool_audio, pool_items = make_recordings(0, cfg.pool_clips, ITEMS_PER_WINDOW, stream=0)
    fit_n = min(cfg.standin_clips, cfg.pool_clips)
    feats = extract_features(processor.prepare_audio(pool_audio[:fit_n], SAMPLING_RATE), processor.mel)
    if int(feats["audio_chunk_counts"].max()) != 1:
        raise RuntimeError("a 16-item training recording must fill exactly one encoder window")
    targets = [(row + 1).tolist() for row in pool_items[:fit_n]]  # CTC labels 1..9 (0 is the blank)
    with _progress(console) as progress:
        task = progress.add_task("CTC", total=cfg.standin_steps)
        fit = pretrain_standin_encoder(
            model.audio_tower,
            feats["input_features"],
            feats["input_features_mask"],
            targets,
            num_classes=len(ITEM_NAMES) + 1,
            pool_stride=stride,
            max_steps=cfg.standin_steps,
            max_seconds=float("inf"),
            batch_size=cfg.standin_batch,
            seed=0,
            progress=lambda step, loss: progress.update(task, completed=step, description=f"CTC loss {loss:.3f}"),
        )
    test_audio, test_items = make_recordings(0, min(100, cfg.pool_clips), ITEMS_PER_WINDOW, stream=2)
    tf = extract_features(processor.prepare_audio(test_audio, SAMPLING_RATE), processor.mel)
    ctc_em = ctc_exact_match(
        model.audio_tower,
        fit["head"],
        tf["input_features"],
        tf["input_features_mask"],
        [(row + 1).tolist() for row in test_items],
        pool_stride=stride,
    )
    console.print(
        f"    {fit['steps']} steps, CTC loss {fit['losses'][-1]:.3f}, held-out 16-item exact match {ctc_em:.0%} "
        f"({len(test_audio)} recordings)"
    )
    del feats
    frames = torch.stack(encode_clips(model, processor, pool_audio))
    if frames.shape[1] != cfg.base_tokens:
        raise RuntimeError(f"training recordings gave {frames.shape[1]} audio tokens, expected {cfg.base_tokens}")
    evals = {}
    for n in cfg.eval_items:
        audio, items = make_recordings(0, cfg.eval_n, n, stream=1)
        enc = encode_clips(model, processor, audio)
        if any(e.shape[0] != n * TOKENS_PER_ITEM for e in enc):
            raise RuntimeError(f"{n}-item recordings must give {n * TOKENS_PER_ITEM} audio tokens")
        evals[n] = {"frames": torch.stack(enc), "items": items}
    state = {
        "encoder": model.audio_tower.state_dict(),
        "pool": {"frames": frames, "items": pool_items},
        "eval": evals,
        "standin": {"steps": fit["steps"], "ctc_loss": fit["losses"][-1], "ctc_exact_match": ctc_em},
    }
    _save(state, cache)
    return state


def run_specs(cfg: LongformConfig) -> list[dict]:
    runs = [
        {"name": f"vanilla_s{s}", "kind": "vanilla", "seed": s, "vlat": None, "steps": cfg.steps}
        for s in cfg.vanilla_seeds
    ]
    runs += [
        {"name": f"vlat_s{s}", "kind": "vlat", "seed": s, "vlat": cfg.vlat_strategy, "steps": cfg.vlat_steps}
        for s in cfg.vlat_seeds
    ]
    runs += [
        {
            "name": f"vlatmix_s{s}",
            "kind": "vlat_mix",
            "seed": s,
            "vlat": cfg.vlat_strategy,
            "steps": cfg.vlat_steps,
            "raw_share": cfg.vlat_raw_share,
        }
        for s in cfg.vlat_mix_seeds
    ]
    return runs


def methods_for(kind: str, cutoff: int) -> list[Method]:
    if kind in ("vlat", "vlat_mix"):
        return [Method("none"), Method("partial_pi")]
    return [
        Method("none"),
        Method("partial_pi"),
        Method("partial_yarn", cutoff, 1.0),
        Method("whole_pi"),
        Method("whole_yarn"),
    ]


def trained_model(cfg: LongformConfig, run: dict, cache: dict, out: Path, console: Console):
    """The run's model: trained now, or loaded from ``models/<name>.pt`` when an earlier run finished it."""
    model, processor = new_model(cfg, run["seed"], cache["encoder"])
    path = out / "models" / f"{run['name']}.pt"
    if path.is_file():
        saved = torch.load(path)
        model.load_state_dict(saved["state"], strict=False)
        console.print(f"    {run['name']}: loaded {path}")
        return model, processor, saved["log"]
    pool = TrainPool(cache["pool"]["frames"], cache["pool"]["items"])
    settings = TrainSettings(
        steps=run["steps"],
        batch_size=cfg.batch_size,
        vlat_strategy=run["vlat"],
        seed=run["seed"],
        vlat_raw_share=run.get("raw_share", 0.0),
    )
    tokens = TaskTokens.build(model, processor.tokenizer)
    with _progress(console) as progress:
        task = progress.add_task(f"train {run['name']}", total=settings.steps)
        log = train_lm(
            model,
            tokens,
            pool,
            settings,
            progress=lambda step, loss, acc: progress.update(
                task, completed=step, description=f"train {run['name']} loss {loss:.3f}"
            ),
        )
    tail = log["accuracies"][-100:]
    log = {
        "seconds": log["seconds"],
        "max_position": log["max_position"],
        "final_train_accuracy": sum(tail) / len(tail),
        "losses": log["losses"][:: max(1, len(log["losses"]) // 300)],
    }
    console.print(
        f"    {run['name']}: {settings.steps} steps in {log['seconds']:.0f} s, train accuracy (last 100) "
        f"{log['final_train_accuracy']:.2f}, largest training position {log['max_position']}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("audio_tower")}
    _save({"state": state, "log": log}, path)
    return model, processor, log


def check_positions(cfg: LongformConfig, tokens: TaskTokens, log: dict, run: dict) -> dict:
    """The extrapolation guarantee: every evaluation longer than T reaches raw positions no training prompt had."""
    reach = {n: tokens.length(n * TOKENS_PER_ITEM) - 1 for n in cfg.eval_items}
    if run["kind"] == "vanilla":
        too_short = [n for n in cfg.eval_items if n > ITEMS_PER_WINDOW and reach[n] <= log["max_position"]]
        if too_short:
            raise RuntimeError(
                f"eval lengths {too_short} do not reach past the trained positions ({log['max_position']})"
            )
    return reach


def load_done(path: Path) -> dict[tuple, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: that cell is simply redone
                continue
            done[(row["run"], row["method"], row["items"], row["question"])] = row
    return done


def evaluate_run(cfg, run, model, tokens, cache, cutoff, done, results_path, console) -> None:
    methods = methods_for(run["kind"], cutoff)
    cells = [(m, n, q) for m in methods for n in cfg.eval_items for q in QUESTIONS]
    todo = [c for c in cells if (run["name"], c[0].label, c[1], c[2]) not in done]
    base_seconds = cfg.base_tokens / model.config.audio_tokens_per_second
    with _progress(console) as progress, open(results_path, "a") as f:
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


def run_sweep_at_longest(cfg, model, tokens, cache, out, console):
    from scripts.sweep import SweepPoint, plot_heatmap, sweep_table, write_csv

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
    with _progress(console) as progress:
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
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def result_table(agg: list[dict], cfg: LongformConfig) -> Table:
    table = Table(title="accuracy (mean over seeds [min-max]); chance 0.125; T = 64 audio tokens = 5.12 s")
    table.add_column("trained")
    table.add_column("method")
    table.add_column("question")
    for n in cfg.eval_items:
        table.add_column(f"{n // ITEMS_PER_WINDOW}x ({n * TOKENS_PER_ITEM * 0.08:.1f} s)", justify="right")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(QUESTIONS), figsize=(15, 4.4), sharey=True)
    lines = sorted(
        {(r["kind"], r["method"]) for r in agg}, key=lambda k: (("vanilla", "vlat", "vlat_mix").index(k[0]), k[1])
    )
    seconds = [n * TOKENS_PER_ITEM * 0.08 for n in cfg.eval_items]
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
        ax.axvline(cfg.base_tokens * 0.08, color="gray", lw=0.8, ls=":")
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


def _run(cfg: LongformConfig, console: Console, only: Sequence[str] | None = None) -> dict:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    recorded = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "threads")}
    recorded = json.loads(json.dumps(recorded))
    if config_path.is_file() and json.loads(config_path.read_text()) != recorded:
        raise SystemExit(f"{out} holds a run with other settings ({config_path}); use another --out")
    atomic_write_text(config_path, json.dumps(recorded, indent=1))
    start = time.perf_counter()
    timings: dict[str, float] = {}
    console.rule("[bold]long-form benchmark[/bold] (tiny model, CPU)")
    t = time.perf_counter()
    cache = build_encoder_and_cache(cfg, out, console)
    timings["encoder + frames"] = time.perf_counter() - t
    results_path = out / "results.jsonl"
    done = load_done(results_path)
    logs, sweep_points, wavelengths = {}, None, []
    specs = run_specs(cfg)
    if only is not None:
        unknown = sorted(set(only) - {r["name"] for r in specs})
        if unknown:
            raise SystemExit(f"unknown runs {unknown}; this configuration has {[r['name'] for r in specs]}")
        specs = [r for r in specs if r["name"] in only]
    for run in specs:
        console.print(
            f"[bold]2-3/4[/bold] {run['name']}: train ({run['steps']} steps"
            f"{', VLAT ' + run['vlat'] if run['vlat'] else ''}) and evaluate"
        )
        t = time.perf_counter()
        model, processor, log = trained_model(cfg, run, cache, out, console)
        tokens = TaskTokens.build(model, processor.tokenizer)
        cutoff = cfg.partial_yarn_cutoff
        log["eval_reach"] = check_positions(cfg, tokens, log, run)
        logs[run["name"]] = log
        wavelengths = rotary_wavelengths(model)
        timings[f"train {run['name']}"] = time.perf_counter() - t
        t = time.perf_counter()
        evaluate_run(cfg, run, model, tokens, cache, cutoff, done, results_path, console)
        timings[f"evaluate {run['name']}"] = time.perf_counter() - t
        if run["name"] == run_specs(cfg)[0]["name"]:
            console.print(f"[bold]4/4[/bold] Partial YaRN sweep at {max(cfg.eval_items)} items on {run['name']}")
            t = time.perf_counter()
            sweep_points = run_sweep_at_longest(cfg, model, tokens, cache, out, console)
            timings["sweep"] = time.perf_counter() - t
    rows = [r for r in load_done(results_path).values() if r["run"] in logs]
    write_csv(sorted(rows, key=lambda r: (r["run"], r["method"], r["items"], r["question"])), out / "longform.csv")
    agg = aggregate(rows)
    plot(agg, cfg, out / "longform.png")
    console.print(result_table(agg, cfg))
    total = time.perf_counter() - start
    summary = {
        "seconds": total,
        "timings": timings,
        "standin": cache["standin"],
        "partial_yarn_cutoff": cfg.partial_yarn_cutoff,
        "rotary_wavelengths": [round(w, 1) for w in wavelengths],
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "losses"} for k, v in logs.items()},
        "aggregate": agg,
        "sweep": [asdict(p) for p in sweep_points] if sweep_points else None,
        "config": recorded,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    console.print(f"{total:.0f} s in all; {out / 'longform.csv'}, {out / 'longform.png'}, {out / 'sweep.png'}")
    return summary


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    cfg = LongformConfig.quick(out_dir=args.out) if args.quick else LongformConfig(out_dir=args.out)
    if args.threads is not None:
        cfg.threads = args.threads
    if args.vanilla_seeds is not None:
        cfg.vanilla_seeds = tuple(args.vanilla_seeds)
    if args.vlat_seeds is not None:
        cfg.vlat_seeds = tuple(args.vlat_seeds)
    if args.steps is not None:
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        cfg.steps = args.steps
    if args.vlat_steps is not None:
        if args.vlat_steps < 1:
            parser.error(f"--vlat-steps must be >= 1, got {args.vlat_steps}")
        cfg.vlat_steps = args.vlat_steps
    if args.eval_n is not None:
        if args.eval_n < 1:
            parser.error(f"--eval-n must be >= 1, got {args.eval_n}")
        cfg.eval_n = args.eval_n
    run_longform(cfg, only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
