"""`Loss`: what every training loss implements (`recipes.losses.build_loss` turns a YAML spec into one)."""

from __future__ import annotations

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
