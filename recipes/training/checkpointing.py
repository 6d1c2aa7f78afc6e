"""Crash-safe Lightning checkpoints: write to a temporary file in the target folder, fsync, then ``os.replace``.

A process killed (or a disk filling up) in the middle of a write leaves the previous checkpoint under the same
name intact and readable; the partial temporary file is removed when the failure is an exception, and is never
picked up by ``ckpt_path="last"`` (it does not end in ``.ckpt``).

Reading: a checkpoint that cannot be read (cut short by a copy or a full disk, overwritten) is named, and the
newest other readable checkpoint of the same folder is used instead (with save_last + save_top_k, the step
checkpoint written with it); with none, the error names the file and what to do.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..common.atomic import atomic_open

logger = logging.getLogger(__name__)


class CheckpointDamagedError(RuntimeError):
    """A checkpoint file cannot be read and no other readable checkpoint lies beside it."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose ``save_checkpoint`` is atomic on local file systems.

    Remote paths (``s3://`` ...) fall back to Lightning's own writer (fsspec transactions)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` with `storage_options` arg"
                f" is not supported for `{self.__class__.__name__}`. Please implement your custom `CheckpointIO`"
                " to define how you'd like to use `storage_options`."
            )
        fs = get_filesystem(path)
        if "file" not in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, *args, **kwargs) -> dict[str, Any]:
        """Lightning's reader; a damaged local file falls back to the newest readable ``*.ckpt`` beside it
        (logged as a warning naming both files), else raises `CheckpointDamagedError` naming the file."""
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as exc:
            if _not_damage(exc) or "://" in str(path):
                raise
            damage = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        bad = Path(path)
        others = sorted(
            (p for p in bad.parent.glob("*.ckpt") if p.is_file() and p.resolve() != bad.resolve()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for other in others:
            try:
                checkpoint = super().load_checkpoint(other, *args, **kwargs)
            except Exception as exc:
                logger.warning("checkpoint %s cannot be read either (%s)", other, type(exc).__name__)
                continue
            logger.warning(
                "checkpoint %s is damaged (%s); resuming from %s instead (global step %s). Delete the damaged file "
                "once the run goes on.",
                bad,
                damage,
                other,
                checkpoint.get("global_step"),
            )
            return checkpoint
        raise CheckpointDamagedError(
            f"checkpoint {bad} is damaged and cannot be read ({damage}), and no other readable checkpoint lies in "
            f"{bad.parent}. Delete {bad} to start the run over, or pass --ckpt_path with another checkpoint file."
        )


def _not_damage(exc: Exception) -> bool:
    """Errors that say nothing about the file's bytes: torch refusing a type under weights_only loading."""
    return isinstance(exc, pickle.UnpicklingError) and str(exc).startswith("Weights only load failed")
