"""No ``torch.load`` unpickles code: every call in the project passes ``weights_only=True`` (``pyproject`` allows
torch 2.4/2.5, where the default still runs any pickled payload; issue 23, item 17). Tests must name
``weights_only`` explicitly (a Lightning checkpoint read back in a test may say False)."""

from __future__ import annotations

import ast

from tests.test_code_shape import REPO, SKIP_DIRS, project_files


def torch_load_calls(source: str, name: str) -> list[tuple[int, ast.expr | None]]:
    """``(line, weights_only value or None)`` of every ``torch.load(...)`` / ``load(...)`` imported from torch."""
    tree = ast.parse(source, filename=name)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "torch"]
    from_torch = {a.asname or a.name for n in imports for a in n.names if a.name == "load"}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_torch_load = (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id == "torch"
        ) or (isinstance(func, ast.Name) and func.id in from_torch)
        if is_torch_load:
            value = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
            calls.append((node.lineno, value))
    return calls


def _is_true(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def test_the_checker_finds_bare_and_unsafe_calls():
    source = (
        "import torch\nfrom torch import load as tl\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\ntl(p)\n"
        "torch.load(p, map_location='cpu', weights_only=True)\n"
        "json.load(f)\n"
    )
    calls = torch_load_calls(source, "m.py")
    assert [line for line, value in calls if not _is_true(value)] == [3, 4, 5]
    assert [line for line, value in calls if _is_true(value)] == [6]


def test_project_code_loads_with_weights_only():
    unsafe = [
        f"{path.relative_to(REPO)}:{line}"
        for path in project_files()
        for line, value in torch_load_calls(path.read_text(), str(path))
        if not _is_true(value)
    ]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_tests_name_weights_only():
    bare = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if SKIP_DIRS.intersection(path.relative_to(REPO).parts):
            continue
        calls = torch_load_calls(path.read_text(), str(path))
        bare += [f"{path.name}:{line}" for line, value in calls if value is None]
    assert not bare, f"torch.load without weights_only: {bare}"
