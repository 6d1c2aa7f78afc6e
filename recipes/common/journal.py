"""Crash-safe outputs of long CLI jobs: an append-only JSONL journal (one record per finished unit of work,
flushed and fsynced as it is written); summaries derived from it are replaced with
`recipes.common.atomic.atomic_write_text`.

A killed job leaves every record it finished; a re-run opens the same journal, reads them back and only does
what is missing. The journal's first line records the run's settings: a re-run whose settings differ (another
model, another decoding budget, ...) is refused rather than silently mixing two runs' results.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

_MAX_HEADER_BYTES = 100 << 20  # a safetensors header past this is not one: hash the file's size and time alone


def _safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets), b"" if it has none."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return b""
        (length,) = struct.unpack("<Q", head)
        return f.read(length) if length <= _MAX_HEADER_BYTES else b""


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """A short hash naming the model a ``save_pretrained`` folder holds now: every file directly in it (name, size,
    modification time) and the headers of its safetensors files. Saving another model there (or another
    processor) changes it, so a journal keyed on it is never resumed with other weights; reading it costs no
    pass over the weights."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(json.dumps([path.name, stat.st_size, stat.st_mtime_ns]).encode())
        if path.suffix == ".safetensors":
            digest.update(_safetensors_header(path))
    return digest.hexdigest()[:16]


class Journal:
    """An append-only JSONL file of dict records, the first of which is ``{"type": "run", "settings": ...}``.

    Opening an existing journal reads its records back (``records``, without the run line). A torn last line
    (the process died mid-write) is cut off; the settings named in ``compare`` must equal the stored ones, else
    ValueError naming the first that differs."""

    def __init__(self, path: str | os.PathLike, settings: dict, compare: Sequence[str] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        settings = json.loads(json.dumps(settings))  # as it will read back
        self.records: list[dict] = []
        stored = None
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):  # torn last record: drop it so appends start on a fresh line
                data = data[: data.rfind(b"\n") + 1]
                with open(self.path, "r+b") as f:
                    f.truncate(len(data))
            for line_no, line in enumerate(data.decode("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(
                        f"{self.path}:{line_no}: not a JSON record; delete the file to start over"
                    ) from None
                if record.get("type") == "run" and stored is None:
                    stored = record.get("settings", {})
                else:
                    self.records.append(record)
        if stored is not None:
            for key in compare:
                if key in stored and key in settings and stored[key] != settings[key]:
                    raise ValueError(
                        f"{self.path} holds results of a different run ({key}: {stored[key]!r} there, "
                        f"{settings[key]!r} now); pass another --out, or delete it to start over"
                    )
        self._file = open(self.path, "a", encoding="utf-8")
        if stored is None:
            self.append({"type": "run", "settings": settings})

    def append(self, record: dict) -> None:
        """Write one record as a line, flushed and fsynced before returning."""
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
