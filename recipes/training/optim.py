"""AdamW over the trainable tensors only, and the learning-rate schedule (warm-up, then constant / linear /
cosine decay to ``min_lr_ratio * lr`` at ``max_steps``), stepped per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from recipes.common.settings import check_float, check_int

SCHEDULERS = ("constant", "linear", "cosine")
NO_DECAY_PREFIXES = ("audio_token_rows.",)  # the token-row delta: weight decay would pull the rows to zero


def check_optimizer_settings(
    lr: float, weight_decay: float, betas, eps: float, scheduler: str, warmup_steps: int, min_lr_ratio: float
) -> None:
    """Refuse out-of-range settings (name and value in the error) before anything is built: lr 0 or a negative
    warm-up would otherwise train (or not) without a word."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    check_float("lr", lr, 0.0, low_open=True)
    check_float("weight_decay", weight_decay, 0.0)
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    for beta in betas:
        try:
            check_float("betas", beta, 0.0, 1.0, high_open=True)
        except ValueError:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}") from None
    check_float("eps", eps, 0.0, low_open=True)
    check_int("warmup_steps", warmup_steps, 0)
    check_float("min_lr_ratio", min_lr_ratio, 0.0, 1.0)


def param_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Trainable tensors in two AdamW groups: matrices decay; vectors (norm weights, biases) and the token-row
    delta do not. Whatever the projector holds, each of its tensors lands in one of them."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        if p.requires_grad:
            (no_decay if name.startswith(NO_DECAY_PREFIXES) or p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, scheduler: str, warmup: int, total: int, floor: float) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 1.0 - progress if scheduler == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (1.0 - floor) * shape


def adamw_with_schedule(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float,
    weight_decay: float,
    betas,
    eps: float,
    scheduler: str,
    warmup_steps: int,
    min_lr_ratio: float,
    total_steps: int | None,
) -> dict:
    """Lightning's ``configure_optimizers`` answer: AdamW + a per-step ``LambdaLR``. ``total_steps`` (the
    trainer's ``max_steps``) is the decay horizon; a decaying schedule without one raises ValueError."""
    if scheduler != "constant" and (total_steps is None or total_steps <= 0):
        raise ValueError(f"scheduler={scheduler!r} needs trainer.max_steps > 0 (the decay horizon)")
    groups = param_groups(named_parameters, weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    warmup, floor, total = int(warmup_steps), float(min_lr_ratio), int(total_steps or 0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, scheduler, warmup, total, floor)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}
