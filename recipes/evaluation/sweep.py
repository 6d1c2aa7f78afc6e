"""Partial YaRN hyper-parameter sweep (`scripts.sweep`, and the long-form study's sweep): MCQA accuracy over a cutoff x
temperature grid, its CSV, heatmap and table."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from extension.config import AudioContextExtension
from recipes.common.atomic import atomic_write_text
from recipes.evaluation.mcqa import evaluate_mcqa

PAPER_CUTOFFS = (56, 48, 40, 32, 24, 16, 8)


PAPER_TEMPERATURES = tuple(round(0.5 + 0.1 * i, 1) for i in range(12))  # 0.5 .. 1.6


@dataclass
class SweepPoint:
    cutoff: int
    temperature: float
    accuracy: float
    n: int
    correct: int
    invalid: int
    unreadable: int = 0


def temperature_label(temperature: float) -> str:
    """``temperature`` as written in folder names, the CSV and the tables: short (``1.2``) where that reads back
    as the same float, else exact (``1.0000001``), so distinct values never share a label (or a folder)."""
    short = f"{temperature:g}"
    return short if float(short) == temperature else repr(float(temperature))


def point_folder(extension: AudioContextExtension) -> str:
    """The folder (under ``--out/points/``) of one grid point's journal: ``c<cutoff>_t<temperature label>``."""
    return f"c{extension.cutoff}_t{temperature_label(extension.temperature)}"


def check_distinct(cutoffs: Sequence[int], temperatures: Sequence[float]) -> None:
    """ValueError naming a value given twice (its grid points would be evaluated, and journaled, twice)."""
    for name, values in (("cutoffs", [int(c) for c in cutoffs]), ("temperatures", [float(t) for t in temperatures])):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"--{name} lists {repeated} more than once; give each value once")


def partial_yarn_grid(
    model, cutoffs: Sequence[int], temperatures: Sequence[float], base_audio_seconds: float
) -> list[AudioContextExtension]:
    """Every (cutoff, temperature) as a Partial YaRN extension, each validated for ``model``'s head size.
    ValueError for a value given twice (`check_distinct`)."""
    check_distinct(cutoffs, temperatures)
    grid = [
        AudioContextExtension(
            method="partial_yarn", cutoff=int(c), temperature=float(t), base_audio_seconds=base_audio_seconds
        )
        for c in cutoffs
        for t in temperatures
    ]
    head_dim = model.model.language_model.rotary_emb.inv_freq.numel() * 2
    for extension in grid:
        extension.validate_for_head_dim(head_dim)
    return grid


def _evaluate_point(
    model, processor, items, extension: AudioContextExtension, out_dir: str | os.PathLike | None, **eval_kwargs
) -> SweepPoint:
    """MCQA accuracy with ``extension`` set on ``model``, journaled under ``out_dir/points/`` when given."""
    model.set_context_extension(extension)
    point_dir = None
    if out_dir is not None:
        point_dir = Path(out_dir) / "points" / point_folder(extension)
    result = evaluate_mcqa(model, processor, items, show_progress=False, out_dir=point_dir, **eval_kwargs)
    return SweepPoint(
        extension.cutoff,
        extension.temperature,
        result.accuracy,
        result.n,
        result.correct,
        result.invalid,
        len(result.unreadable),
    )


def run_sweep(
    model,
    processor,
    items,
    cutoffs: Sequence[int] = PAPER_CUTOFFS,
    temperatures: Sequence[float] = PAPER_TEMPERATURES,
    base_audio_seconds: float = 30.0,
    show_progress: bool = True,
    console: Console | None = None,
    out_dir: str | os.PathLike | None = None,
    **eval_kwargs,
) -> list[SweepPoint]:
    """Evaluate ``items`` at every (cutoff, temperature) with Partial YaRN; the model's extension is restored
    afterwards. Every grid point is validated before the first evaluation. ``eval_kwargs`` go to
    `evaluate_mcqa` (batch_size, max_new_tokens, instruction, respond, settings, ...). With ``out_dir``, each
    point journals its answers in ``out_dir/points/c<cutoff>_t<temperature>`` (resumable) and ``sweep.csv``
    is rewritten after every point."""
    grid = partial_yarn_grid(model, cutoffs, temperatures, base_audio_seconds)
    previous = model.context_extension
    audio_cache: dict[str, np.ndarray | Exception] = {}
    points = []
    progress = Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    try:
        with progress:
            task = progress.add_task("", total=len(grid))
            for extension in grid:
                progress.update(task, description=f"c={extension.cutoff} t={temperature_label(extension.temperature)}")
                points.append(
                    _evaluate_point(
                        model,
                        processor,
                        items,
                        extension,
                        out_dir,
                        audio_cache=audio_cache,
                        console=console,
                        **eval_kwargs,
                    )
                )
                if out_dir is not None:
                    write_csv(points, Path(out_dir) / "sweep.csv")
                progress.advance(task)
    finally:
        model.set_context_extension(previous)
    return points


def write_csv(points: Sequence[SweepPoint], path: str | os.PathLike) -> Path:
    """``sweep.csv``, written atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["cutoff", "temperature", "accuracy", "n", "correct", "invalid", "unreadable"])
    for p in points:
        row = [p.cutoff, temperature_label(p.temperature), f"{p.accuracy:.6f}", p.n, p.correct, p.invalid]
        writer.writerow([*row, p.unreadable])
    return atomic_write_text(path, text.getvalue())


def accuracy_grid(points: Sequence[SweepPoint]) -> tuple[list[int], list[float], np.ndarray]:
    """(cutoffs high->low, temperatures low->high, accuracy matrix [cutoff, temperature])."""
    cutoffs = sorted({p.cutoff for p in points}, reverse=True)
    temperatures = sorted({p.temperature for p in points})
    grid = np.full((len(cutoffs), len(temperatures)), np.nan)
    for p in points:
        grid[cutoffs.index(p.cutoff), temperatures.index(p.temperature)] = p.accuracy
    return cutoffs, temperatures, grid


def plot_heatmap(points: Sequence[SweepPoint], path: str | os.PathLike, title: str = "Partial YaRN sweep") -> Path:
    """Accuracy heatmap: temperature on x, cutoff on y (highest cutoff at the bottom), values in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cutoffs, temperatures, grid = accuracy_grid(points)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.65 * len(temperatures) + 2), max(3.0, 0.5 * len(cutoffs) + 1.5)))
    image = ax.imshow(grid * 100, origin="lower", cmap="viridis", aspect="auto", vmin=0, vmax=100)
    ax.set_xticks(range(len(temperatures)), [temperature_label(t) for t in temperatures])
    ax.set_yticks(range(len(cutoffs)), [str(c) for c in cutoffs])
    ax.set_xlabel("attention temperature")
    ax.set_ylabel("cutoff dimension index")
    for i in range(len(cutoffs)):
        for j in range(len(temperatures)):
            if np.isfinite(grid[i, j]):
                value = grid[i, j] * 100
                ax.text(
                    j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="white" if value < 60 else "black"
                )
    if np.isfinite(grid).any():
        i, j = np.unravel_index(np.nanargmax(grid), grid.shape)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_table(points: Sequence[SweepPoint]) -> Table:
    cutoffs, temperatures, grid = accuracy_grid(points)
    best = np.nanmax(grid) if np.isfinite(grid).any() else None
    table = Table(title="accuracy (cutoff x temperature)")
    table.add_column("cutoff", justify="right")
    for t in temperatures:
        table.add_column(temperature_label(t), justify="right")
    for i, c in enumerate(cutoffs):
        cells = []
        for j in range(len(temperatures)):
            v = grid[i, j]
            text = "-" if not np.isfinite(v) else f"{v:.3f}"
            cells.append(f"[bold green]{text}[/]" if best is not None and v == best else text)
        table.add_row(str(c), *cells)
    return table
