"""`SyntheticTask`: what a synthetic data task defines, and `write_task_dataset`, which writes any of them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from recipes.synthetic.datasets import SyntheticDataset, shard_dataset, write_clip_dataset


@dataclass(frozen=True)
class Option:
    """A task setting: a keyword of ``sample`` and a ``--dashed-name`` option of `scripts.make_synthetic`."""

    name: str
    type: type
    default: Any
    help: str


class SyntheticTask:
    """One synthetic task (see `recipes.synthetic.tasks`).

    ``sample(seed, index, **options)``: sample ``index``, depending only on ``(seed, index)``: a dict with
    ``key``, ``audio`` (float32 (T,)), ``sampling_rate`` and whatever ``entry_fields`` reads.
    ``entry_fields(sample)``: its manifest fields besides ``key`` and ``audio``: ``prompt`` and ``response``
    (or ``messages``), ``transcript`` (what the audio says, for `recipes.losses.TextTeacherKL`) and extras.
    ``options``: the task's settings (defaults apply when not given). ``default_split``: the split name when
    none is given. ``vocabulary``: the words every response is made of (the demo's stand-in encoder learns
    them), or None when the task is not a demo task. ``description``: one line for ``--help``."""

    description: ClassVar[str] = ""
    default_split: ClassVar[str] = "train"
    vocabulary: ClassVar[tuple[str, ...] | None] = None
    options: ClassVar[tuple[Option, ...]] = ()

    def sample(self, seed: int, index: int, **options) -> dict:
        raise NotImplementedError

    def entry_fields(self, sample: dict) -> dict:
        raise NotImplementedError

    def resolve_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """The defaults updated with ``given``; an unknown name raises ValueError naming the known ones."""
        known = {o.name: o.default for o in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no option(s) {unknown}; its options: {sorted(known)}")
        return {**known, **given}


def write_task_dataset(
    task: SyntheticTask,
    out_dir: str | os.PathLike,
    num_samples: int,
    seed: int = 0,
    split: str | None = None,
    shards: bool = True,
    maxcount: int = 1000,
    progress: bool = False,
    **options,
) -> SyntheticDataset:
    """Write ``num_samples`` samples of ``task``: ``out_dir/<split>/audio/<key>.flac``, ``out_dir/<split>.jsonl``
    and, with ``shards``, ``out_dir/shards/<split>-%06d.tar`` (``split`` defaults to ``task.default_split``)."""
    split = split or task.default_split
    opts = task.resolve_options(options)
    samples = (task.sample(seed, i, **opts) for i in range(num_samples))
    ds = write_clip_dataset(out_dir, split, samples, task.entry_fields)
    return shard_dataset(ds, split, maxcount, progress) if shards else ds
