"""Replace files on disk so that a reader (or a resumed run) sees the old file or the new one, never half of one.

The one rule every writer of checkpoints, summaries and results uses: write a temporary file in the target's
folder (same file system, so the rename is atomic), flush and fsync it, give it the usual permissions, then
``os.replace`` it over the target and fsync the folder. An exception removes the temporary file; a kill leaves a
hidden ``.<name>.*.tmp`` file that is never mistaken for the target.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder entry to disk (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """``with atomic_open(path, "wb") as f: ...`` — ``f`` is a temporary file that replaces ``path`` only when the
    block ends without an exception. ``mode`` is ``"w"`` (text, utf-8 unless given) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_path(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (utf-8, newlines as given) atomically; returns the path."""
    with atomic_open(path, "w", newline="") as f:
        f.write(text)
    return Path(path)
