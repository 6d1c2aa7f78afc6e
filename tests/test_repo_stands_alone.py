"""The repository stands alone: no file points readers at design notes outside it (they live in docs/)."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_file_cites_notes_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in tracked:
        path = REPO / name
        if path.suffix not in {".py", ".md", ".sh", ".yaml", ".toml", ".txt"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for needle in ("shared/design", "../shared", "shared/reference"):
            if needle in text and name != "tests/test_repo_stands_alone.py":
                offenders.append(f"{name}: {needle}")
    assert not offenders, offenders


def test_docs_exist_for_what_the_code_cites():
    for page in ("architecture.md", "method.md", "transformers5.md", "demo-feasibility.md"):
        assert (REPO / "docs" / page).is_file(), page
