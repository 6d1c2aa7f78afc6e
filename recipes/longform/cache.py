"""Step 1 of `scripts.longform`: the stand-in encoder, fitted once, and the cached pooled frames of every
recording (``cache.pt``); plus the helpers every step shares (a fresh tiny model, atomic saves, progress bars).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from audio_adapter.encoders.whisper import SAMPLING_RATE
from recipes.common.atomic import atomic_open
from recipes.longform.task import ITEM_NAMES, ITEMS_PER_WINDOW, TOKENS_PER_ITEM, encode_clips, make_recordings

if TYPE_CHECKING:
    from recipes.longform.config import LongformConfig


def save_torch(obj, path: Path) -> None:
    """``torch.save`` atomically: a crash leaves the previous file or none."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def new_model(cfg: LongformConfig, seed: int, encoder_state: dict | None = None):
    """The benchmark's tiny model and processor, with ``encoder_state`` loaded into its (frozen) audio tower."""
    from audio_adapter.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(seed=seed, **cfg.model)
    if encoder_state is not None:
        model.audio_tower.load_state_dict(encoder_state)
    model.audio_tower.requires_grad_(False)
    return model, processor


def _features(processor, audio):
    from audio_adapter.processing.audio_features import extract_features

    return extract_features(processor.prepare_audio(audio, SAMPLING_RATE), processor.mel)


def _fit_standin(cfg: LongformConfig, model, processor, pool_audio, pool_items, console: Console) -> tuple[dict, float]:
    """Fit ``model.audio_tower`` with a CTC head on the first training recordings; (fit log, held-out exact match)."""
    from recipes.demo.standin_encoder import ctc_exact_match, pretrain_standin_encoder

    stride = model.config.audio_pool_stride
    fit_n = min(cfg.standin_clips, cfg.pool_clips)
    feats = _features(processor, pool_audio[:fit_n])
    if int(feats["audio_chunk_counts"].max()) != 1:
        raise RuntimeError("a 16-item training recording must fill exactly one encoder window")
    targets = [(row + 1).tolist() for row in pool_items[:fit_n]]  # CTC labels 1..9 (0 is the blank)
    with progress_bar(console) as progress:
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
    tf = _features(processor, test_audio)
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
    return fit, ctc_em


def _encode_eval_lengths(cfg: LongformConfig, model, processor) -> dict[int, dict]:
    """Frames and items of ``cfg.eval_n`` recordings at every evaluation length (in items)."""
    evals = {}
    for n in cfg.eval_items:
        audio, items = make_recordings(0, cfg.eval_n, n, stream=1)
        enc = encode_clips(model, processor, audio)
        if any(e.shape[0] != n * TOKENS_PER_ITEM for e in enc):
            raise RuntimeError(f"{n}-item recordings must give {n * TOKENS_PER_ITEM} audio tokens")
        evals[n] = {"frames": torch.stack(enc), "items": items}
    return evals


def build_encoder_and_cache(cfg: LongformConfig, out: Path, console: Console) -> dict:
    """Fit the stand-in encoder once and cache pooled frames of the training pool and every eval length."""
    cache = out / "cache.pt"
    if cache.is_file():
        console.print(f"[bold]1/4[/bold] cached encoder + frames found: {cache}")
        return torch.load(cache, weights_only=True)  # tensors and plain values only: no pickled code runs
    console.print(
        f"[bold]1/4[/bold] stand-in encoder: CTC on {cfg.standin_clips} recordings of 16 items, "
        f"{cfg.standin_steps} steps; then frames of {cfg.pool_clips} training recordings and "
        f"{cfg.eval_n} per eval length"
    )
    model, processor = new_model(cfg, seed=0)
    pool_audio, pool_items = make_recordings(0, cfg.pool_clips, ITEMS_PER_WINDOW, stream=0)
    fit, ctc_em = _fit_standin(cfg, model, processor, pool_audio, pool_items, console)
    frames = torch.stack(encode_clips(model, processor, pool_audio))
    if frames.shape[1] != cfg.base_tokens:
        raise RuntimeError(f"training recordings gave {frames.shape[1]} audio tokens, expected {cfg.base_tokens}")
    state = {
        "encoder": model.audio_tower.state_dict(),
        "pool": {"frames": frames, "items": pool_items},
        "eval": _encode_eval_lengths(cfg, model, processor),
        "standin": {"steps": fit["steps"], "ctc_loss": fit["losses"][-1], "ctc_exact_match": ctc_em},
    }
    save_torch(state, cache)
    return state
