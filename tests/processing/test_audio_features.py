"""Pure-torch Whisper log-mel against `transformers.WhisperFeatureExtractor`, resampling, lengths, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from audio_adapter.encoders.audio_lengths import audio_token_count
from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.processing.audio_features import (
    LogMelSpectrogram,
    chunk_waveform,
    extract_features,
    prepare_waveform,
    resample,
    to_mono,
)


def speech_like(seconds: float, seed: int = 0, sr: int = SAMPLING_RATE) -> np.ndarray:
    """Voiced syllables (gliding pitch, harmonics shaped by two moving formants), fricative noise bursts
    and pauses: broadband, strongly non-stationary, with real silences - the cases a log-mel floor sees."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t) + 15 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    f1 = 500 + 300 * np.sin(2 * np.pi * 1.3 * t)
    f2 = 1500 + 700 * np.sin(2 * np.pi * 0.9 * t + 1.0)
    voiced = np.zeros(n)
    for k in range(1, 30):
        freq = k * pitch
        gain = np.exp(-(((freq - f1) / 150) ** 2)) + 0.5 * np.exp(-(((freq - f2) / 250) ** 2)) + 0.02
        voiced += gain * np.sin(k * phase) * (freq < sr / 2)
    syllables = (np.sin(2 * np.pi * 3.5 * t) > -0.2).astype(float)
    bursts = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.7 * t + 0.5) > 0.85)
    pauses = (np.sin(2 * np.pi * 0.25 * t) > -0.7).astype(float)
    audio = (0.08 * voiced * syllables + 0.05 * bursts) * pauses + 1e-4 * rng.standard_normal(n)
    return audio.astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [0.005, 4.0, 29.99, 30.0])
def test_log_mel_matches_whisper_feature_extractor(n_mels, seconds):
    audio = speech_like(seconds, seed=n_mels)
    reference = WhisperFeatureExtractor(feature_size=n_mels)(
        audio, sampling_rate=SAMPLING_RATE, return_tensors="np", padding="max_length"
    )["input_features"][0]
    ours = extract_features([torch.from_numpy(audio)], LogMelSpectrogram(n_mels=n_mels))["input_features"][0]
    assert ours.shape == reference.shape == (n_mels, 3000)
    assert np.abs(ours.numpy() - reference).max() <= 1e-3


def test_scanned_lengths_equal_given_lengths():
    mel = LogMelSpectrogram(n_mels=80)
    windows = torch.zeros(3, 480000)
    for row, seconds in enumerate((0.5, 7.0, 0.0)):
        n = int(seconds * SAMPLING_RATE)
        windows[row, :n] = torch.from_numpy(speech_like(seconds, seed=row)) if n else 0
    lengths = torch.tensor([8000, 112000, 0])
    assert torch.equal(mel(windows), mel(windows, lengths))
    assert torch.equal(mel(windows[2:]), torch.full((1, 80, 3000), (-10.0 + 4) / 4))


def test_feature_mask_matches_whisper_attention_mask():
    audio = speech_like(4.37)
    reference = WhisperFeatureExtractor(feature_size=128)(
        audio, sampling_rate=SAMPLING_RATE, return_tensors="np", padding="max_length", return_attention_mask=True
    )["attention_mask"][0]
    mask = extract_features([torch.from_numpy(audio)], LogMelSpectrogram())["input_features_mask"][0]
    assert mask.tolist() == reference.tolist()


@pytest.mark.parametrize(
    ("seconds", "stride", "tokens"),
    [(4.0, 1, 200), (75.0, 1, 3750), (4.0, 2, 100), (75.0, 2, 1875), (30.0, 1, 1500), (0.01, 1, 1)],
)
def test_audio_token_count(seconds, stride, tokens):
    assert audio_token_count(int(seconds * SAMPLING_RATE), frames_per_token=stride) == tokens


def test_long_clip_is_cut_into_30s_windows():
    clip = torch.from_numpy(speech_like(75.0))
    windows, lengths = chunk_waveform(clip)
    assert windows.shape == (3, 480000) and lengths.tolist() == [480000, 480000, 240000]
    assert torch.equal(windows.reshape(-1)[: clip.numel()], clip) and windows[2, 240000:].abs().max() == 0
    out = extract_features([clip, clip[:64000]], LogMelSpectrogram())
    assert out["audio_chunk_counts"].tolist() == [3, 1]
    assert out["input_features"].shape == (4, 128, 3000)
    assert out["input_features_mask"].sum(-1).tolist() == [3000, 3000, 1500, 400]


def _tone(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resample_tone_to_16k(orig_sr):
    """A band-limited tone resampled equals the same tone sampled at 16 kHz (away from the edges)."""
    out = resample(torch.from_numpy(_tone(1000.0, orig_sr)).float(), orig_sr)
    expected = _tone(1000.0, SAMPLING_RATE)
    assert out.shape[-1] == SAMPLING_RATE
    interior = slice(400, -400)
    assert np.abs(out.numpy()[interior] - expected[interior]).max() < 2e-3


def _direct_windowed_sinc(
    x: np.ndarray,
    orig_sr: int,
    target_sr: int,
    width: int = 16,
    rolloff: float = 0.945,
    beta: float = 14.769656459379492,
) -> np.ndarray:
    """The resampler's definition evaluated sample by sample in float64: output n is
    sum_k x[k] * (b / orig) * sinc(t) * kaiser(t / width), t = (k / orig - n / new) * b, b = min(orig, new) * rolloff,
    with orig:new the reduced rate ratio and the Kaiser window zero for |t| >= width."""
    from math import gcd

    g = gcd(orig_sr, target_sr)
    orig, new = orig_sr // g, target_sr // g
    base = min(orig, new) * rolloff
    n_out = -(-len(x) * new // orig)
    k = np.arange(len(x))[None, :]
    t = (k / orig - np.arange(n_out)[:, None] / new) * base
    inside = np.abs(t) < width
    kaiser = np.i0(beta * np.sqrt(np.clip(1 - (t / width) ** 2, 0, None))) / np.i0(beta)
    h = np.where(inside, np.sinc(t) * kaiser * base / orig, 0.0)
    return h @ x.astype(np.float64)


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000, 16001])
def test_resample_matches_direct_windowed_sinc(orig_sr):
    """The grouped polyphase implementation computes exactly the filter it documents, edges included."""
    x = np.random.default_rng(orig_sr).standard_normal(700).astype(np.float32)
    out = resample(torch.from_numpy(x), orig_sr).numpy()
    expected = _direct_windowed_sinc(x, orig_sr, SAMPLING_RATE)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-5


def test_resample_batched_rows_are_independent():
    x = torch.randn(3, 2, 4410)
    out = resample(x, 44100)
    assert out.shape == (3, 2, 1600)
    assert torch.allclose(out[1, 0], resample(x[1, 0], 44100), atol=1e-6)


def test_resample_removes_content_above_new_nyquist():
    out = resample(torch.from_numpy(_tone(12000.0, 48000)).float(), 48000)
    assert out[400:-400].abs().max() < 1e-2


def test_stereo_downmix_either_layout():
    left, right = _tone(300.0, 16000), _tone(700.0, 16000)
    channels_first = np.stack([left, right]).astype(np.float32)
    expected = (left + right) / 2
    assert np.allclose(to_mono(channels_first).numpy(), expected, atol=1e-6)
    assert np.allclose(to_mono(channels_first.T).numpy(), expected, atol=1e-6)


def test_prepare_waveform_scales_pcm_int16():
    pcm = (np.clip(_tone(440.0, 16000) * 0.5, -1, 1) * 32767).astype(np.int16)
    out = prepare_waveform(pcm, 16000)
    assert out.dtype == torch.float32 and abs(float(out.abs().max()) - 0.5) < 1e-3


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NaN"),
        (np.zeros((2, 3, 4), dtype=np.float32), "1-D"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_bad_audio_raises_with_the_value(audio, match):
    with pytest.raises(ValueError, match=match):
        prepare_waveform(audio, 16000)


@pytest.mark.parametrize("rate", [0, -16000, 44100.5])
def test_bad_sampling_rate_raises(rate):
    with pytest.raises(ValueError, match=str(rate)):
        prepare_waveform(np.ones(100, dtype=np.float32), rate)


def test_zero_samples_has_no_token_count():
    with pytest.raises(ValueError, match="0 samples"):
        audio_token_count(0)
