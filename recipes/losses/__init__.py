"""Training losses: the seam between a batch's forward and the number the optimizer minimises.

A loss is a class, chosen in the recipe YAML by its import path like any jsonargparse class (no registry)::

    model:
      loss:
        class_path: recipes.losses.TextTeacherKL
        init_args: {temperature: 2.0, weight: 1.0, ce_weight: 1.0}

and called by `recipes.training.module.AudioVLMLightningModule.training_step` as ``loss, logs = loss_fn(module, batch,
outputs)`` (``outputs``: the student forward's, with ``.loss`` and ``.logits``); each entry of ``logs`` is logged
as ``train/<name>``. The default is `CrossEntropy` (the model's own next-token loss, as before the seam). A new
loss is one file here subclassing `Loss` plus its import line below; a loss that reads each sample's transcript
sets ``needs_transcript = True`` and the data module then builds text twins (`recipes.data.text_twin`).
"""

import importlib
import inspect
from collections.abc import Mapping

from recipes.losses.base import Loss
from recipes.losses.cross_entropy import CrossEntropy
from recipes.losses.text_teacher_kl import TextTeacherKL


def build_loss(value: Loss | dict | None) -> Loss:
    """A `Loss` from ``None`` (the default, `CrossEntropy`), an instance, or ``{"class_path", "init_args"}``."""
    if value is None:
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
    init_args = value.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ValueError(f"loss {path!r} init_args must be a mapping of its settings, got {init_args!r}")
    try:  # a misspelt or missing setting is named with the ones the class takes, before anything is built
        inspect.signature(cls).bind(**init_args)
    except TypeError as exc:
        raise ValueError(f"loss {path!r} init_args {dict(init_args)!r}: {exc}; it takes {_settings(cls)}") from None
    return cls(**init_args)


def _settings(cls: type) -> list[str]:
    return [n for n, p in inspect.signature(cls).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]


__all__ = ["CrossEntropy", "Loss", "TextTeacherKL", "build_loss"]
