"""`WhisperGeometry`: the one place the Whisper encoder's numbers live, checked against stock transformers."""

from __future__ import annotations

from transformers import WhisperConfig, WhisperFeatureExtractor

from audio_adapter.encoders.audio_lengths import audio_token_count, tokens_per_second, window_seconds
from audio_adapter.encoders.whisper import SAMPLING_RATE, WHISPER, WhisperGeometry
from audio_adapter.testing import TINY_3S


def test_default_geometry_is_stock_whispers():
    stock = WhisperFeatureExtractor(feature_size=WHISPER.num_mel_bins)
    ours = WHISPER.preprocessor_config()
    assert ours == {key: getattr(stock, key) for key in ours}
    assert ours["n_samples"] == 480000 and ours["nb_max_frames"] == 3000 and SAMPLING_RATE == 16000
    assert WHISPER.max_source_positions == WhisperConfig().max_source_positions == 1500
    assert WHISPER.encoder_frames_per_second == 50.0 == tokens_per_second(1)


def test_geometry_of_a_config_follows_its_window_and_mel_bins():
    config = WhisperConfig(**TINY_3S)
    tiny = WhisperGeometry.of(config)
    assert (tiny.window_mel_frames, tiny.window_samples, tiny.window_seconds) == (300, 48000, 3.0)
    assert tiny.num_mel_bins == 80 and tiny.hop_length == WHISPER.hop_length
    assert tiny == WhisperGeometry(max_source_positions=150, num_mel_bins=80)
    assert window_seconds(150) == 3.0
    # the length rule over the tiny window: 4 s = one full 3 s window (150 tokens) + 1 s (50 tokens)
    assert audio_token_count(4 * SAMPLING_RATE, chunk_seconds=tiny.window_seconds) == 200
