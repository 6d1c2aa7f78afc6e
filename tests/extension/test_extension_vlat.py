"""extension.vlat.VirtualLengthSampler: the paper's Table 6 strategies, determinism, resume."""

from __future__ import annotations

import math

import pytest
import torch

from extension.vlat import VLAT_STRATEGIES, VirtualLengthSampler

EXPECTED_SUPPORT = {
    "default": torch.tensor([1.0, 5.0, 10.0, 15.0, 20.0, 25.0]),
    "dense": torch.linspace(1, 25, 100),
    "very_dense": torch.linspace(1, 25, 1000),
    "limited": torch.tensor([1.0, 5.0, 10.0]),
    "fixed": torch.tensor([20.0]),
}


def _chi_square_critical(dof: int, z: float = 3.09) -> float:
    """Upper 0.1 % point of chi-square(dof), Wilson-Hilferty approximation (no scipy dependency)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def test_chi_square_critical_value_is_right():
    # tabulated 0.999 quantiles of chi-square with 5 and 99 degrees of freedom
    assert _chi_square_critical(5) == pytest.approx(20.515, rel=0.02)
    assert _chi_square_critical(99) == pytest.approx(148.23, rel=0.02)


@pytest.mark.parametrize("strategy", VLAT_STRATEGIES)
def test_support_matches_table_6(strategy):
    support = VirtualLengthSampler(strategy).support
    assert support.dtype == torch.float32
    assert torch.equal(support, EXPECTED_SUPPORT[strategy])


@pytest.mark.parametrize("strategy", ["default", "dense", "very_dense", "limited"])
def test_draws_are_uniform_over_the_support(strategy):
    support = EXPECTED_SUPPORT[strategy]
    draws = VirtualLengthSampler(strategy, seed=1).sample(10_000)
    assert draws.shape == (10_000,) and draws.dtype == torch.float32
    # every draw is a support point; count how often each is drawn
    index = (draws[:, None] == support[None, :]).float().argmax(dim=1)
    assert torch.equal(support[index], draws)
    counts = torch.bincount(index, minlength=len(support)).tolist()
    assert min(counts) > 0 or len(support) > 100  # 1000 points x ~10 draws: an empty cell is plausible
    expected = len(draws) / len(support)
    statistic = sum((c - expected) ** 2 / expected for c in counts)
    assert statistic < _chi_square_critical(len(support) - 1)


def test_fixed_is_always_twenty():
    draws = VirtualLengthSampler("fixed", seed=3).sample(1000)
    assert torch.equal(draws, torch.full((1000,), 20.0))


def test_virtual_lengths_are_base_times_factor():
    a, b = VirtualLengthSampler("default", seed=7), VirtualLengthSampler("default", seed=7)
    lengths = a.virtual_lengths(750, 64)
    assert torch.equal(lengths, 750 * b.sample(64))
    assert set(lengths.tolist()) <= {750.0 * f for f in (1, 5, 10, 15, 20, 25)}


def test_same_seed_same_draws_and_global_rng_untouched():
    torch.manual_seed(123)
    expected_global = torch.rand(3)
    torch.manual_seed(123)
    first = VirtualLengthSampler("dense", seed=5).sample(200)
    assert torch.equal(torch.rand(3), expected_global)
    assert torch.equal(first, VirtualLengthSampler("dense", seed=5).sample(200))
    assert not torch.equal(first, VirtualLengthSampler("dense", seed=6).sample(200))


def test_state_dict_resume_continues_the_same_sequence():
    sampler = VirtualLengthSampler("default", seed=11)
    sampler.sample(17)
    state = sampler.state_dict()
    continued = sampler.sample(50)
    resumed = VirtualLengthSampler("default", seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample(50), continued)
    assert resumed.seed == 11


def test_load_state_of_another_strategy_raises():
    state = VirtualLengthSampler("limited").state_dict()
    with pytest.raises(ValueError, match="limited"):
        VirtualLengthSampler("default").load_state_dict(state)


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="very_dense") as info:
        VirtualLengthSampler("sparse")
    assert "'sparse'" in str(info.value)


def test_bad_sample_arguments_raise():
    sampler = VirtualLengthSampler()
    with pytest.raises(ValueError, match="-1"):
        sampler.sample(-1)
    with pytest.raises(ValueError, match="base_audio_tokens"):
        sampler.virtual_lengths(0, 4)
    assert sampler.sample(0).shape == (0,)
