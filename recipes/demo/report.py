"""Outputs of `scripts.demo`: the loss curves (``loss.png``), ``predictions.jsonl`` and the printed tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.table import Table

from recipes.evaluation.transcripts import TranscriptScores


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, train loss) rows of a stage's CSVLogger metrics."""
    rows = []
    for metrics in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(metrics, newline="") as f:
            rows += [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]
    return rows


def plot_losses(
    standin: list[float], stage1: list[tuple[int, float]], stage2: list[tuple[int, float]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ctc, ax_lm) = plt.subplots(1, 2, figsize=(11, 4))
    ax_ctc.plot(range(1, len(standin) + 1), standin, color="tab:gray")
    ax_ctc.set(title="stand-in encoder (CTC, then frozen)", xlabel="step", ylabel="CTC loss", yscale="log")
    offset = stage1[-1][0] + 1 if stage1 else 0
    ax_lm.plot([s for s, _ in stage1], [v for _, v in stage1], label="stage 1: projector")
    ax_lm.plot([s + offset for s, _ in stage2], [v for _, v in stage2], label="stage 2: LoRA + projector")
    ax_lm.set(title="two-stage recipe", xlabel="optimizer step (both stages)", ylabel="train loss (response tokens)")
    ax_lm.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_predictions(path: Path, samples: list[dict], predictions: list[str], baseline: list[str]) -> None:
    """One JSON line per held-out clip: key, audio, prompt, reference, prediction, silence baseline."""
    with open(path, "w") as f:
        for s, p, b in zip(samples, predictions, baseline):
            f.write(
                json.dumps(
                    {
                        "key": s["key"],
                        "audio": s["audio_path"],
                        "prompt": s["prompt"],
                        "reference": s["reference"],
                        "prediction": p,
                        "silence_baseline": b,
                    }
                )
                + "\n"
            )


def examples_table(samples: list[dict], predictions: list[str], baseline: list[str]) -> Table:
    """The first six held-out clips: reference, generated (green when exact), the silence baseline's answer."""
    examples = Table(title="held-out examples")
    for column in ("reference", "generated", "silence instead of the clip"):
        examples.add_column(column)
    for s, p, b in list(zip(samples, predictions, baseline))[:6]:
        examples.add_row(s["reference"], f"[{'green' if p.split() == s['reference'].split() else 'red'}]{p}", b)
    return examples


def summary_table(
    task: str,
    total: float,
    scores: TranscriptScores,
    base_scores: TranscriptScores,
    standin: dict,
    stage1: list[tuple[int, float]],
    stage2: list[tuple[int, float]],
    timings: dict[str, float],
) -> Table:
    """One task's result: held-out scores with audio and with silence, the stand-in encoder, losses, timings."""
    summary = Table(title=f"demo result, {task} ({total:.0f} s)")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("held-out exact match (audio)", f"{scores.exact_match:.1%}")
    summary.add_row("held-out token error rate (audio)", f"{scores.token_error_rate:.1%}")
    summary.add_row("exact match, silence baseline", f"{base_scores.exact_match:.1%}")
    summary.add_row("token error rate, silence baseline", f"{base_scores.token_error_rate:.1%}")
    summary.add_row("stand-in encoder CTC exact match", f"{standin['standin_ctc_exact_match']:.1%}")
    if stage1 and stage2:
        summary.add_row("train loss stage 1 (first -> last)", f"{stage1[0][1]:.2f} -> {stage1[-1][1]:.2f}")
        summary.add_row("train loss stage 2 (first -> last)", f"{stage2[0][1]:.2f} -> {stage2[-1][1]:.2f}")
    for name, seconds in timings.items():
        summary.add_row(f"time: {name}", f"{seconds:.0f} s")
    return summary


def both_tasks_table(results: list[dict], seconds: float) -> Table:
    """The main job's table: one row per task (notes, speech)."""
    both = Table(title=f"main job: {seconds:.0f} s in all")
    for column in (
        "task",
        "held-out exact match",
        "token error rate",
        "silence: exact match",
        "silence: error rate",
        "seconds",
    ):
        both.add_column(column, justify="right")
    for r in results:
        both.add_row(
            r["task"],
            f"{r['exact_match']:.1%}",
            f"{r['token_error_rate']:.1%}",
            f"{r['baseline_exact_match']:.1%}",
            f"{r['baseline_token_error_rate']:.1%}",
            f"{r['seconds']:.0f}",
        )
    return both


# ============================================================================ the pretrained main job
def plot_runs(losses: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """The pretrained job's loss curves: stage 1, then each stage-2 run continuing from its last step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    stage1 = losses.get("stage1") or []
    offset = stage1[-1][0] + 1 if stage1 else 0
    for name, rows in losses.items():
        shift = 0 if name == "stage1" else offset
        ax.plot([s + shift for s, _ in rows], [v for _, v in rows], label=name)
    ax.set(title="Whisper tiny.en + SmolLM2-135M: training loss", xlabel="optimizer step", ylabel="train loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_hear_predictions(
    path: Path, samples: list[dict], responses: dict[str, list[str]], whisper: list[str | None]
) -> None:
    """One JSON line per held-out clip: what was spoken, the reference, each system's response."""
    with open(path, "w") as f:
        for i, s in enumerate(samples):
            row = {k: s[k] for k in ("key", "kind", "category", "text", "reference", "audio_path")}
            row.update({name: texts[i] for name, texts in responses.items()}, whisper=whisper[i])
            f.write(json.dumps(row) + "\n")


def hear_table(result: dict) -> Table:
    """The final table: WER per system, question agreement per system, gates, the time of each step."""
    table = Table(title=f"main job (pretrained parts): {result['total_seconds']:.0f} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for system, wer in result["wer"].items():
        parts = ", ".join(f"{k} {v:.1%}" for k, v in wer.items())
        table.add_row(f"WER {system}", parts)
    for system, scores in result["agreement"].items():
        parts = ", ".join(f"{k} {v:.0%}" for k, v in scores.items())
        table.add_row(f"spoken-question agreement {system}", parts)
    for system, scores in result.get("content_heard", {}).items():
        parts = ", ".join(f"{k} {v:.0%}" for k, v in scores.items())
        table.add_row(f"spoken-question content heard {system}", parts)
    if result["gates"] and not any(name.startswith("agreement") for name in result["gates"]):
        table.add_row("spoken questions", "NOT gated: not heard yet (see recipes/demo/hear.py GATES)")
    for name, check in result["gates"].items():
        verdict = "ok" if check["ok"] else "FAILED"
        table.add_row(f"gate {name}", f"{check['value']:.3f} {verdict} (silence {check['silence']:.3f})")
    for name, seconds in result["timings"].items():
        table.add_row(f"time: {name}", f"{seconds:.0f} s")
    return table
