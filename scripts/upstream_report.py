"""The upstream canary's report (scripts/check_upstream.sh): what moved between the lock and the newest releases.

`python -m scripts.upstream_report --lock requirements/lock.txt --junit results.xml` prints three parts:
1. versions: every package of the project's dependency tree whose installed version is not the lock's (and the
   watched upstreams transformers, peft, lightning and torch always);
2. the upstream-contract tests: passed / failed / error / skipped counts and each failing test id;
3. private hooks and signatures that moved: the failing tests about the transformers internals the project
   overrides (a test id naming a hook), with their assertion messages, which name the hook and the parameters.
It reads pytest's JUnit XML rather than importing a hook table, so it keeps working whichever module holds the
table. Exit status 1 when a contract test failed or errored (something moved), else 0 (newer releases, if any,
pass: the lock can be bumped).
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from recipes.common.lock import PROJECT, PROJECT_EXTRAS, dependency_tree, installed_version, read_lock

WATCHED = ("torch", "transformers", "peft", "lightning")
HOOK_WORDS = ("hook", "signature", "parameters")  # a failing test whose id names one: a moved internal


@dataclass
class Outcome:
    """Counts and failures of one pytest run, from its JUnit XML."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (test id, its message without pytest's diff)


def read_junit(path: str | Path) -> Outcome:
    """Parse pytest's ``--junitxml`` file; a test id is ``path/to/test_file.py::name`` (class names kept)."""
    outcome = Outcome()
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = _test_id(case.get("classname", ""), case.get("name", ""))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            if problem.tag == "failure":
                outcome.failed += 1
            else:
                outcome.errors += 1
            outcome.failures.append((test_id, _message(problem.get("message") or problem.text or "")))
        elif case.find("skipped") is not None:
            outcome.skipped += 1
        else:
            outcome.passed += 1
    return outcome


def _message(text: str, max_lines: int = 8) -> str:
    """The assertion's own message: its lines before pytest's ``assert ...`` introspection, at most `max_lines`."""
    lines = []
    for line in text.strip().splitlines()[:max_lines]:
        if line.lstrip().startswith(("assert ", "where ", "+  where")):
            break
        lines.append(line.rstrip())
    return " / ".join(lines) or "(no message)"


def _test_id(classname: str, name: str) -> str:
    """``tests.test_x.TestY`` + ``test_z`` -> ``tests/test_x.py::TestY::test_z`` (JUnit keeps dotted names)."""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        if parts[cut - 1].startswith("test_"):
            return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])
    return "::".join(p for p in (classname, name) if p)


def moved_versions(pins: dict[str, str]) -> list[tuple[str, str, str]]:
    """(package, lock version, installed version) for the watched packages and every package that differs."""
    names = dependency_tree(PROJECT, PROJECT_EXTRAS) | set(WATCHED)
    rows = []
    for name in sorted(names):
        locked = pins.get(name, "(not in lock)")
        have = installed_version(name) or "(not installed)"
        if name in WATCHED or have.split("+")[0] != locked:
            rows.append((name, locked, have))
    return rows


def report_lines(rows: list[tuple[str, str, str]], outcome: Outcome) -> list[str]:
    """The printed report, line by line."""
    width = max(len(name) for name, _, _ in rows) if rows else 8
    lines = ["versions (lock -> installed):"]
    lines += [f"  {name:<{width}}  {locked:>14} -> {have}{'' if have.split('+')[0] == locked else '  *'}"
              for name, locked, have in rows]  # fmt: skip
    lines.append(
        f"upstream-contract tests: {outcome.passed} passed, {outcome.failed} failed, {outcome.errors} errors, "
        f"{outcome.skipped} skipped"
    )
    lines += [f"  FAILED {test_id}" for test_id, _ in outcome.failures]
    hooks = [(t, m) for t, m in outcome.failures if any(word in t.lower() for word in HOOK_WORDS)]
    lines.append(f"private hooks / signatures that moved: {'none' if not hooks else len(hooks)}")
    lines += [f"  {test_id}: {message}" for test_id, message in hooks]
    if outcome.failures:
        lines.append("verdict: something moved; keep the lock and the transformers cap until the code follows")
    else:
        lines.append("verdict: nothing moved; the contract tests pass on these versions (the lock can be bumped)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path("requirements/lock.txt"))
    parser.add_argument("--junit", type=Path, required=True, help="pytest --junitxml file of the contract tests")
    args = parser.parse_args(argv)
    if not args.junit.is_file():
        print(f"{args.junit} does not exist: pytest did not get to write it (see its output above)", file=sys.stderr)
        return 1
    outcome = read_junit(args.junit)
    print("\n".join(report_lines(moved_versions(read_lock(args.lock)), outcome)))
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
