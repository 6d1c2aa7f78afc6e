"""Shared pieces of the offline-parts tests: the converted folders (built once per machine into the project's
cache, `audio_adapter.offline_parts.build_offline_parts`), the eSpeak sentences and a word error rate."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

# Spoken by eSpeak NG (recipes/tts.py), en-us at 120 words a minute: slow robotic speech tiny.en mostly follows.
SENTENCES = (
    "Please turn off the lights in the kitchen.",
    "three one seven",
    "The weather is nice today.",
    "Open the window and let the fresh air in.",
    "My phone number is five five five, one two three four.",
    "She sells sea shells by the sea shore.",
)
SPEECH_RATE = 120
_DIGITS = "zero one two three four five six seven eight nine".split()


def parts_cache_dir() -> Path:
    """Where the tests keep the converted folders: ``$AUDIO_VLM_CACHE/offline-parts`` (default
    ``~/.cache/audio_vlm``, as for the converted Qwen tokenizer): the conversion runs once per machine."""
    root = os.environ.get("AUDIO_VLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "audio_vlm")
    return Path(root) / "offline-parts"


@pytest.fixture(scope="session")
def offline_parts() -> dict[str, Path]:
    """``{"vlm": <smollm2-135m-instruct-vl>, "whisper": <whisper-tiny.en>}``; do not modify them."""
    from audio_adapter.offline_parts import build_offline_parts

    return build_offline_parts(parts_cache_dir())


def speech(text: str) -> np.ndarray:
    """``text`` spoken by eSpeak NG, resampled to 16 kHz mono float32 (T,)."""
    from audio_adapter.audio_features import prepare_waveform
    from recipes.tts import Speaker, synthesize

    audio, sr = synthesize(text, Speaker(voice="en-us", rate=SPEECH_RATE))
    return prepare_waveform(audio, sr).numpy()


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation; digits spelled out one by one ("3-1-7" -> three one seven)."""
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text.lower())
    return re.sub(r"[^a-z' ]+", " ", text).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after `normalise`."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)
