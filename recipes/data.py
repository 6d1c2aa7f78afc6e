"""Streaming WebDataset shards of audio chat samples into batches: `AudioShardDataset`, `ShardLoader`, and the
Lightning `AudioShardDataModule`.

Shard layout (see ``docs/architecture.md``, "Shards"): one sample is ``<key>.flac`` (or ``.wav``,
``.mp3``, ``.ogg``: the original bytes) + ``<key>.json`` (``{"messages": [...]}`` chat turns or
``{"prompt": ..., "response": ...}``) + optional ``<key>.jpg``/``<key>.png``.

Reading pipeline (one ``AudioShardDataset`` per rank; each DataLoader worker runs its own copy)::

    shard urls --(shuffle per epoch, same order on every rank)--> split by node --> split by worker
      --> tar members grouped by key --> shuffle buffer --> decode + validate + resample (16 kHz mono)
      --> batch --> AudioCollator (chat template, processor: log-mel + placeholder expansion + tokenise,
          labels on the assistant turns only, padding)

Bad data never stops the stream: every skipped sample (or unreadable shard) is counted by reason in a
`SkipCounter` and logged (the first few per reason at WARNING). With DataLoader workers each worker counts
its own skips and ships them to the main process with its batches (``batch["skip_counts"]``; skips after the
last batch travel in a final ``{"__skips_only__": True, "skip_counts": ...}`` record). `ShardLoader` pops
them, drops the skip-only records and adds the counts to the counter the data module exposes, so the main
process sees every skip of every worker. (With a plain ``DataLoader`` filter those records yourself.)

The steps live in their own modules, re-exported here: `recipes.skips` (reasons, counter), `recipes.samples`
(JSON -> chat turns, audio/image bytes -> arrays), `recipes.shard_reader` (tar -> raw samples),
`recipes.collate` (samples -> batches) and `recipes.shard_writer` (manifest -> shards).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from audio_adapter.audio_lengths import SAMPLING_RATE

from .collate import (
    IGNORE_INDEX,
    MODEL_INPUT_KEYS,
    AudioCollator,
    model_inputs,
)
from .samples import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    ROLES,
    decode_audio,
    decode_image,
    normalize_messages,
    parse_json_bytes,
    to_mono,
)
from .settings import check_choice, check_float, check_int
from .shard_reader import DEFAULT_MAX_MEMBER_BYTES, _Bad, expand_shards, iter_tar_samples
from .shard_writer import (
    ShardWriteSummary,
    prepare_manifest_sample,
    print_write_summary,
    read_manifest,
    write_shards,
)
from .skips import NoDataError, SampleSkipped, SkipCounter, SkipReason

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_MAX_AUDIO_SECONDS",
    "DEFAULT_MAX_MEMBER_BYTES",
    "IGNORE_INDEX",
    "IMAGE_EXTENSIONS",
    "MODEL_INPUT_KEYS",
    "NoDataError",
    "ROLES",
    "SKIPS_ONLY",
    "AudioCollator",
    "AudioShardDataset",
    "SampleSkipped",
    "ShardLoader",
    "ShardWriteSummary",
    "SkipCounter",
    "SkipReason",
    "decode_audio",
    "decode_image",
    "expand_shards",
    "iter_tar_samples",
    "model_inputs",
    "normalize_messages",
    "parse_json_bytes",
    "prepare_manifest_sample",
    "print_write_summary",
    "read_manifest",
    "record_stream_position",
    "resume_plan",
    "to_mono",
    "write_shards",
]

logger = logging.getLogger(__name__)

SKIPS_ONLY = "__skips_only__"  # marks a record that only carries skip counts (see AudioShardDataset.__iter__)
DEFAULT_MAX_AUDIO_SECONDS = 600.0


# ======================================================================================= dataset
def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


def _unique_keys(items: Iterable) -> Iterator:
    """Replace every raw sample whose key was seen before in this stream by a ``duplicate_key`` event (a set
    of the keys met: about 100 bytes a sample, reset every epoch)."""
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, _Bad):
            key = item["__key__"]
            if key in seen:
                yield _Bad(SkipReason.DUPLICATE_KEY, "seen before in this epoch", key=key, url=item.get("__url__"))
                continue
            seen.add(key)
        yield item


def _keep_every(items: Iterable, index: int, total: int) -> Iterator:
    for i, item in enumerate(items):
        if i % total == index:
            yield item


class AudioShardDataset(IterableDataset):
    """Streams decoded (and, with ``batch_size``, collated) samples from WebDataset shards.

    Args:
        shards: urls / paths / globs / brace patterns / directories (see `expand_shards`).
        processor: an `AudioVLMProcessor`; resamples to 16 kHz mono (and collates). ``None`` yields audio at
            the file's own rate (``sampling_rate`` in the sample).
        batch_size: ``None`` yields samples (skips are then only in ``skip_counter`` of the iterating
            process); an int yields batches collated by ``collator`` (the last one may be smaller), each with
            ``skip_counts`` (new skips since the previous batch), plus a final skip-only record when skips
            came after the last batch. Iterate it with `ShardLoader` (a ``DataLoader(batch_size=None)``).
        collator: defaults to ``AudioCollator(processor)`` (training: right padding, labels).
        shuffle_buffer: samples held for shuffling (0 = stream order).
        shuffle_shards: shuffle the shard order each epoch (same order on every rank: seeded by seed + epoch).
        seed: base seed; shuffling also depends on epoch, rank and worker.
        max_audio_seconds: skip clips longer than this (``too_long``); ``None`` disables the cap.
        max_member_bytes: skip samples with a tar member larger than this (``member_too_large``), without
            reading the member; ``None`` disables the cap.
        rank, world_size: this process's node rank / number of ranks; ``None`` = torch.distributed (or the
            RANK/WORLD_SIZE environment variables), else 0/1. Inject them to simulate ranks in tests.
        worker, num_workers: override the DataLoader worker identity (tests); normally taken from
            ``torch.utils.data.get_worker_info()``.
        split: ``"shard"`` splits the shard list by rank, then by worker (WebDataset's split_by_node /
            split_by_worker); ``"sample"`` makes every consumer read every shard and keep every k-th sample;
            ``"auto"`` (default) splits shards where there are enough of them and samples otherwise. Either
            way each sample goes to exactly one (rank, worker) per epoch.
        skip_counter: where skips are counted (a fresh `SkipCounter` by default; per process).

    A sample key met again in the same epoch is skipped (``duplicate_key``), wherever the repeat is: later in
    the shard or in another shard read by the same consumer (with ``split="shard"`` each data worker reads its
    own shards; with ``"sample"`` every consumer sees every key).
    """

    def __init__(
        self,
        shards,
        processor=None,
        *,
        batch_size: int | None = None,
        collator: AudioCollator | None = None,
        shuffle_buffer: int = 0,
        shuffle_shards: bool = False,
        seed: int = 0,
        max_audio_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS,
        rank: int | None = None,
        world_size: int | None = None,
        worker: int | None = None,
        num_workers: int | None = None,
        split: str = "auto",
        decode_images: bool = True,
        skip_counter: SkipCounter | None = None,
        epoch: int = 0,
        max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES,
    ):
        super().__init__()
        check_choice("split", split, ("auto", "shard", "sample"))
        check_int("batch_size", batch_size, 1, optional=True)
        check_int("shuffle_buffer", shuffle_buffer, 0)
        check_int("seed", seed)
        check_float("max_audio_seconds", max_audio_seconds, 0.0, low_open=True, optional=True)
        check_int("max_member_bytes", max_member_bytes, 1, optional=True)
        check_int("epoch", epoch, 0)
        if batch_size is not None and processor is None and collator is None:
            raise ValueError("batching needs a processor (or a collator)")
        self.urls = expand_shards(shards)
        if not self.urls:
            raise ValueError(f"no shards in {shards!r}")
        self.processor = processor
        self.batch_size = batch_size
        self.collator = collator if collator is not None or processor is None else AudioCollator(processor)
        self.shuffle_buffer = int(shuffle_buffer)
        self.shuffle_shards = bool(shuffle_shards)
        self.seed = int(seed)
        self.max_audio_seconds = max_audio_seconds
        self.max_member_bytes = max_member_bytes
        self.rank = rank
        self.world_size = world_size
        self.worker = worker
        self.num_workers = num_workers
        self.split = split
        self.decode_images = decode_images
        self.skip_counter = skip_counter if skip_counter is not None else SkipCounter()
        self.epoch = int(epoch)
        # (epoch, {worker: raw samples}): in that epoch each worker passes over its first raw samples without
        # decoding them (a resume point; see `resume_plan`)
        self.resume_positions: tuple[int, dict[int, int]] | None = None
        self._consumed = 0  # raw samples the running pass has taken from its shuffle buffer

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # -------------------------------------------------------------- identity
    def consumer(self) -> tuple[int, int, int, int]:
        """(rank, world_size, worker, num_workers) of the code iterating right now."""
        rank, world = _distributed()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        worker, nworkers = _worker()
        worker = self.worker if self.worker is not None else worker
        nworkers = self.num_workers if self.num_workers is not None else nworkers
        if not (0 <= rank < world and 0 <= worker < nworkers):
            raise ValueError(f"bad consumer identity rank={rank}/{world} worker={worker}/{nworkers}")
        return rank, world, worker, nworkers

    # -------------------------------------------------------------- stages
    def raw_samples(self, epoch: int | None = None) -> Iterator[dict | _Bad]:
        """This consumer's share of the raw (undecoded) samples and skip events, in stream order."""
        epoch = self.epoch if epoch is None else epoch
        rank, world, worker, nworkers = self.consumer()
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"{self.seed}:{epoch}").shuffle(urls)  # identical on every rank and worker

        def by_shard(n_urls: int, parts: int) -> bool:
            return self.split == "shard" or (self.split == "auto" and n_urls >= parts)

        node_split = None
        if world > 1:
            if by_shard(len(urls), world):
                urls = urls[rank::world]
            else:
                node_split = (rank, world)
        worker_split = None
        if nworkers > 1:
            if node_split is None and by_shard(len(urls), nworkers):
                urls = urls[worker::nworkers]
            else:
                worker_split = (worker, nworkers)

        stream: Iterable = _unique_keys(item for url in urls for item in iter_tar_samples(url, self.max_member_bytes))
        if node_split is not None:
            stream = _keep_every(stream, *node_split)
        if worker_split is not None:
            stream = _keep_every(stream, *worker_split)
        return iter(stream)

    def _shuffled(self, items: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if self.shuffle_buffer <= 1:
            yield from items
            return
        buf: list[dict] = []
        for item in items:
            if len(buf) < self.shuffle_buffer:
                buf.append(item)
                continue
            i = rng.randrange(len(buf))
            out, buf[i] = buf[i], item
            yield out
        rng.shuffle(buf)
        yield from buf

    def decode(self, raw: dict) -> dict:
        """Raw sample -> ``{"key", "url", "audio", "sampling_rate", "messages", "image", "meta"}``.
        Raises `SampleSkipped`."""
        if "__too_large__" in raw:
            raise SampleSkipped(SkipReason.MEMBER_TOO_LARGE, raw["__too_large__"])
        if "__duplicate__" in raw:
            raise SampleSkipped(SkipReason.DUPLICATE_MEMBER, f"two .{raw['__duplicate__']} members")
        audio_ext = next((e for e in AUDIO_EXTENSIONS if e in raw), None)
        if audio_ext is None:
            raise SampleSkipped(
                SkipReason.MISSING_AUDIO, f"members: {sorted(k for k in raw if not k.startswith('__'))}"
            )
        if "json" not in raw:
            raise SampleSkipped(SkipReason.MISSING_JSON)
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
        record = parse_json_bytes(raw["json"])
        messages = normalize_messages(record, has_image=image_ext is not None and self.decode_images)
        audio, sr = decode_audio(raw[audio_ext], audio_ext, self.max_audio_seconds)
        audio = to_mono(audio)
        if self.processor is not None:
            try:
                audio = self.processor.prepare_audio([audio], sr)[0]
            except ValueError as exc:
                raise SampleSkipped(SkipReason.BAD_AUDIO, str(exc)) from None
            if audio.shape[-1] == 0:
                raise SampleSkipped(SkipReason.EMPTY_AUDIO, "zero samples after resampling")
            sr = SAMPLING_RATE
        image = decode_image(raw[image_ext]) if image_ext is not None and self.decode_images else None
        meta = {k: v for k, v in record.items() if k not in ("messages", "prompt", "response", "system")}
        return {
            "key": raw["__key__"],
            "url": raw.get("__url__"),
            "audio": audio,
            "sampling_rate": sr,
            "messages": messages,
            "image": image,
            "meta": meta,
        }

    def samples(self, epoch: int | None = None) -> Iterator[dict]:
        """Decoded samples of this consumer (skips counted in ``skip_counter``). With ``resume_positions`` for
        this epoch, the consumer's first raw samples are passed over undecoded (their skips were counted by
        the run that is being resumed, so raw-stream events met meanwhile are not counted again)."""
        epoch = self.epoch if epoch is None else epoch
        rank, _, worker, _ = self.consumer()
        counter = self.skip_counter
        replay = 0
        if self.resume_positions is not None and self.resume_positions[0] == epoch:
            replay = int(self.resume_positions[1].get(worker, 0))

        def good_raw():
            for item in self.raw_samples(epoch):
                if isinstance(item, _Bad):
                    if self._consumed >= replay:
                        counter.add(item.reason, key=item.key, url=item.url, detail=item.detail)
                else:
                    yield item

        rng = random.Random(f"{self.seed}:{epoch}:{rank}:{worker}")
        self._consumed = 0
        for raw in self._shuffled(good_raw(), rng):
            self._consumed += 1
            if self._consumed <= replay:
                continue
            try:
                yield self.decode(raw)
            except SampleSkipped as exc:
                counter.add(exc.reason, key=raw.get("__key__"), url=raw.get("__url__"), detail=exc.detail)

    def collate(self, samples: list[dict]) -> dict | None:
        """Collate; when the batch fails, collate the samples one by one to find (and count) the failing ones,
        then collate the rest. ``None`` when nothing is left."""
        try:
            return self.collator(samples)
        except Exception as exc:
            if len(samples) == 1:
                s = samples[0]
                self.skip_counter.add(SkipReason.ENCODE_ERROR, key=s.get("key"), url=s.get("url"), detail=repr(exc))
                return None
        good = [s for s in samples if self.collate([s]) is not None]
        if len(good) == len(samples):  # no single culprit: the combination failed; drop the batch, counted
            for s in samples:
                self.skip_counter.add(
                    SkipReason.ENCODE_ERROR, key=s.get("key"), url=s.get("url"), detail="batch failed"
                )
            return None
        return self.collate(good) if good else None

    def batches(self, epoch: int | None = None) -> Iterator[dict]:
        pending: list[dict] = []
        for sample in self.samples(epoch):
            pending.append(sample)
            if len(pending) == self.batch_size:
                batch = self.collate(pending)
                pending = []
                if batch is not None:
                    yield batch
        if pending:
            batch = self.collate(pending)
            if batch is not None:
                yield batch

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch
        self.epoch += 1  # persistent workers / direct iteration: the next pass is the next epoch
        rank, world, worker, nworkers = self.consumer()
        self.skip_counter.take_delta()  # ship only what this pass counts
        n_yielded = 0
        if self.batch_size is None:
            for sample in self.samples(epoch):
                n_yielded += 1
                yield sample
        else:
            for batch in self.batches(epoch):
                batch["skip_counts"] = self.skip_counter.take_delta()
                # where this batch leaves the worker's stream: what a resume needs to skip without decoding
                batch["stream_position"] = (worker, self._consumed)
                n_yielded += len(batch["keys"])
                yield batch
            trailing = self.skip_counter.take_delta()
            if trailing:  # skips after the last batch (or a worker without any good sample)
                yield {SKIPS_ONLY: True, "skip_counts": trailing}
        level = logging.WARNING if self.skip_counter.total else logging.INFO
        logger.log(
            level,
            "[rank %d/%d worker %d/%d epoch %d] %d samples; %s",
            rank,
            world,
            worker,
            nworkers,
            epoch,
            n_yielded,
            self.skip_counter.summary(),
        )


def resume_plan(batches: int, stream: Mapping[str, Any] | None, num_workers: int) -> tuple[dict[int, int], int] | None:
    """Where each worker resumes after ``batches`` consumed batches of an epoch, from the training loop's
    record ``stream`` (``{"batches": {worker: batches consumed}, "positions": {worker: [raw samples after its
    previous batch, after its latest]}}``): ``({worker: raw samples to pass over}, batches to drop)``, or
    ``None`` when the record does not describe this loader (other worker count, a worker that ran dry).

    A ``DataLoader`` takes batches from its workers in turn, and a new one starts again at worker 0. After
    n = r * W + m batches, workers 0..m-1 have given r + 1 and the others r. So every worker is put back
    where it stood after r batches and the first m batches of the pass are dropped: the next batch then
    comes from worker m, as in the uninterrupted run, at the cost of decoding m < W batches.
    """
    if batches == 0:
        return {}, 0
    if stream is None:
        return None
    workers = max(1, num_workers)  # 0 workers: the main process is the one worker
    counts = {int(w): int(n) for w, n in stream.get("batches", {}).items()}
    positions = {int(w): [int(p) for p in pair] for w, pair in stream.get("positions", {}).items()}
    rounds, extra = divmod(batches, workers)
    expected = {w: rounds + (1 if w < extra else 0) for w in range(workers)}
    if {w: n for w, n in counts.items() if n} != {w: n for w, n in expected.items() if n}:
        return None
    plan = {}
    for w in range(workers):
        if rounds == 0:
            plan[w] = 0
        elif w not in positions:
            return None
        else:
            plan[w] = positions[w][0] if w < extra else positions[w][1]
    return plan, extra


def record_stream_position(stream: dict, position: Sequence[int]) -> None:
    """Add a consumed batch's ``stream_position`` (worker, raw samples) to a `resume_plan` record."""
    worker, consumed = int(position[0]), int(position[1])
    stream.setdefault("batches", {})
    stream.setdefault("positions", {})
    stream["batches"][worker] = stream["batches"].get(worker, 0) + 1
    stream["positions"][worker] = [stream["positions"].get(worker, [0, 0])[1], consumed]


class ShardLoader(DataLoader):
    """``DataLoader(batch_size=None)`` over a batching `AudioShardDataset`, which (1) sets the dataset's epoch
    before each pass (so shuffling differs per epoch and matches across ranks), (2) moves each batch's
    ``skip_counts`` (gathered in worker processes) into ``skip_counter`` in this process and (3) with
    ``require_data`` (default), raises `NoDataError` naming the shards and the pass's skip counts when a whole
    pass yields no batch (every shard missing, every sample bad): a training loop would otherwise start empty
    epoch after empty epoch and never reach ``max_steps``. A resumed pass that has nothing left is not an error."""

    def __init__(
        self, dataset: AudioShardDataset, skip_counter: SkipCounter | None = None, require_data: bool = True, **kwargs
    ):
        kwargs.setdefault("batch_size", None)
        # Starting a pass draws a base seed; from its own generator, so that loading data never advances the
        # global RNG (dropout etc.), which keeps a resumed run on the uninterrupted run's random stream.
        kwargs.setdefault("generator", torch.Generator().manual_seed(dataset.seed))
        if kwargs.get("num_workers", 0) > 0:
            kwargs.setdefault("worker_init_fn", _worker_init)
        super().__init__(dataset, **kwargs)
        self.skip_counter = skip_counter if skip_counter is not None else SkipCounter(name="main")
        self.require_data = bool(require_data)
        self._epoch = dataset.epoch
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next pass (e.g. the trainer's epoch after resuming from a checkpoint)."""
        self._epoch = int(epoch)
        self.dataset.set_epoch(self._epoch)  # what persistent workers start from

    def skip_batches(self, n: int) -> None:
        """Drop the first ``n`` batches of the next pass (a mid-epoch resume point; the stream is deterministic
        for seed + epoch). They are decoded, then dropped: `AudioShardDataModule.resume_at` with a stream record
        skips without decoding and drops fewer than ``num_workers`` batches this way. Their skip counts are not
        added again: a restored counter holds them."""
        if n < 0:
            raise ValueError(f"cannot skip {n} batches")
        self._skip = int(n)

    def __iter__(self):
        if not self.persistent_workers or self.num_workers == 0:
            self.dataset.set_epoch(self._epoch)
        epoch = self._epoch
        self._epoch += 1
        skip, self._skip = self._skip, 0
        positions = getattr(self.dataset, "resume_positions", None)
        resumed = skip > 0 or (positions is not None and positions[0] == epoch)
        counts_before = dict(self.skip_counter.counts)
        n_batches = 0
        for batch in super().__iter__():
            if isinstance(batch, dict) and "skip_counts" in batch:
                counts = batch.pop("skip_counts")
                if not skip:
                    self.skip_counter.update(counts)
                if batch.get(SKIPS_ONLY):
                    continue
            n_batches += 1
            if skip:
                skip -= 1
                continue
            yield batch
        if n_batches == 0 and self.require_data and not resumed:
            raise NoDataError(self._no_data_message(epoch, counts_before))

    def _no_data_message(self, epoch: int, counts_before: Mapping[str, int]) -> str:
        urls = list(self.dataset.urls)
        shown = ", ".join(urls[:8]) + (f", ... ({len(urls) - 8} more)" if len(urls) > 8 else "")
        pass_counts = SkipCounter()
        pass_counts.update({r: n - counts_before.get(r, 0) for r, n in self.skip_counter.counts.items()})
        return (
            f"no sample in a whole pass (epoch {epoch}) over {len(urls)} shard(s): {shown}; "
            f"{pass_counts.summary()}. Check the shard paths (a missing file is unreadable_shard) and the skip "
            "reasons logged above."
        )


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers share the cores; one thread each avoids oversubscription


# ======================================================================================= Lightning
# Lightning takes seconds to import; the reader and the shard writer do not need it, so the data module class
# is built on first access (``from recipes.data import AudioShardDataModule`` works as usual).
_DATAMODULE_CLASS = None


def _build_datamodule_class():
    import lightning.pytorch as pl

    class AudioShardDataModule(pl.LightningDataModule):
        """Lightning data module over WebDataset shards.

        Args:
            train_shards / val_shards / test_shards: shard specs (see `expand_shards`); any may be ``None``.
            processor: an `AudioVLMProcessor`, or a directory saved with ``save_pretrained``. ``None``: taken from
                ``trainer.lightning_module.processor`` at ``setup`` (or set ``datamodule.processor`` yourself).
            batch_size / eval_batch_size: samples per batch (eval defaults to batch_size).
            num_workers: DataLoader workers per rank.
            shuffle_buffer: training shuffle buffer (samples); shards are shuffled per epoch as well.
            max_audio_seconds: longer clips are skipped (``too_long``).
            max_member_bytes: samples with a larger tar member are skipped unread (``member_too_large``;
                default 256 MiB, ``None``: no cap).
            train_padding_side: ``"right"`` (default) for training batches.
            eval_padding_side: ``"left"`` (default) for generation batches (test/predict, and validation when
                ``val_for_generation``).
            val_for_generation: validation yields generation batches (prompt + ``references``) instead of
                teacher-forced batches with labels.
            split: ``"auto"`` | ``"shard"`` | ``"sample"`` (see `AudioShardDataset`).
            rank / world_size: override the trainer's global rank / world size (simulated ranks in tests).

        ``skip_counter`` aggregates skips from all loaders of this process (see `ShardLoader`); ``skip_counts``
        is its dict. In DDP each rank has its own; reduce them if you need a global figure.

        Every setting is checked when the module is built (a batch size of 0, a negative worker count ... raise
        ValueError naming the setting and its value). A training pass (or, on one rank, an evaluation pass)
        that yields no sample raises `NoDataError` naming the shards and the skip counts.
        """

        def __init__(
            self,
            train_shards=None,
            val_shards=None,
            test_shards=None,
            processor=None,
            batch_size: int = 8,
            eval_batch_size: int | None = None,
            num_workers: int = 2,
            shuffle_buffer: int = 1000,
            seed: int = 0,
            max_audio_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS,
            train_padding_side: str = "right",
            eval_padding_side: str = "left",
            val_for_generation: bool = False,
            split: str = "auto",
            rank: int | None = None,
            world_size: int | None = None,
            pin_memory: bool = False,
            persistent_workers: bool = False,
            max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES,
        ):
            super().__init__()
            check_int("batch_size", batch_size, 1)
            check_int("eval_batch_size", eval_batch_size, 1, optional=True)
            check_int("num_workers", num_workers, 0)
            check_int("shuffle_buffer", shuffle_buffer, 0)
            check_int("seed", seed)
            check_float("max_audio_seconds", max_audio_seconds, 0.0, low_open=True, optional=True)
            check_int("max_member_bytes", max_member_bytes, 1, optional=True)
            check_choice("train_padding_side", train_padding_side, ("left", "right"))
            check_choice("eval_padding_side", eval_padding_side, ("left", "right"))
            check_choice("split", split, ("auto", "shard", "sample"))
            check_int("world_size", world_size, 1, optional=True)
            check_int("rank", rank, 0, optional=True)
            if rank is not None and world_size is not None and rank >= world_size:
                raise ValueError(f"rank must be < world_size={world_size}, got {rank!r}")
            self.train_shards = train_shards
            self.val_shards = val_shards
            self.test_shards = test_shards
            self.processor = processor
            self.batch_size = int(batch_size)
            self.eval_batch_size = int(eval_batch_size or batch_size)
            self.num_workers = int(num_workers)
            self.shuffle_buffer = int(shuffle_buffer)
            self.seed = int(seed)
            self.max_audio_seconds = max_audio_seconds
            self.max_member_bytes = max_member_bytes
            self.train_padding_side = train_padding_side
            self.eval_padding_side = eval_padding_side
            self.val_for_generation = bool(val_for_generation)
            self.split = split
            self.rank = rank
            self.world_size = world_size
            self.pin_memory = pin_memory
            self.persistent_workers = persistent_workers and num_workers > 0
            self.skip_counter = SkipCounter(name="datamodule")
            self._train_loader: ShardLoader | None = None
            self._resume_position: tuple[int, int, Mapping[str, Any] | None] | None = None

        @property
        def skip_counts(self) -> dict[str, int]:
            return self.skip_counter.as_dict()

        # -------------------------------------------------------------- setup
        def _resolve_processor(self):
            if isinstance(self.processor, (str, os.PathLike)):
                from audio_adapter.processing import AudioVLMProcessor

                self.processor = AudioVLMProcessor.from_pretrained(self.processor)
            if self.processor is None:
                trainer = getattr(self, "trainer", None)
                module = getattr(trainer, "lightning_module", None) if trainer is not None else None
                self.processor = getattr(module, "processor", None)
            if self.processor is None:
                raise ValueError("AudioShardDataModule needs a processor (argument, or lightning_module.processor)")
            return self.processor

        def _rank_world(self) -> tuple[int | None, int | None]:
            rank, world = self.rank, self.world_size
            trainer = getattr(self, "trainer", None)
            if trainer is not None:
                rank = trainer.global_rank if rank is None else rank
                world = trainer.world_size if world is None else world
            return rank, world

        def setup(self, stage: str | None = None) -> None:
            self._resolve_processor()

        def _dataset(self, shards, train: bool, for_generation: bool, padding_side: str) -> AudioShardDataset:
            if shards is None:
                raise ValueError("no shards configured for this split")
            processor = self._resolve_processor()
            rank, world = self._rank_world()
            return AudioShardDataset(
                shards,
                processor,
                batch_size=self.batch_size if train else self.eval_batch_size,
                collator=AudioCollator(processor, padding_side=padding_side, for_generation=for_generation),
                shuffle_buffer=self.shuffle_buffer if train else 0,
                shuffle_shards=train,
                seed=self.seed,
                max_audio_seconds=self.max_audio_seconds,
                max_member_bytes=self.max_member_bytes,
                rank=rank,
                world_size=world,
                split=self.split,
                skip_counter=SkipCounter(name="train" if train else "eval"),
            )

        def _loader(self, dataset: AudioShardDataset, train: bool = False) -> ShardLoader:
            # an evaluation set too small for every rank may leave one rank without a sample: only training
            # passes (and evaluation on one rank) require data
            _, world = self._rank_world()
            return ShardLoader(
                dataset,
                skip_counter=self.skip_counter,
                require_data=train or (world or 1) == 1,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                persistent_workers=self.persistent_workers,
            )

        def resume_at(self, epoch: int, batches: int, stream: Mapping[str, Any] | None = None) -> None:
            """The next `train_dataloader` starts in ``epoch`` after ``batches`` batches (a mid-epoch checkpoint);
            called by the LightningModule when it restores a checkpoint. ``stream``: the module's record of the
            consumed batches' stream positions (`resume_plan`); with it the workers pass over what was consumed
            without decoding it, else the skipped batches are decoded and dropped."""
            self._resume_position = (int(epoch), int(batches), stream)

        def train_dataloader(self) -> ShardLoader:
            ds = self._dataset(
                self.train_shards, train=True, for_generation=False, padding_side=self.train_padding_side
            )
            loader = self._loader(ds, train=True)
            trainer = getattr(self, "trainer", None)
            if self._resume_position is not None:
                epoch, batches, stream = self._resume_position
                self._resume_position = None
                loader.set_epoch(epoch)
                plan = resume_plan(batches, stream, self.num_workers)
                if plan is None:
                    if batches:
                        logger.info("resuming %d batches into epoch %d by decoding and dropping them", batches, epoch)
                    loader.skip_batches(batches)
                else:
                    positions, drop = plan
                    ds.resume_positions = (epoch, positions)
                    loader.skip_batches(drop)
            elif trainer is not None:
                loader.set_epoch(trainer.current_epoch)
            return loader

        def val_dataloader(self) -> ShardLoader:
            gen = self.val_for_generation
            side = self.eval_padding_side if gen else self.train_padding_side
            return self._loader(self._dataset(self.val_shards, train=False, for_generation=gen, padding_side=side))

        def test_dataloader(self) -> ShardLoader:
            return self._loader(
                self._dataset(self.test_shards, train=False, for_generation=True, padding_side=self.eval_padding_side)
            )

        def predict_dataloader(self) -> ShardLoader:
            return self.test_dataloader()

        def state_dict(self) -> dict:
            return {"skip_counts": self.skip_counts}

        def load_state_dict(self, state_dict: dict) -> None:
            self.skip_counter.reset()
            self.skip_counter.update(state_dict.get("skip_counts", {}))

    AudioShardDataModule.__module__ = __name__
    AudioShardDataModule.__qualname__ = "AudioShardDataModule"
    return AudioShardDataModule


def __getattr__(name: str):
    global _DATAMODULE_CLASS
    if name == "AudioShardDataModule":
        if _DATAMODULE_CLASS is None:
            _DATAMODULE_CLASS = _build_datamodule_class()
        return _DATAMODULE_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
