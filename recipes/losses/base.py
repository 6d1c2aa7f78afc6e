"""`Loss`: what every training loss implements, and `build_loss` (a YAML ``class_path`` spec -> an instance)."""

from __future__ import annotations

import importlib
from typing import Any

import torch


class Loss:
    """A training loss: ``__call__(module, batch, outputs) -> (loss, logs)``.

    ``module``: the `AudioVLMLightningModule` (its ``model``, ``audio_vlm``, stage); ``batch``: the collated
    batch (``labels`` (B, L), ``text_twin`` when ``needs_transcript``); ``outputs``: the student forward's
    (``loss``: the model's mean next-token cross-entropy, ``logits`` (B, L, V)). Returns the scalar to minimise
    and a dict of detached scalars to log (``train/<name>``).

    ``needs_transcript``: the loss reads each sample's transcript (batches carry ``batch["text_twin"]``; samples
    without one are skipped, counted as ``no_transcript``). `init_args` lists the constructor's settings, so
    `spec` can record the loss as plain data (hyper-parameters, checkpoints)."""

    needs_transcript: bool = False
    # False: ``outputs.logits`` are only the label positions' (N, V) (`recipes.training.label_logits`), ``outputs.loss``
    # their mean cross-entropy; True: the full (B, L, V) logits of the stock forward.
    needs_full_logits: bool = False

    def __call__(self, module, batch: dict, outputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def init_args(self) -> dict[str, Any]:
        return {}

    def spec(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}``: the YAML that builds this loss again (`build_loss`)."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.init_args()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args().items())
        return f"{type(self).__name__}({args})"


def build_loss(value: Loss | dict | None) -> Loss:
    """A `Loss` from ``None`` (the default, `CrossEntropy`), an instance, or ``{"class_path", "init_args"}``."""
    if value is None:
        from recipes.losses.cross_entropy import CrossEntropy

        return CrossEntropy()
    if isinstance(value, Loss):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("class_path"), str):
        raise ValueError(
            f"loss must be a recipes.losses.Loss or {{'class_path': ..., 'init_args': {{...}}}}, got {value!r}"
        )
    path = value["class_path"]
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Loss)):
        raise ValueError(f"loss class_path {path!r} is not an importable recipes.losses.Loss subclass")
    return cls(**dict(value.get("init_args") or {}))
