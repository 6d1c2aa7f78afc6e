"""VLAT (Virtual Longform Audio Training): draw a virtual length factor per training sample.

Strategies are the paper's Table 6. The sampler owns its generator so that its draws neither disturb nor
depend on the global RNG, and its state can be saved with a training checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

VLAT_STRATEGIES: tuple[str, ...] = ("default", "dense", "very_dense", "limited", "fixed")


def strategy_support(strategy: str) -> torch.Tensor:
    """The factors a strategy draws from, uniformly. Returns a float32 (K,) tensor."""
    if strategy == "default":
        return torch.tensor([1.0, 5.0, 10.0, 15.0, 20.0, 25.0])
    if strategy == "dense":
        return torch.linspace(1.0, 25.0, 100)
    if strategy == "very_dense":
        return torch.linspace(1.0, 25.0, 1000)
    if strategy == "limited":
        return torch.tensor([1.0, 5.0, 10.0])
    if strategy == "fixed":
        return torch.tensor([20.0])
    raise ValueError(f"unknown VLAT strategy {strategy!r}; valid strategies: {', '.join(VLAT_STRATEGIES)}")


class VirtualLengthSampler:
    """Draws VLAT virtual-length factors f (virtual length = base audio tokens * f), deterministically."""

    def __init__(self, strategy: str = "default", seed: int = 0):
        self._support = strategy_support(strategy)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.strategy = strategy
        self.seed = seed
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    @property
    def support(self) -> torch.Tensor:
        """(K,) float32 tensor of the possible factors (a copy)."""
        return self._support.clone()

    def sample(self, n: int) -> torch.Tensor:
        """n factors drawn uniformly from `support`. Returns float32 (n,)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        index = torch.randint(len(self._support), (n,), generator=self.generator)
        return self._support[index]

    def virtual_lengths(self, base_audio_tokens: int, n: int) -> torch.Tensor:
        """Virtual audio lengths in tokens, base_audio_tokens * factor. Returns float32 (n,)."""
        is_number = isinstance(base_audio_tokens, (int, float)) and not isinstance(base_audio_tokens, bool)
        if not is_number or base_audio_tokens <= 0:
            raise ValueError(f"base_audio_tokens must be > 0, got {base_audio_tokens!r}")
        return self.sample(n) * float(base_audio_tokens)

    def state_dict(self) -> dict[str, Any]:
        """Strategy, seed and generator state: loading it continues the same sequence of draws."""
        return {"strategy": self.strategy, "seed": self.seed, "generator_state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; a state saved under another strategy is refused (its draws would differ)."""
        missing = {"strategy", "generator_state"} - set(state)
        if missing:
            raise ValueError(f"VLAT sampler state is missing {sorted(missing)}")
        if state["strategy"] != self.strategy:
            raise ValueError(
                f"VLAT sampler state was saved with strategy {state['strategy']!r}, this sampler uses {self.strategy!r}"
            )
        self.generator.set_state(state["generator_state"])
        self.seed = int(state.get("seed", self.seed))

    def __repr__(self) -> str:
        return f"VirtualLengthSampler(strategy={self.strategy!r}, seed={self.seed})"
