"""Streaming WebDataset shards of audio chat samples: `AudioShardDataset` (iterated by
`recipes.data.loader.ShardLoader`; the Lightning side is `recipes.data.datamodule.AudioShardDataModule`).

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

The steps live in their own modules: `recipes.data.skips` (reasons, counter), `recipes.data.samples` (JSON -> chat
turns, audio/image bytes -> arrays), `recipes.data.shard_reader` (tar -> raw samples), `recipes.data.collate` (samples
-> batches) and `recipes.data.shard_writer` (manifest -> shards).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.processing.audio_features import to_mono
from recipes.common.settings import check_choice, check_float, check_int
from recipes.data.collate import AudioCollator
from recipes.data.samples import (
    AUDIO_EXTENSIONS,
    DEFAULT_MAX_TOKENS,
    IMAGE_EXTENSIONS,
    check_json_size,
    check_text_tokens,
    decode_audio,
    decode_image,
    normalize_messages,
    parse_json_bytes,
    sample_texts,
)
from recipes.data.shard_reader import DEFAULT_MAX_MEMBER_BYTES, _Bad, expand_shards, iter_tar_samples, shard_keys
from recipes.data.skips import SampleSkipped, SkipCounter, SkipReason

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


def _unique_keys(items: Iterable[tuple[int, dict | _Bad]], owners: dict[str, int] | None = None) -> Iterator:
    """``(shard index, item)`` pairs -> items, where every raw sample whose key was met before is replaced by a
    ``duplicate_key`` event: before in this stream (a set of the keys met: about 100 bytes a sample, reset every
    epoch), or, with ``owners`` ({key held by several shards: the index of the first of them in this epoch's
    order}), in an earlier shard that another consumer reads. So the copy kept is the first in the epoch's shard
    order, as one consumer reading every shard keeps it, whatever the split."""
    seen: set[str] = set()
    for index, item in items:
        if not isinstance(item, _Bad):
            key = item["__key__"]
            if key in seen or (owners is not None and owners.get(key, index) != index):
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
        max_tokens: skip samples whose texts hold more tokens (``too_long``; see below); ``None``: no cap.
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
    the shard or in another shard. The copy kept is the first in the epoch's shard order, and each repeat is
    counted once, for any number of ranks and data workers (where they read different shards, a scan of every
    shard's tar headers, made once, tells each one which keys an earlier shard of another holds: `shared_keys`).

    ``max_tokens`` caps the tokens of a sample's texts (turns, system prompt, transcript; the audio and image
    tokens are capped by ``max_audio_seconds`` and the image processor): a longer sample is skipped
    (``too_long``) before it reaches the collator. A JSON member above `JSON_BYTES_PER_TOKEN` x ``max_tokens``
    bytes is skipped without being parsed; texts of at most ``max_tokens // 3`` UTF-8 bytes pass without being
    tokenised (`recipes.data.samples.check_text_tokens`). ``None`` disables the cap.
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
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
    ):
        super().__init__()
        check_choice("split", split, ("auto", "shard", "sample"))
        check_int("batch_size", batch_size, 1, optional=True)
        check_int("shuffle_buffer", shuffle_buffer, 0)
        check_int("seed", seed)
        check_float("max_audio_seconds", max_audio_seconds, 0.0, low_open=True, optional=True)
        check_int("max_member_bytes", max_member_bytes, 1, optional=True)
        check_int("max_tokens", max_tokens, 1, optional=True)
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
        self.max_tokens = max_tokens
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
        self._shared_keys: dict[str, tuple[int, ...]] | None = None  # see `shared_keys`

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
    def _split(self, n_urls: int, rank: int, world: int, nworkers: int) -> tuple[bool, bool]:
        """(the ranks split the shard list, this rank's workers split its shards); where not, they split the
        samples (a rank that reads every shard has its workers keep every k-th sample too)."""

        def by_shard(n: int, parts: int) -> bool:
            return self.split == "shard" or (self.split == "auto" and n >= parts)

        node = world > 1 and by_shard(n_urls, world)
        if world > 1 and not node:
            return False, False
        share = len(range(rank, n_urls, world)) if node else n_urls
        return node, nworkers > 1 and by_shard(share, nworkers)

    def shared_keys(self) -> dict[str, tuple[int, ...]]:
        """``{key: indices in urls of the shards holding it}`` for the keys found in more than one shard, from a
        scan of every shard's tar headers (`shard_keys`), made once per data set (`ShardLoader` makes it before its
        workers start). Needed where consumers read different shards, to skip a repeated key as one reader of
        every shard does. The scan holds every key once meanwhile (about 100 bytes a sample)."""
        if self._shared_keys is None:
            start = time.perf_counter()
            first: dict[str, int] = {}
            shared: dict[str, list[int]] = {}
            for i, url in enumerate(self.urls):
                for key in dict.fromkeys(shard_keys(url, self.max_member_bytes)):
                    if key in first:
                        shared.setdefault(key, [first[key]]).append(i)
                    else:
                        first[key] = i
            self._shared_keys = {key: tuple(where) for key, where in shared.items()}
            logger.info(
                "tar headers of %d shards scanned in %.1f s: %d of %d keys are in more than one shard",
                len(self.urls), time.perf_counter() - start, len(shared), len(first),
            )  # fmt: skip
        return self._shared_keys

    def splits_shards(self, num_workers: int | None = None) -> bool:
        """Whether the consumers (ranks x ``num_workers``, default: this consumer's count) read different shards."""
        rank, world, _, nworkers = self.consumer()
        return any(self._split(len(self.urls), rank, world, nworkers if num_workers is None else num_workers))

    def raw_samples(self, epoch: int | None = None) -> Iterator[dict | _Bad]:
        """This consumer's share of the raw (undecoded) samples and skip events, in stream order."""
        epoch = self.epoch if epoch is None else epoch
        rank, world, worker, nworkers = self.consumer()
        order = list(range(len(self.urls)))
        if self.shuffle_shards:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)  # identical on every rank and worker
        node_by_shard, worker_by_shard = self._split(len(order), rank, world, nworkers)
        mine = order[rank::world] if node_by_shard else order
        mine = mine[worker::nworkers] if worker_by_shard else mine
        owners = None
        if node_by_shard or worker_by_shard:  # a key may sit in a shard that another consumer reads
            position = {index: p for p, index in enumerate(order)}
            owners = {key: min(where, key=position.__getitem__) for key, where in self.shared_keys().items()}
        pairs = ((i, item) for i in mine for item in iter_tar_samples(self.urls[i], self.max_member_bytes))
        stream: Iterable = _unique_keys(pairs, owners)
        if world > 1 and not node_by_shard:
            stream = _keep_every(stream, rank, world)
        if nworkers > 1 and not worker_by_shard:
            stream = _keep_every(stream, worker, nworkers)
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
        check_json_size(raw["json"], self.max_tokens)
        record = parse_json_bytes(raw["json"])
        messages = normalize_messages(record, has_image=image_ext is not None and self.decode_images)
        tokenizer = getattr(self.processor, "tokenizer", None)
        check_text_tokens(sample_texts(messages, record), tokenizer, self.max_tokens)  # before the audio is decoded
        audio, sr = decode_audio(raw[audio_ext], audio_ext, self.max_audio_seconds)
        if self.processor is None:
            audio = to_mono(audio).numpy()
        else:
            try:  # mono + 16 kHz in one step (prepare_waveform); 2-3x faster on stereo than a numpy mean first
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
