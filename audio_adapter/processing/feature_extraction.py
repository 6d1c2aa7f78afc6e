"""`AudioVLMFeatureExtractor`: the processor's audio part as a transformers feature extractor.

Raw clips (any rate, mono or stereo, float or PCM integers) -> 16 kHz mono -> Whisper log-mel windows, computed by
this project's pure-torch code (`audio_features`: no torchaudio, no numpy STFT). Saved and loaded like any
transformers feature extractor (``feature_extractor_type`` in the processor's ``processor_config.json``) and
registered with `AutoFeatureExtractor` for every family's config (`families.FAMILIES`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoFeatureExtractor, BatchFeature, SequenceFeatureExtractor

from ..encoders.whisper import SAMPLING_RATE, WHISPER
from ..families import FAMILIES
from .audio_features import LogMelSpectrogram, extract_features, prepare_waveform


class AudioVLMFeatureExtractor(SequenceFeatureExtractor):
    """Clips -> ``input_features`` (num_windows, feature_size, chunk frames) and ``input_features_mask``
    (num_windows, chunk frames), windows in clip order; a clip longer than ``chunk_length`` seconds spans several.

    Args:
        feature_size: mel bins (128 for Whisper large-v3, 80 before).
        sampling_rate: the rate features are computed at; only 16000 (Whisper's) is accepted. Input clips may
            have any rate: ``__call__`` resamples them.
        chunk_length: seconds of one encoder window (Whisper: 30).
        hop_length, n_fft: Whisper's STFT; only 160 and 400 are accepted (the mel code and `audio_lengths` use them).
    """

    model_input_names = ["input_features", "input_features_mask"]

    def __init__(
        self,
        feature_size: int = WHISPER.num_mel_bins,
        sampling_rate: int = SAMPLING_RATE,
        chunk_length: float = WHISPER.window_seconds,
        hop_length: int = WHISPER.hop_length,
        n_fft: int = WHISPER.n_fft,
        padding_value: float = 0.0,
        **kwargs,
    ):
        for name, value, fixed in (
            ("sampling_rate", sampling_rate, SAMPLING_RATE),
            ("hop_length", hop_length, WHISPER.hop_length),
            ("n_fft", n_fft, WHISPER.n_fft),
        ):
            if value != fixed:
                raise ValueError(f"{name} must be {fixed} (Whisper's log-mel, the one computed here), got {value!r}")
        kwargs.setdefault("return_attention_mask", True)
        super().__init__(
            feature_size=int(feature_size), sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        self.chunk_length = float(chunk_length)
        self.hop_length = hop_length
        self.n_fft = n_fft
        # Validates feature_size and chunk_length (a whole number of hops); never serialised (see `to_dict`).
        self._mel = LogMelSpectrogram(n_mels=self.feature_size, chunk_seconds=self.chunk_length)

    @property
    def mel(self) -> LogMelSpectrogram:
        """The log-mel transform of one window: (B, chunk samples) -> (B, feature_size, chunk frames)."""
        return self._mel

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("_mel", None)
        return output

    @classmethod
    def from_whisper(cls, whisper_feature_extractor) -> AudioVLMFeatureExtractor:
        """The settings of a `transformers.WhisperFeatureExtractor` (mel bins, window seconds); refused when its
        rate, hop or FFT size differ from what the pure-torch mel computes."""
        fe = whisper_feature_extractor
        return cls(
            feature_size=fe.feature_size,
            sampling_rate=fe.sampling_rate,
            chunk_length=float(fe.chunk_length),
            hop_length=fe.hop_length,
            n_fft=fe.n_fft,
        )

    # ------------------------------------------------------------------ waveforms
    @staticmethod
    def as_clip_list(audio) -> list:
        """One 1-D clip or a list/tuple of clips -> a list of clips. A bare 2-D array is refused: one
        multi-channel clip, or several clips? (ambiguous; a silent guess would be a wrong result)."""
        if isinstance(audio, (np.ndarray, torch.Tensor)):
            if audio.ndim != 1:
                raise ValueError(
                    f"audio is one bare array of shape {tuple(audio.shape)}: ambiguous (one multi-channel clip, "
                    f"or {audio.shape[0]} clips?); pass a list of 1-D arrays, one per clip (downmix stereo first), "
                    "or [array] for one multi-channel clip"
                )
            return [audio]
        return list(audio)

    @staticmethod
    def prepare(audio: Sequence, sampling_rate) -> list[torch.Tensor]:
        """Clips (any rate, mono or stereo) -> 16 kHz mono float32 (T,) tensors. ``sampling_rate`` is one rate
        for all clips or one per clip, and is required (no rate is assumed)."""
        rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple)) else [sampling_rate] * len(audio)
        if len(rates) != len(audio):
            raise ValueError(f"got {len(rates)} sampling rates for {len(audio)} audio clips")
        if any(rate is None for rate in rates):
            raise ValueError(
                f"sampling_rate is required with raw audio arrays (got {sampling_rate!r}): pass the clips' rate in Hz, "
                "e.g. sampling_rate=44100 (one for all clips or one per clip); no rate is assumed"
            )
        return [prepare_waveform(clip, rate) for clip, rate in zip(audio, rates)]

    def features(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """16 kHz mono (T,) clips -> ``input_features``, ``input_features_mask``, ``audio_chunk_counts`` (see
        `audio_features.extract_features`)."""
        return extract_features(waveforms, self.mel)

    def __call__(self, raw_speech, sampling_rate=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Clips -> `BatchFeature` with ``input_features`` and ``input_features_mask``. ``sampling_rate``: the
        clips' rate in Hz (one, or one per clip), required."""
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        waveforms = self.prepare(self.as_clip_list(raw_speech), sampling_rate)
        out = self.features(waveforms)
        return BatchFeature({name: out[name] for name in self.model_input_names}, tensor_type=return_tensors)


for _family in FAMILIES.values():
    AutoFeatureExtractor.register(_family.config_class, AudioVLMFeatureExtractor, exist_ok=True)
