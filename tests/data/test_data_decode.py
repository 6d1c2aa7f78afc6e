"""Audio decoding: the fast FLAC path (miniaudio) gives libsndfile's samples, refuses truncated files instead of
returning part of them, and falls back to libsndfile when miniaudio is missing."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import soundfile as sf

from recipes.data.samples import decode_audio
from recipes.data.skips import SampleSkipped, SkipReason


def _flac(audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="FLAC", subtype=subtype)
    return buf.getvalue()


def _clip(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(channels)
    audio = 0.2 * rng.standard_normal((int(seconds * sr), channels)).astype(np.float32)
    return audio[:, 0] if channels == 1 else audio


@pytest.mark.parametrize(("channels", "subtype"), [(1, "PCM_16"), (2, "PCM_16"), (1, "PCM_24"), (2, "PCM_24")])
def test_fast_flac_equals_libsndfile(channels, subtype):
    data = _flac(_clip(1.5, 44100, channels), 44100, subtype)
    audio, sr = decode_audio(data, "flac")
    expected, expected_sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    assert sr == expected_sr == 44100
    assert audio.shape == expected.shape and audio.dtype == np.float32
    assert np.array_equal(audio, expected)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_flac_is_refused_not_shortened(keep):
    data = _flac(_clip(3.0, 44100), 44100)
    with pytest.raises(SampleSkipped) as info:
        decode_audio(data[: int(len(data) * keep)], "flac")
    assert info.value.reason == SkipReason.UNDECODABLE_AUDIO


def test_too_long_flac_is_refused_from_its_header():
    with pytest.raises(SampleSkipped) as info:
        decode_audio(_flac(np.zeros(8000 * 25, np.float32), 8000), "flac", max_seconds=20.0)
    assert info.value.reason == SkipReason.TOO_LONG and "25.0 s" in info.value.detail


def test_without_miniaudio_libsndfile_decodes(monkeypatch):
    data = _flac(_clip(1.0, 22050, 2), 22050)
    fast, _ = decode_audio(data, "flac")
    monkeypatch.setitem(sys.modules, "miniaudio", None)  # `import miniaudio` now raises ImportError
    slow, sr = decode_audio(data, "flac")
    assert sr == 22050 and np.array_equal(fast, slow)
    with pytest.raises(SampleSkipped) as info:
        decode_audio(data[: len(data) // 2], "flac")
    assert info.value.reason == SkipReason.UNDECODABLE_AUDIO
