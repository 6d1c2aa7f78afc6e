"""Issue #15: every benchmark runs at its --quick size, so none can rot (figures are not checked here: speed
claims live in the benches' own PASS/FAIL output, measured interleaved, never in timed tests)."""

from __future__ import annotations

import pytest

from scripts.bench.stats import bootstrap_median_ci, interleave, paired_ratio


def test_interleave_alternates_order_and_pairs_rounds():
    calls = []
    samples = interleave(
        {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, rounds=3, warmup=1
    )
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert samples == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_ratio_verdicts_use_the_whole_interval():
    assert paired_ratio("x", [2.0] * 5, [1.0] * 5, target=1.5).verdict == "PASS"
    assert paired_ratio("x", [1.0] * 5, [1.0] * 5, target=1.5).verdict == "FAIL"
    straddle = paired_ratio("x", [1.0, 1.2, 1.4, 1.6, 1.8, 2.0], [1.0] * 6, target=1.5)
    assert straddle.verdict.startswith("FAIL (undecided")
    assert paired_ratio("x", [1.0] * 4, [1.0] * 4, target=1.01, higher_is_better=False).verdict == "PASS"
    low, high = bootstrap_median_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert 1.0 <= low <= 3.0 <= high <= 5.0


QUICK_RUNS = {
    "rope": ["--quick"],
    "generate": ["--quick"],
    "data": ["--quick"],
    "encoder": ["--quick"],
    "real_frames": ["--quick"],  # real Whisper tiny.en (the offline part, cached once a machine)
    # one subprocess job per case: each starts an interpreter, and both in one case took ~30 s on a slow CPU
    "memory-stage2": ["--quick", "--job", "stage2"],
    "memory-generate": ["--quick", "--job", "generate"],
}


@pytest.mark.parametrize("case", sorted(QUICK_RUNS))
def test_bench_runs_quick(case, capsys):
    import importlib

    bench = case.split("-")[0]
    module = importlib.import_module(f"scripts.bench.{bench}")
    assert module.main(QUICK_RUNS[case]) == 0
    out = capsys.readouterr().out
    assert out.strip()
    if bench != "memory":
        assert "95 % CI" in out or "95 %" in out
    else:
        assert ("stage 2 (tiny_stage2.yaml" in out) == case.endswith("stage2")
        assert ("generate(), 0.25-minute clip" in out) == case.endswith("generate")
