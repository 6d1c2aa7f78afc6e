"""The Whisper encoder's geometry: what every other module asks instead of assuming 16 kHz, 160, 2 or 3000.

Whisper reads 16 kHz audio as log-mel frames (periodic Hann STFT, n_fft 400, hop 160 samples = 10 ms) in fixed
windows of ``2 * max_source_positions`` mel frames (3000 = 30 s for the released checkpoints), and its second
convolution has stride 2, so one encoder frame covers 2 mel frames (20 ms; 50 encoder frames a second). The
length rule (`audio_adapter.encoders.audio_lengths`), the input checks, the real-frames forward, the log-mel front
end and the loader read these numbers from a `WhisperGeometry`: `WHISPER` (the released checkpoints' geometry)
or `WhisperGeometry.of(audio_config)` (a model's own window and mel bins, e.g. the 3 s tiny test encoders).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class WhisperGeometry:
    """Input and output geometry of one Whisper encoder.

    ``sampling_rate`` (Hz), ``hop_length`` and ``n_fft`` (samples) are the log-mel front end's; ``conv_stride``
    (mel frames per encoder frame) the encoder's; ``max_source_positions`` (encoder frames per window) and
    ``num_mel_bins`` come from the checkpoint's `WhisperConfig`.
    """

    sampling_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 400
    conv_stride: int = 2
    max_source_positions: int = 1500
    num_mel_bins: int = 128

    @classmethod
    def of(cls, audio_config) -> WhisperGeometry:
        """The geometry of the encoder ``audio_config`` (a `WhisperConfig`) describes: its window and mel bins."""
        return cls(max_source_positions=int(audio_config.max_source_positions), num_mel_bins=audio_config.num_mel_bins)

    def with_window(self, max_source_positions: int) -> WhisperGeometry:
        """This geometry with a window of ``max_source_positions`` encoder frames."""
        return dataclasses.replace(self, max_source_positions=int(max_source_positions))

    @property
    def window_mel_frames(self) -> int:
        """Mel frames of one full window (3000 for 1500 positions)."""
        return self.max_source_positions * self.conv_stride

    @property
    def window_samples(self) -> int:
        """Samples of one full window (480000 for 1500 positions at 16 kHz)."""
        return self.window_mel_frames * self.hop_length

    @property
    def window_seconds(self) -> float:
        """Seconds one window covers (30.0 for 1500 positions)."""
        return self.window_samples / self.sampling_rate

    @property
    def encoder_frames_per_second(self) -> float:
        """Encoder frames per second of audio (50 at 16 kHz, hop 160, stride 2)."""
        return self.sampling_rate / self.hop_length / self.conv_stride

    def preprocessor_config(self) -> dict:
        """The ``WhisperFeatureExtractor`` fields of a Whisper hub folder's preprocessor_config.json."""
        return {
            "chunk_length": round(self.window_seconds),
            "feature_size": self.num_mel_bins,
            "hop_length": self.hop_length,
            "n_fft": self.n_fft,
            "n_samples": self.window_samples,
            "nb_max_frames": self.window_mel_frames,
            "sampling_rate": self.sampling_rate,
        }


WHISPER = WhisperGeometry()  # the released checkpoints' (whisper-large-v3-turbo: 30 s windows, 128 mel bins)

# The rate the whole pipeline works at (decoding resamples to it): the encoder's.
SAMPLING_RATE = WHISPER.sampling_rate
