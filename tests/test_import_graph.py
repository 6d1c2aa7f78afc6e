"""The import graph of the project's modules: no cycle, no CLI importing another CLI, floors one-way.

Floors, top to bottom: ``scripts`` (CLIs) -> ``recipes`` (training, data, evaluation) -> ``audio_adapter`` (model,
processor) -> ``extension`` (RoPE math). A module may import its own floor or any floor below, never one above:
``extension`` imports none of the others, ``audio_adapter`` never ``recipes`` or ``scripts``, ``recipes`` never
``scripts``. A CLI is a ``scripts`` module with an ``if __name__ == "__main__":`` block; code two CLIs share lives a
floor down. Every import counts: at module level, inside functions and under ``if TYPE_CHECKING:`` (a type-only
cycle is still two modules that cannot be understood one without the other). An edge ``a -> b`` is to the module
named: ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = ("extension", "audio_adapter", "recipes", "scripts")  # bottom to top
SKIP_DIRS = {"__pycache__", "build", "dist", ".venv"}

Graph = dict[str, dict[str, int]]  # module -> {imported module: first line}


def project_modules(root: Path, packages: tuple[str, ...] = FLOORS) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``packages`` (a package is its ``__init__``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if SKIP_DIRS.intersection(rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a project module (``None`` for third-party names)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in modules:
            return prefix
    return None


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """Every project module ``name`` imports, anywhere in the file, with the line of its first import."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_target(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                targets.append(full if full in modules else _target(base, modules))
        for target in targets:
            if target is not None and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = FLOORS) -> Graph:
    modules = project_modules(root, packages)
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` when the graph has none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def floor_violations(graph: Graph) -> list[str]:
    """Each edge that climbs a floor, as ``"a (line n) imports b: a's floor must not import b's"``."""
    out = []
    for source, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            src, dst = source.split(".")[0], target.split(".")[0]
            if src in FLOORS and dst in FLOORS and FLOORS.index(dst) > FLOORS.index(src):
                out.append(f"{source} (line {line}) imports {target}: {src} must not import {dst}")
    return out


def is_cli(path: Path) -> bool:
    """Whether the file has a top-level ``if __name__ == "__main__":`` block."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            return True
    return False


def cli_to_cli_edges(graph: Graph, modules: dict[str, Path]) -> list[str]:
    clis = {name for name, path in modules.items() if name.split(".")[0] == "scripts" and is_cli(path)}
    return [
        f"CLI {source} (line {line}) imports CLI {target}: move what they share into recipes/"
        for source in sorted(clis)
        for target, line in sorted(graph[source].items())
        if target in clis
    ]


def missing_modules(root: Path, packages: tuple[str, ...] = (*FLOORS, "tests")) -> list[str]:
    """Each import of a project module that is not in the tree, as ``"file:line imports missing x.y"``.

    An editable install elsewhere (or a stale ``.pyc``) can still serve a moved module, so a stale import would
    pass at run time there; here it fails. ``from pkg import name``: ``pkg`` must exist (``name`` may be an
    attribute); ``import a.b``: ``a.b`` must."""
    modules = project_modules(root, packages)
    out = []
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            wanted = []
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                wanted = [base]
            for target in wanted:
                if target.split(".")[0] in packages and target not in modules:
                    out.append(f"{path.relative_to(root)}:{node.lineno} imports missing {target}")
    return out


def test_every_project_import_exists_in_the_tree():
    missing = missing_modules(REPO)
    assert not missing, "\n".join(missing)


def test_no_import_cycle():
    cycle = find_cycle(import_graph(REPO))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_floors_are_one_way():
    violations = floor_violations(import_graph(REPO))
    assert not violations, "\n".join(violations)


def test_no_cli_imports_another_cli():
    modules = project_modules(REPO)
    assert {"scripts.train", "scripts.eval_mcqa", "scripts.sweep"} <= {n for n, p in modules.items() if is_cli(p)}
    edges = cli_to_cli_edges(import_graph(REPO), modules)
    assert not edges, "\n".join(edges)


# The checker itself, on planted trees: each rule must fail where it should.


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_type_only_cycle_and_a_function_level_one(tmp_path):
    root = _plant(
        tmp_path,
        {
            "recipes/__init__.py": "",
            "recipes/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recipes.b import B\n",
            "recipes/b.py": "def f():\n    from . import a\n",
            "recipes/c.py": "import recipes.b\n",
        },
    )
    graph = import_graph(root, ("recipes",))
    assert graph["recipes.a"] == {"recipes.b": 3} and graph["recipes.b"] == {"recipes.a": 2}
    assert find_cycle(graph) == ["recipes.a", "recipes.b", "recipes.a"]
    del graph["recipes.b"]["recipes.a"]
    assert find_cycle(graph) is None


def test_checker_names_an_edge_that_climbs_a_floor(tmp_path):
    root = _plant(
        tmp_path,
        {
            "extension/__init__.py": "",
            "audio_adapter/__init__.py": "from extension import x\n",
            "extension/x.py": "import torch\n\n\ndef f():\n    from audio_adapter import y\n",
            "audio_adapter/y.py": "",
            "recipes/__init__.py": "",
            "scripts/__init__.py": "",
        },
    )
    assert floor_violations(import_graph(root)) == [
        "extension.x (line 5) imports audio_adapter.y: extension must not import audio_adapter"
    ]


def test_checker_names_an_import_of_a_moved_module(tmp_path):
    root = _plant(
        tmp_path,
        {
            "recipes/__init__.py": "",
            "recipes/data/__init__.py": "",
            "recipes/data/collate.py": "from .samples import X\nfrom recipes.data import collate\n",
            "recipes/data/samples.py": "X = 1\n",
            "recipes/old.py": "def f():\n    import recipes.gone\n",
        },
    )
    assert missing_modules(root, ("recipes",)) == ["recipes/old.py:2 imports missing recipes.gone"]


def test_checker_names_a_cli_importing_a_cli(tmp_path):
    main = 'if __name__ == "__main__":\n    pass\n'
    root = _plant(
        tmp_path,
        {
            "scripts/__init__.py": "",
            "scripts/one.py": "from scripts.two import helper\n" + main,
            "scripts/two.py": "def helper():\n    pass\n" + main,
            "scripts/stats.py": "",
            "scripts/three.py": "from scripts import stats\n" + main,
        },
    )
    modules = project_modules(root, ("scripts",))
    assert cli_to_cli_edges(import_graph(root, ("scripts",)), modules) == [
        "CLI scripts.one (line 1) imports CLI scripts.two: move what they share into recipes/"
    ]


@pytest.mark.parametrize("package", FLOORS)
def test_every_floor_has_modules(package):
    """The graph is not vacuous: each floor's modules are found."""
    assert any(name.split(".")[0] == package for name in project_modules(REPO))
