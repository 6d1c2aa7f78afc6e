"""Helpers of the CLI tests (tests/test_cli_*.py): a tiny checkpoint directory and audio files on disk."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from audio_adapter.testing import tiny_model_and_processor
from tests.conftest import tone_clip


def save_tiny_checkpoint(directory: Path, seed: int = 0, **overrides) -> Path:
    """``model.save_pretrained(d); processor.save_pretrained(d)`` of a tiny random model; returns ``d``."""
    model, processor = tiny_model_and_processor(seed=seed, **overrides)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def write_tone(path: Path, seconds: float, freq: float = 440.0, sr: int = 16000, seed: int = 0) -> Path:
    """A tone clip written with soundfile (format from the suffix)."""
    sf.write(str(path), tone_clip(seconds, freq, sr=sr, seed=seed), sr)
    return path
