"""Audio written at 8, 22.05, 44.1 and 48 kHz, and in stereo, read back from shards, gives the same log-mel
features as the 16 kHz mono original.

The same continuous signal (three tones below 1.3 kHz under a smooth envelope, i.e. band-limited well below
every Nyquist frequency) is sampled at each rate and written as a real audio file. Features are Whisper's
normalised log-mel ((log10 power + 4) / 4: one unit = 40 dB).

Stated tolerance, over the frames that cover the real audio (lossless files): mean |diff| <= 0.01 over all
mel cells; max |diff| <= 0.05 (2 dB) over the cells within 40 dB of the loudest one, and <= 0.1 (4 dB)
within 60 dB. Cells further down (the 80 dB floor, where resampling filters leave faint images) are only
held to the mean. Lossy MP3 / Ogg Vorbis: in-band (40 dB) mean |diff| <= 0.02 and max <= 0.25.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds

from audio_adapter.testing import TINY_3S
from recipes.data.collate import AudioCollator
from recipes.data.dataset import AudioShardDataset

SECONDS = 2.0
TONES = ((330.0, 0.18, 0.3), (523.25, 0.14, 1.1), (1244.5, 0.08, 2.0))  # (Hz, amplitude, phase)
MEAN_TOL, BAND40_MAX_TOL, BAND60_MAX_TOL = 0.01, 0.05, 0.1
LOSSY_MEAN_TOL, LOSSY_MAX_TOL = 0.02, 0.25


def signal(sr: int) -> np.ndarray:
    t = np.arange(int(round(SECONDS * sr))) / sr
    envelope = np.sin(np.pi * t / SECONDS) ** 2 * (1.0 + 0.5 * np.sin(2 * np.pi * 1.5 * t))
    y = sum(a * np.sin(2 * np.pi * f * t + p) for f, a, p in TONES)
    return (envelope * y).astype(np.float32)


def _bytes(audio: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


VARIANTS = {
    # key: (ext, rate, channels, format, subtype)
    "ref16k": ("wav", 16000, 1, "WAV", "FLOAT"),
    "wav8k": ("wav", 8000, 1, "WAV", "FLOAT"),
    "flac22k": ("flac", 22050, 1, "FLAC", "PCM_24"),
    "flac44k": ("flac", 44100, 1, "FLAC", "PCM_24"),
    "wav48k": ("wav", 48000, 1, "WAV", "FLOAT"),
    "stereo16k": ("wav", 16000, 2, "WAV", "FLOAT"),
    "stereo44k": ("flac", 44100, 2, "FLAC", "PCM_24"),
    "mp3_44k": ("mp3", 44100, 1, "MP3", "MPEG_LAYER_III"),
    "ogg48k": ("ogg", 48000, 1, "OGG", "VORBIS"),
}
LOSSY = {"mp3_44k", "ogg48k"}


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    from audio_adapter.testing import tiny_processor

    processor = tiny_processor(**TINY_3S)  # 3 s windows
    path = tmp_path_factory.mktemp("rates") / "rates-0.tar"
    with wds.TarWriter(str(path)) as w:
        for key, (ext, sr, channels, fmt, subtype) in VARIANTS.items():
            mono = signal(sr)
            # stereo: unequal channels whose mean is the mono signal
            audio = mono if channels == 1 else np.stack([1.5 * mono, 0.5 * mono], axis=1)
            w.write(
                {
                    "__key__": key,
                    ext: _bytes(audio, sr, fmt, subtype),
                    "json": json.dumps({"prompt": "p", "response": "r"}).encode(),
                }
            )
    ds = AudioShardDataset([str(path)], processor)
    collate = AudioCollator(processor)
    out = {}
    for sample in ds:
        assert sample["sampling_rate"] == 16000 and sample["audio"].ndim == 1
        batch = collate([sample])
        out[sample["key"]] = {
            "n": sample["audio"].shape[-1],
            "features": batch["input_features"],
            "mask": batch["input_features_mask"],
            "tokens": int(batch["audio_token_counts"][0]),
        }
    assert not ds.skip_counter, ds.skip_counter
    assert set(out) == set(VARIANTS)
    return out


def _diff(features, key):
    """|got - ref| per (frame, mel) over the real frames, and the reference values there."""
    ref, got = features["ref16k"], features[key]
    assert got["features"].shape == ref["features"].shape
    assert torch.equal(got["mask"], ref["mask"])
    valid = ref["mask"].bool()  # (chunks, frames)
    r = ref["features"].permute(0, 2, 1)[valid]  # (frames, mels)
    g = got["features"].permute(0, 2, 1)[valid]
    return (g - r).abs(), r


def _band(r: torch.Tensor, db: float) -> torch.Tensor:
    return r >= r.max() - db / 40.0  # one feature unit = 40 dB


@pytest.mark.parametrize("key", [k for k in VARIANTS if k != "ref16k" and k not in LOSSY])
def test_lossless_rates_and_stereo_match_16k_mono(features, key):
    ref, got = features["ref16k"], features[key]
    assert abs(got["n"] - ref["n"]) <= 1 and got["tokens"] == ref["tokens"]
    d, r = _diff(features, key)
    assert d.mean() <= MEAN_TOL, (key, float(d.mean()))
    assert d[_band(r, 40)].max() <= BAND40_MAX_TOL, (key, float(d[_band(r, 40)].max()))
    assert d[_band(r, 60)].max() <= BAND60_MAX_TOL, (key, float(d[_band(r, 60)].max()))


@pytest.mark.parametrize("key", sorted(LOSSY))
def test_lossy_codecs_roughly_match(features, key):
    assert abs(features[key]["n"] - features["ref16k"]["n"]) <= 0.05 * features["ref16k"]["n"]
    d, r = _diff(features, key)
    band = _band(r, 40)
    assert d[band].mean() <= LOSSY_MEAN_TOL, (key, float(d[band].mean()))
    assert d[band].max() <= LOSSY_MAX_TOL, (key, float(d[band].max()))


def test_tolerance_can_fail(features):
    """A different signal (the reference shifted by 7 frames) is far outside the tolerance."""
    shifted = dict(features)
    ref = features["ref16k"]
    shifted["shifted"] = dict(ref, features=torch.roll(ref["features"], shifts=7, dims=-1))
    d, r = _diff(shifted, "shifted")
    assert d[_band(r, 40)].max() > 10 * BAND40_MAX_TOL
