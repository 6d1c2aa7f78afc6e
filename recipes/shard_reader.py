"""Reading WebDataset tar shards without ever raising on bad data: shard specs -> urls (`expand_shards`), and
one shard -> raw samples ``{"__key__", "__url__", ext: bytes}`` or `_Bad` skip events (`iter_tar_samples`)."""

from __future__ import annotations

import glob
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .skips import SkipReason

# ======================================================================================= shard lists
_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_shards(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard spec -> list of urls. Accepts a list, brace patterns (``data/train-{000000..000009}.tar``),
    ``::``-separated lists, globs (``data/*.tar``, sorted) and directories (their ``*.tar``, sorted).
    The order is deterministic, so every rank sees the same list."""
    import webdataset as wds

    items = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
    urls: list[str] = []
    for item in items:
        for part in wds.shardlists.expand_urls(str(item)):
            if "://" not in part and not part.startswith("pipe:") and _GLOB_CHARS.search(part):
                matches = sorted(glob.glob(part))
                if not matches:
                    raise FileNotFoundError(f"no shard matches {part!r}")
                urls.extend(matches)
            elif os.path.isdir(part):
                matches = sorted(glob.glob(os.path.join(part, "*.tar")) + glob.glob(os.path.join(part, "*.tar.gz")))
                if not matches:
                    raise FileNotFoundError(f"no *.tar shards in directory {part!r}")
                urls.extend(matches)
            else:
                urls.append(part)
    return urls


def _split_key(name: str) -> tuple[str | None, str | None]:
    """``dir/abc.seg.flac`` -> (``dir/abc``, ``seg.flac``): WebDataset's rule (key = up to the first dot)."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2).lower()) if m else (None, None)


@dataclass
class _Bad:
    """A skip event travelling through the raw stream (so that it is counted by exactly one consumer)."""

    reason: str
    detail: str = ""
    key: str | None = None
    url: str | None = None


def _trailing_data(url: str, offset: int) -> bool:
    """True when a local, uncompressed shard has non-zero bytes after ``offset`` (where the tar stopped)."""
    try:
        with open(url, "rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 16):
                if chunk.strip(b"\0"):
                    return True
    except OSError:
        return False
    return False


def _open_tar(stream, seekable: bool) -> tarfile.TarFile:
    """An uncompressed local shard opens for random access: each member is one read, where stream mode
    copies it block by block (measured 0.18 against 0.65 ms a 10 s FLAC sample). Anything else (a
    compressed shard, a pipe, a remote url) is read as a stream."""
    if seekable:
        try:
            return tarfile.open(fileobj=stream, mode="r:")
        except (tarfile.ReadError, OSError):
            stream.seek(0)
    return tarfile.open(fileobj=stream, mode="r|*")


def iter_tar_samples(url: str) -> Iterator[dict | _Bad]:
    """Yield raw samples ``{"__key__", "__url__", ext: bytes, ...}`` from one shard, or `_Bad` events.
    Never raises for bad data: an unreadable shard, a corrupt header or a member cut short end the shard
    with an event; complete samples before the damage are still yielded."""
    from webdataset.gopen import gopen

    try:
        stream = gopen(url, "rb")
    except Exception as exc:
        yield _Bad(SkipReason.UNREADABLE_SHARD, str(exc), url=url)
        return
    current: dict | None = None
    n_members = 0
    try:
        try:
            tf = _open_tar(stream, seekable=os.path.isfile(url))
        except Exception as exc:
            yield _Bad(SkipReason.CORRUPT_SHARD, f"not a tar file ({exc})", url=url)
            return
        members = iter(tf)
        while True:
            try:
                info = next(members)
            except StopIteration:
                break
            except Exception as exc:  # a header that tarfile cannot parse after the first member
                if current is not None:  # its members so far are intact (the damage starts at a header)
                    yield current
                    current = None
                yield _Bad(SkipReason.CORRUPT_SHARD, f"after {n_members} members: {exc}", url=url)
                return
            if not info.isreg():
                continue
            key, ext = _split_key(info.name)
            if key is None or os.path.basename(key).startswith("__"):
                continue
            if current is not None and key != current["__key__"]:
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            try:
                data = tf.extractfile(info).read()
            except Exception as exc:
                yield _Bad(SkipReason.TRUNCATED_MEMBER, f"{info.name}: {exc}", key=key, url=url)
                return
            n_members += 1
            tf.members = []  # stream mode: do not keep every TarInfo
            if ext in current:
                current["__duplicate__"] = ext
            current[ext] = data
        if current is not None:
            yield current
            current = None
        # tarfile ends silently at a damaged header after the first member; find out whether data followed
        comptype = getattr(getattr(tf, "fileobj", None), "comptype", "tar")  # random access: an uncompressed file
        if comptype == "tar" and os.path.isfile(url) and _trailing_data(url, tf.offset):
            yield _Bad(SkipReason.CORRUPT_SHARD, f"unreadable data after {n_members} members (offset {tf.offset})", url=url)
    except Exception as exc:  # defensive: any other failure ends this shard only
        if current is not None:
            yield _Bad(SkipReason.TRUNCATED_MEMBER, str(exc), key=current["__key__"], url=url)
        yield _Bad(SkipReason.CORRUPT_SHARD, f"{type(exc).__name__}: {exc}", url=url)
    finally:
        try:
            stream.close()
        except Exception:
            pass
