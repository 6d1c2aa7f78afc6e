"""Writing shards: a JSONL manifest (audio path, optional image path, prompt/response or messages, optional
transcript) -> tar shards (`write_shards`); a bad line is skipped and counted, never costing its good neighbours."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from .samples import AUDIO_EXTENSIONS, decode_audio, decode_image, normalize_messages
from .skips import SampleSkipped, SkipReason

logger = logging.getLogger(__name__)


# ======================================================================================= writing shards
@dataclass
class ShardWriteSummary:
    """What `write_shards` did: ``written`` samples, ``skipped`` counts by reason, ``problems`` (line, key,
    reason, detail) for every skipped line, and the shard paths written."""

    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[tuple[int, str | None, str, str]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*$")


def _resolve_path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    return base / p if (base / p).exists() or not p.exists() else p


def prepare_manifest_sample(
    entry: Any, base_dir: Path, index: int, max_audio_seconds: float | None = None
) -> dict[str, Any]:
    """Validate one manifest entry and return the WebDataset sample to write
    (``{"__key__", <audio ext>: bytes, "json": bytes[, "jpg"|"png": bytes]}``). Raises `SampleSkipped`."""
    if not isinstance(entry, dict):
        raise SampleSkipped(SkipReason.BAD_MANIFEST_LINE, "a manifest line must be a JSON object")
    key = entry.get("key", f"sample_{index:09d}")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise SampleSkipped(SkipReason.BAD_KEY, f"key {key!r}: use letters, digits, '_', '-' (no dots)")
    audio_field = entry.get("audio")
    if not isinstance(audio_field, str) or not audio_field:
        raise SampleSkipped(SkipReason.MISSING_FIELDS, "'audio' (a path) is required")
    image_field = entry.get("image")
    if image_field is not None and (not isinstance(image_field, str) or not image_field):
        raise SampleSkipped(SkipReason.BAD_JSON, "'image' must be a path")
    record = {k: v for k, v in entry.items() if k not in ("audio", "image", "key")}
    normalize_messages(record, has_image=image_field is not None)  # validation only; stored as given

    audio_path = _resolve_path(audio_field, base_dir)
    try:
        data = audio_path.read_bytes()
    except OSError as exc:
        raise SampleSkipped(SkipReason.MISSING_FILE, f"audio {audio_path}: {exc.strerror or exc}") from None
    ext = audio_path.suffix.lower().lstrip(".")
    audio, sr = decode_audio(data, ext, max_audio_seconds)
    sample: dict[str, Any] = {"__key__": key}
    if ext in AUDIO_EXTENSIONS:
        sample[ext] = data  # the original bytes
    else:  # another format libsndfile reads (aiff, au, ...): store as FLAC
        buf = io.BytesIO()
        sf.write(buf, audio, sr, format="FLAC", subtype="PCM_24")
        sample["flac"] = buf.getvalue()
    if image_field is not None:
        image_path = _resolve_path(image_field, base_dir)
        try:
            img_bytes = image_path.read_bytes()
        except OSError as exc:
            raise SampleSkipped(SkipReason.MISSING_FILE, f"image {image_path}: {exc.strerror or exc}") from None
        img = decode_image(img_bytes)
        img_ext = image_path.suffix.lower().lstrip(".")
        if img_ext in ("jpg", "jpeg"):
            sample["jpg"] = img_bytes
        elif img_ext == "png":
            sample["png"] = img_bytes
        else:
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            sample["png"] = buf.getvalue()
    sample["json"] = json.dumps(record, ensure_ascii=False).encode("utf-8")
    return sample


def read_manifest(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or a `SampleSkipped`) for each non-blank line of a JSONL manifest."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, SampleSkipped(SkipReason.BAD_MANIFEST_LINE, f"not JSON ({exc})")


def write_shards(
    manifest: str | os.PathLike,
    pattern: str,
    maxcount: int = 1000,
    maxsize: float = 1e9,
    max_audio_seconds: float | None = None,
    base_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ShardWriteSummary:
    """JSONL manifest -> WebDataset shards via ``webdataset.ShardWriter``.

    Each line: ``audio`` (path, relative to the manifest's folder or absolute), optional ``image``, either
    ``prompt`` + ``response`` (+ optional ``system``) or ``messages``, optional ``key``, optional ``transcript``
    (a string without chat-control tokens: `recipes.data.samples.sample_transcript`); other fields are kept in the JSON.
    Every sample is validated (audio decodes, non-empty, finite, within ``max_audio_seconds``;
    image decodes; JSON fields) before anything is written, so a bad line is skipped with a reason and never
    costs a neighbour. ``pattern`` is a %-pattern such as ``out/train-%06d.tar`` (folders are created).
    """
    import webdataset as wds

    manifest = Path(manifest)
    base = Path(base_dir) if base_dir is not None else manifest.parent
    if "%" not in pattern:
        raise ValueError(f"output pattern needs a %-format for the shard number, e.g. 'train-%06d.tar': {pattern!r}")
    Path(pattern % 0).parent.mkdir(parents=True, exist_ok=True)
    summary = ShardWriteSummary()
    seen: set[str] = set()
    writer = None
    n_lines = sum(1 for line in open(manifest, encoding="utf-8") if line.strip())
    try:
        with _progress(progress, n_lines) as (bar, task):
            for index, (lineno, entry) in enumerate(read_manifest(manifest)):
                key = entry.get("key") if isinstance(entry, dict) else None
                try:
                    sample = _checked_sample(entry, base, index, max_audio_seconds, seen)
                except SampleSkipped as exc:
                    summary.skipped[exc.reason] += 1
                    summary.problems.append((lineno, key, exc.reason, exc.detail))
                    logger.warning("manifest line %d (key=%s) skipped (%s) %s", lineno, key, exc.reason, exc.detail)
                else:
                    if writer is None:
                        post = summary.shards.append
                        writer = wds.ShardWriter(
                            pattern, maxcount=maxcount, maxsize=maxsize, verbose=0, mtime=0.0, post=post
                        )
                    writer.write(sample)
                    seen.add(sample["__key__"])
                    summary.written += 1
                if bar is not None:
                    done = f"written {summary.written}, skipped {summary.total_skipped}"
                    bar.update(task, advance=1, description=done)
    finally:
        if writer is not None:
            writer.close()  # calls post() for the last shard
    return summary


def _checked_sample(entry: Any, base: Path, index: int, max_audio_seconds: float | None, seen: set[str]) -> dict:
    """A manifest entry -> the sample to write; raises `SampleSkipped` (a bad line, a key written before)."""
    if isinstance(entry, SampleSkipped):
        raise entry
    sample = prepare_manifest_sample(entry, base, index, max_audio_seconds)
    if sample["__key__"] in seen:
        raise SampleSkipped(SkipReason.DUPLICATE_KEY, f"key {sample['__key__']!r} already written")
    return sample


class _progress:
    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.total = total
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None, None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]shards[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.bar.__enter__()
        return self.bar, self.bar.add_task("", total=self.total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def print_write_summary(summary: ShardWriteSummary, console=None, max_problems: int = 20) -> None:
    """Rich table: written / skipped per reason, and the first skipped lines."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="make_shards summary")
    table.add_column("outcome")
    table.add_column("samples", justify="right")
    table.add_row("written", str(summary.written))
    for reason, n in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", str(n))
    console.print(table)
    console.print(
        f"{len(summary.shards)} shard(s): "
        + (", ".join(summary.shards[:5]) + (" ..." if len(summary.shards) > 5 else ""))
    )
    for lineno, key, reason, detail in summary.problems[:max_problems]:
        console.print(f"  line {lineno} key={key}: {reason} {detail}", markup=False, highlight=False)
    if len(summary.problems) > max_problems:
        console.print(f"  ... and {len(summary.problems) - max_problems} more")
