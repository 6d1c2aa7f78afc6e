"""`AudioContextExtension`: which audio context extension to apply, validated at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from extension.vlat import VLAT_STRATEGIES

METHODS: tuple[str, ...] = ("none", "whole_pi", "whole_yarn", "partial_pi", "partial_yarn")
WHOLE_METHODS: tuple[str, ...] = ("whole_pi", "whole_yarn")
PARTIAL_METHODS: tuple[str, ...] = ("partial_pi", "partial_yarn")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class AudioContextExtension:
    """Settings of the audio context extension (method note: Partial YaRN, whole-context baselines, VLAT).

    Attributes:
        method: "none" | "whole_pi" | "whole_yarn" | "partial_pi" | "partial_yarn".
        base_audio_seconds: audio length the model is familiar with (> 0); spans longer than it are squeezed.
        cutoff: Partial YaRN frequency index c; i < c uses raw positions, i >= c stretched ones (>= 0,
            at most head_dim/2, see `validate_for_head_dim`). Only partial_yarn has one.
        temperature: attention temperature t on audio tokens (> 0). Only partial_yarn has one.
        vlat: VLAT on during training (with a partial method, or "none" for vanilla inference).
        vlat_strategy: one of the paper's Table 6 strategies (see `extension.vlat`).
        vlat_seed: seed of the VLAT sampler.
    """

    method: str = "none"
    base_audio_seconds: float = 30.0
    cutoff: int = 0
    temperature: float = 1.0
    vlat: bool = False
    vlat_strategy: str = "default"
    vlat_seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not _is_number(self.base_audio_seconds) or self.base_audio_seconds <= 0:
            raise ValueError(f"base_audio_seconds must be a finite number > 0, got {self.base_audio_seconds!r}")
        if not _is_int(self.cutoff) or self.cutoff < 0:
            raise ValueError(f"cutoff must be an int >= 0, got {self.cutoff!r}")
        if not _is_number(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not isinstance(self.vlat, bool):
            raise ValueError(f"vlat must be a bool, got {self.vlat!r}")
        if self.vlat_strategy not in VLAT_STRATEGIES:
            raise ValueError(f"vlat_strategy must be one of {VLAT_STRATEGIES}, got {self.vlat_strategy!r}")
        if not _is_int(self.vlat_seed):
            raise ValueError(f"vlat_seed must be an int, got {self.vlat_seed!r}")
        # Normalise so that to_dict/from_dict and equality do not depend on 2 vs 2.0.
        self.base_audio_seconds = float(self.base_audio_seconds)
        self.temperature = float(self.temperature)

        if self.method != "partial_yarn" and (self.cutoff != 0 or self.temperature != 1.0):
            # Partial PI IS cutoff 0 / temperature 1; the other methods have neither. Silently ignoring a
            # given cutoff or temperature would run a different experiment than the one asked for.
            raise ValueError(
                f"method {self.method!r} takes no cutoff/temperature (must be 0 and 1.0), got "
                f"cutoff={self.cutoff!r}, temperature={self.temperature!r}; use method='partial_yarn'"
            )
        if self.vlat and self.method in WHOLE_METHODS:
            raise ValueError(
                f"vlat=True needs a partial method or 'none', got method {self.method!r} "
                "(Whole YaRN diverges under VLAT; VLAT remaps audio spans only)"
            )

    @property
    def is_partial(self) -> bool:
        """True for partial_pi / partial_yarn (audio-only stretch)."""
        return self.method in PARTIAL_METHODS

    @property
    def is_whole(self) -> bool:
        """True for whole_pi / whole_yarn (every position scaled)."""
        return self.method in WHOLE_METHODS

    @property
    def effective_cutoff(self) -> int:
        """Cutoff actually used: 0 for every method but partial_yarn."""
        return self.cutoff if self.method == "partial_yarn" else 0

    @property
    def effective_temperature(self) -> float:
        """Temperature actually used: 1.0 for every method but partial_yarn."""
        return self.temperature if self.method == "partial_yarn" else 1.0

    def base_audio_tokens(self, tokens_per_second: float) -> int:
        """Base audio context in tokens: round(base_audio_seconds * tokens_per_second), at least 1."""
        if not _is_number(tokens_per_second) or tokens_per_second <= 0:
            raise ValueError(f"tokens_per_second must be a finite number > 0, got {tokens_per_second!r}")
        tokens = round(self.base_audio_seconds * tokens_per_second)
        if tokens < 1:
            raise ValueError(
                f"base_audio_seconds={self.base_audio_seconds} at {tokens_per_second} tokens/s is {tokens} tokens; "
                "need at least 1"
            )
        return int(tokens)

    def validate_for_head_dim(self, head_dim: int) -> None:
        """Raise ValueError if the cutoff does not fit a rotary head of ``head_dim`` (cutoff <= head_dim // 2)."""
        if not _is_int(head_dim) or head_dim <= 0 or head_dim % 2:
            raise ValueError(f"head_dim must be a positive even int, got {head_dim!r}")
        if self.cutoff > head_dim // 2:
            raise ValueError(f"cutoff {self.cutoff} exceeds head_dim // 2 = {head_dim // 2} (head_dim {head_dim})")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AudioContextExtension":
        """Inverse of `to_dict`; missing keys take their defaults, unknown keys are refused."""
        if not isinstance(d, dict):
            raise ValueError(f"from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AudioContextExtension keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)
