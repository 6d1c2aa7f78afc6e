"""The supported-versions promises hold together: pyproject's ranges admit both tested locks, the lower bounds of
transformers / peft / lightning are exactly what the oldest matrix cell installs, the contract-test list names real
files, and the lock checker and the canary's report read what they are given (README "Supported versions")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from recipes.common.lock import NO_DEPS_WHEELS, PROJECT, read_lock
from scripts.upstream_report import read_junit, report_lines

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"
OLDEST = ROOT / "requirements" / "oldest.txt"
MATRIX_PACKAGES = ("transformers", "peft", "lightning")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_project_name_is_the_one_the_lock_checker_walks():
    assert _pyproject()["project"]["name"] == PROJECT


@pytest.mark.parametrize("lock", [LOCK, OLDEST], ids=["lock", "oldest"])
def test_every_range_admits_the_tested_lock(lock):
    pins = read_lock(lock)
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} has no pin in {lock.name}: re-lock"
        assert Version(pins[name]) in requirement.specifier, f"{lock.name} pins {name}=={pins[name]}: not {requirement}"
    for wheel in NO_DEPS_WHEELS:
        assert canonicalize_name(wheel) in pins, f"{lock.name} lacks the --no-deps wheel {wheel}"


def test_lower_bounds_are_the_tested_versions():
    """transformers / peft / lightning: the oldest cell's version; every other package: the lock's version."""
    lock, oldest = read_lock(LOCK), read_lock(OLDEST)
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{requirement}: give it one tested lower bound (>=)"
        tested = oldest[name] if name in MATRIX_PACKAGES else lock[name]
        assert Version(lower[0]) == Version(tested), f"{requirement}: the tested lower bound is {tested}"


def test_transformers_is_capped_below_the_next_untested_minor():
    (transformers,) = [r for r in _requirements() if r.name == "transformers"]
    newest = Version(read_lock(LOCK)["transformers"])
    assert newest in transformers.specifier
    assert Version(f"{newest.major}.{newest.minor + 1}.0") not in transformers.specifier


def test_oldest_cell_differs_from_the_lock_only_in_the_matrix_packages():
    lock, oldest = read_lock(LOCK), read_lock(OLDEST)
    assert set(lock) == set(oldest), sorted(set(lock) ^ set(oldest))
    moved = {name for name in lock if lock[name] != oldest[name]}
    assert moved <= set(MATRIX_PACKAGES) | {"pytorch-lightning"}, sorted(moved)


def test_lock_keeps_torch_on_the_cpu_wheel():
    pins = read_lock(LOCK)
    assert pins["torch"] == "2.13.0", "the set-up pins torch==2.13.0; its local +cpu label must stay off the pin"
    assert not any(name.startswith("nvidia-") for name in pins), "a CUDA package in the lock: torch came from the index"
    assert not {"llm", "llama-cpp-python"} & set(pins), "the weight wheels' declared dependencies must stay out"


def test_contract_list_names_existing_test_files():
    lines = (ROOT / "tests" / "contract_tests.txt").read_text().splitlines()
    files = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert "tests/model/test_families.py" in files
    missing = [f for f in files if not (ROOT / f).is_file()]
    assert not missing, f"tests/contract_tests.txt names files that do not exist: {missing}"


def test_read_lock_rejects_a_range(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# comment\nNumPy==2.4.6\ntorch>=2.13\n")
    with pytest.raises(ValueError, match=r"lock.txt:3: 'torch>=2.13' is not an exact pin"):
        read_lock(lock)
    lock.write_text("NumPy==2.4.6  # why\n")
    assert read_lock(lock) == {"numpy": "2.4.6"}


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.model.test_families" name="test_every_private_hook_exists_with_its_parameters[qwen2_vl]">
<failure message="AssertionError: qwen2_vl: forward lacks parameters ['past_key_values']&#10;assert False">x</failure>
</testcase>
<testcase classname="tests.model.test_generation.TestCache" name="test_continue">
<error message="ImportError: gone"/></testcase>
<testcase classname="tests.model.test_generation" name="test_ok"/>
<testcase classname="tests.model.test_generation" name="test_gpu"><skipped message="no GPU"/></testcase>
</testsuite></testsuites>"""


def test_upstream_report_names_failures_and_moved_hooks(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    outcome = read_junit(tmp_path / "junit.xml")
    assert (outcome.passed, outcome.failed, outcome.errors, outcome.skipped) == (1, 1, 1, 1)
    text = "\n".join(report_lines([("transformers", "5.24.0", "5.25.0")], outcome))
    assert re.search(r"\n  transformers +5\.24\.0 -> 5\.25\.0  \*\n", text), text
    assert "1 passed, 1 failed, 1 errors, 1 skipped" in text
    assert "FAILED tests/model/test_generation.py::TestCache::test_continue" in text
    hook = "tests/model/test_families.py::test_every_private_hook_exists_with_its_parameters[qwen2_vl]"
    assert f"moved: 1\n  {hook}: AssertionError: qwen2_vl: forward lacks parameters ['past_key_values']\n" in text
    assert text.endswith("until the code follows")
