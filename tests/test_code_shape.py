"""Small files with one job: no project source file over 450 lines, no function or method over 60 lines.

Checked over the project's packages (tests are exempt); one case per file, so a failure names the file and
lists every offender in it. A function's length runs from its ``def`` line to its last line (decorators
excluded), nested functions counted in their enclosing function and on their own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("audio_adapter", "extension", "recipes", "scripts")
SKIP_DIRS = {"__pycache__", "build", "dist", ".venv"}
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60


def project_files() -> list[Path]:
    """Every ``.py`` file under the project's packages, outside caches and build folders."""
    files = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if not SKIP_DIRS.intersection(path.relative_to(REPO).parts):
                files.append(path)
    return files


def shape_offenders(source: str, name: str) -> list[str]:
    """What in ``source`` breaks the size rules: the file's length and every over-long function, with lines."""
    offenders = []
    n_lines = len(source.splitlines())
    if n_lines > MAX_FILE_LINES:
        offenders.append(f"{name}: {n_lines} lines (max {MAX_FILE_LINES})")
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                offenders.append(f"{name}:{node.lineno} {node.name}(): {length} lines (max {MAX_FUNCTION_LINES})")
    return offenders


def test_the_walk_sees_every_package():
    seen = {path.relative_to(REPO).parts[0] for path in project_files()}
    assert seen == set(PACKAGES)


def test_the_checker_measures_functions_without_decorators():
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    short = f"@decorator\n@other\ndef f():\n{body}\n"  # def line + 59 = 60 lines: allowed
    assert shape_offenders(short, "m.py") == []
    long = f"class C:\n    def g(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n        y = 0\n"
    assert shape_offenders(long, "m.py") == ["m.py:2 g(): 61 lines (max 60)"]
    assert shape_offenders("x = 1\n" * 451, "big.py") == ["big.py: 451 lines (max 450)"]


@pytest.mark.parametrize("path", project_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_file_and_functions_are_small(path: Path):
    name = path.relative_to(REPO).as_posix()
    offenders = shape_offenders(path.read_text(encoding="utf-8"), name)
    assert not offenders, "split by concern:\n" + "\n".join(offenders)
