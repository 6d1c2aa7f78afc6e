"""Shared measurement discipline for every benchmark in `scripts/bench/`: interleaved A/B rounds, paired ratios,
median with a bootstrap confidence interval, and one PASS/FAIL rule.

Why paired and interleaved: on a shared machine the speed drifts by tens of percent within seconds. Running
A and B back to back inside one round (alternating which goes first) lets both see the same load, so the
per-round ratio A/B cancels most of the drift that absolute times carry. The reported figure is the median
of those ratios; its 95 % interval comes from resampling the rounds (bootstrap of the median).

Clock: `cpu_clock` (this thread's CPU time) for single-threaded measures. On a machine shared with other
jobs a thread waits for a core for an unpredictable share of the wall time; its CPU time counts only the
work it did, which is what an A/B overhead is about. Multi-process measures (data loader workers) must use
wall time (`time.perf_counter`) and say so.

PASS/FAIL is decided on the whole interval, not on the median: an overhead target passes only when the
upper bound meets it, a speed-up target only when the lower bound meets it. A CI that straddles the target
is a FAIL marked "undecided", so a noisy run can never claim a target it has not shown.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from transformers import LogitsProcessor

cpu_clock = time.thread_time


class StepClock(LogitsProcessor):
    """Records `cpu_clock` at every decoding step of `generate()` (a logits processor runs once per step, after
    the forward): consecutive stamps time the decode steps from inside one generate call."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        self.stamps.append(cpu_clock())
        return scores


def timed(fn: Callable[[], object], clock: Callable[[], float] = cpu_clock) -> Callable[[], float]:
    """Wrap a no-argument callable into one that returns its duration in seconds on `clock`."""

    def run() -> float:
        start = clock()
        fn()
        return clock() - start

    return run


def interleave(
    measures: Mapping[str, Callable[[], float]],
    rounds: int,
    warmup: int = 1,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Run every measure once per round, rounds times (after `warmup` discarded rounds), alternating the order
    (A B, then B A, ...) so neither side always runs first. Each measure returns one sample (e.g. seconds).

    Returns {name: [sample per kept round]}; index i of every list comes from the same round."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(measures)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            value = _without_gc(measures[name])
            if r >= warmup:
                samples[name].append(value)
        if on_round is not None:
            on_round(r)
    return samples


def _without_gc(measure: Callable[[], float]) -> float:
    """One sample with the cyclic garbage collector paused: a collection inside one side's timing would be
    charged to it alone (it runs between measures instead)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return float(measure())
    finally:
        if enabled:
            gc.enable()


def bootstrap_median_ci(
    values: list[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `values` (deterministic for a seed)."""
    if not values:
        raise ValueError("bootstrap_median_ci needs at least one value")
    if len(values) == 1:
        return values[0], values[0]
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    return medians[int(tail * (resamples - 1))], medians[int((1 - tail) * (resamples - 1))]


@dataclass(frozen=True)
class RatioResult:
    """Median of paired ratios a_i / b_i with its bootstrap interval, against a target."""

    label: str
    median: float
    low: float
    high: float
    rounds: int
    target: float | None = None
    higher_is_better: bool = True

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.higher_is_better:
            passed, missed = self.low >= self.target, self.high < self.target
        else:
            passed, missed = self.high <= self.target, self.low > self.target
        if passed:
            return "PASS"
        return "FAIL" if missed else "FAIL (undecided: the interval straddles the target)"

    def describe(self, unit: str = "x") -> str:
        sign = ">=" if self.higher_is_better else "<="
        text = (
            f"{self.label}: {self.median:.3f}{unit} [95 % CI {self.low:.3f}, {self.high:.3f}] over {self.rounds} rounds"
        )
        if self.target is not None:
            text += f"; target {sign} {self.target:g}{unit} -> {self.verdict}"
        return text


def paired_ratio(
    label: str,
    a: list[float],
    b: list[float],
    target: float | None = None,
    higher_is_better: bool = True,
) -> RatioResult:
    """Median of a[i] / b[i] over rounds, with a 95 % bootstrap CI. E.g. a = peer seconds, b = our seconds
    gives our speed-up (higher is better); a = ours, b = stock gives a cost ratio (lower is better)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_ratio needs two equally long non-empty sample lists, got {len(a)} and {len(b)}")
    ratios = [x / y for x, y in zip(a, b)]
    low, high = bootstrap_median_ci(ratios)
    return RatioResult(label, statistics.median(ratios), low, high, len(ratios), target, higher_is_better)
