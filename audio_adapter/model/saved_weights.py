"""A saved audio model never loads with random audio weights: `AudioWeightsLoadingMixin.from_pretrained`.

Stock ``from_pretrained`` initialises every weight a checkpoint lacks and only logs a MISSING table, so a folder
without ``audio_tower.*`` or ``audio_projector.*`` (or whose ``projector_type`` was edited: other keys, other
shapes) would load an audio model that hears noise. The audio model asks transformers for its own loading
report (the public ``output_loading_info=True``) and raises `CheckpointMismatchError` naming every audio weight
that was missing, unexpected or of another shape. Other keys keep the stock behaviour.

`load_pretrained_parts` loads a *stock* VLM checkpoint into the audio class, where the audio modules are
expected to be missing (they come from Whisper and a fresh projector); it does so inside `fresh_audio_modules`.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator

AUDIO_WEIGHT = re.compile(r"^(audio_tower|audio_projector)\.")
_FRESH_AUDIO_MODULES = contextvars.ContextVar("fresh_audio_modules", default=False)


class CheckpointMismatchError(ValueError):
    """A checkpoint did not cover the module it was loaded into (or carried unexpected weights)."""


@contextlib.contextmanager
def fresh_audio_modules() -> Iterator[None]:
    """Within: loading an audio model from a checkpoint without audio weights is allowed (the caller fills
    them, as `load_pretrained_parts` does)."""
    token = _FRESH_AUDIO_MODULES.set(True)
    try:
        yield
    finally:
        _FRESH_AUDIO_MODULES.reset(token)


def audio_weight_problems(info: dict) -> list[str]:
    """The audio weights a transformers loading report (``output_loading_info``) lists as missing, unexpected or
    of another shape, one description each."""
    problems = [f"missing {k}" for k in sorted(info.get("missing_keys", ())) if AUDIO_WEIGHT.match(k)]
    problems += [f"unexpected {k}" for k in sorted(info.get("unexpected_keys", ())) if AUDIO_WEIGHT.match(k)]
    for key, saved, expected in sorted(info.get("mismatched_keys", ()), key=lambda entry: entry[0]):
        if AUDIO_WEIGHT.match(key):
            problems.append(f"{key} of shape {tuple(saved)} in the checkpoint, {tuple(expected)} in the model")
    return problems


class AudioWeightsLoadingMixin:
    """``from_pretrained`` that raises `CheckpointMismatchError` unless every audio weight came from the
    checkpoint (outside `fresh_audio_modules`); otherwise the stock method, same arguments and return."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = [] if _FRESH_AUDIO_MODULES.get() else audio_weight_problems(info)
        if problems:
            raise CheckpointMismatchError(
                f"{pretrained_model_name_or_path} does not hold this model's audio weights ({len(problems)} "
                f"problem(s): {'; '.join(problems[:8])}); they would be random. Was the folder saved whole "
                "(model.save_pretrained), and does its config (projector_type, projector_stack_factor, "
                "audio_config) match the weights? To build a model with fresh audio weights from a stock VLM and "
                "Whisper, use load_pretrained_parts / python -m scripts.assemble"
            )
        return (model, info) if want_info else model
