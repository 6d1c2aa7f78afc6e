"""`AudioShardDataModule`: the Lightning data module over WebDataset shards (train / val / test / predict
loaders built from `recipes.data.dataset.AudioShardDataset` + `recipes.data.loader.ShardLoader`).

Importing it imports Lightning (seconds); the reader (`recipes.data.dataset`) and the shard writer do not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from recipes.common.settings import check_choice, check_float, check_int
from recipes.data.collate import AudioCollator
from recipes.data.dataset import DEFAULT_MAX_AUDIO_SECONDS, AudioShardDataset
from recipes.data.loader import ShardLoader
from recipes.data.samples import DEFAULT_MAX_TOKENS
from recipes.data.shard_reader import DEFAULT_MAX_MEMBER_BYTES
from recipes.data.skips import SkipCounter
from recipes.training.resume import resume_plan

logger = logging.getLogger(__name__)


def _check_settings(args: Mapping[str, Any]) -> None:
    """Refuse out-of-range data settings (name and value in the error) when the module is built."""
    check_int("batch_size", args["batch_size"], 1)
    check_int("eval_batch_size", args["eval_batch_size"], 1, optional=True)
    check_int("num_workers", args["num_workers"], 0)
    check_int("shuffle_buffer", args["shuffle_buffer"], 0)
    check_int("seed", args["seed"])
    check_float("max_audio_seconds", args["max_audio_seconds"], 0.0, low_open=True, optional=True)
    check_int("max_member_bytes", args["max_member_bytes"], 1, optional=True)
    check_int("max_tokens", args["max_tokens"], 1, optional=True)
    check_choice("train_padding_side", args["train_padding_side"], ("left", "right"))
    check_choice("eval_padding_side", args["eval_padding_side"], ("left", "right"))
    check_choice("split", args["split"], ("auto", "shard", "sample"))
    check_int("world_size", args["world_size"], 1, optional=True)
    check_int("rank", args["rank"], 0, optional=True)
    rank, world_size = args["rank"], args["world_size"]
    if rank is not None and world_size is not None and rank >= world_size:
        raise ValueError(f"rank must be < world_size={world_size}, got {rank!r}")


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
        max_tokens: samples whose texts (turns, system prompt, transcript) hold more tokens are skipped
            (``too_long``; default 4096, ``None``: no cap), before the collator tokenises them: one runaway
            sample would otherwise fail the run, and its resume, at the same step (see `AudioShardDataset`).
        train_padding_side: ``"right"`` (default) for training batches.
        eval_padding_side: ``"left"`` (default) for generation batches (test/predict, and validation when
            ``val_for_generation``).
        val_for_generation: validation yields generation batches (prompt + ``references``) instead of
            teacher-forced batches with labels.
        split: ``"auto"`` | ``"shard"`` | ``"sample"`` (see `AudioShardDataset`).
        rank / world_size: override the trainer's global rank / world size (simulated ranks in tests).
        text_twin: training batches carry text twins (`recipes.data.text_twin`; samples without a transcript are
            skipped, ``no_transcript``). ``None`` (default): when the training module's loss needs transcripts
            (``lightning_module.loss_fn.needs_transcript``, e.g. `recipes.losses.TextTeacherKL`).

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
        text_twin: bool | None = None,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
    ):
        super().__init__()
        _check_settings(locals())
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
        self.max_tokens = max_tokens
        self.train_padding_side = train_padding_side
        self.eval_padding_side = eval_padding_side
        self.val_for_generation = bool(val_for_generation)
        self.split = split
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.text_twin = text_twin
        self.skip_counter = SkipCounter(name="datamodule")
        self._resume_position: tuple[int, int, Mapping[str, Any] | None] | None = None

    @property
    def skip_counts(self) -> dict[str, int]:
        return self.skip_counter.as_dict()

    # -------------------------------------------------------------- setup
    def _resolve_processor(self):
        if isinstance(self.processor, (str, os.PathLike)):
            from audio_adapter.processing.processor import AudioVLMProcessor

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

    def _wants_text_twin(self) -> bool:
        if self.text_twin is not None:
            return bool(self.text_twin)
        module = getattr(getattr(self, "trainer", None), "lightning_module", None)
        return bool(getattr(getattr(module, "loss_fn", None), "needs_transcript", False))

    def setup(self, stage: str | None = None) -> None:
        self._resolve_processor()

    def _dataset(self, shards, train: bool, for_generation: bool, padding_side: str) -> AudioShardDataset:
        if shards is None:
            raise ValueError("no shards configured for this split")
        processor = self._resolve_processor()
        rank, world = self._rank_world()
        skips = SkipCounter(name="train" if train else "eval")
        twin = train and self._wants_text_twin()  # the collator counts its no_transcript skips in the data set's
        return AudioShardDataset(
            shards,
            processor,
            batch_size=self.batch_size if train else self.eval_batch_size,
            collator=AudioCollator(processor, padding_side, for_generation, text_twin=twin, skip_counter=skips),
            shuffle_buffer=self.shuffle_buffer if train else 0,
            shuffle_shards=train,
            seed=self.seed,
            max_audio_seconds=self.max_audio_seconds,
            max_member_bytes=self.max_member_bytes,
            max_tokens=self.max_tokens,
            rank=rank,
            world_size=world,
            split=self.split,
            skip_counter=skips,
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
        called by `recipes.training.resume.ExactResume` when a checkpoint is restored. ``stream``: the module's record
        of the consumed batches' stream positions (`resume_plan`); with it the workers pass over what was consumed
        without decoding it, else the skipped batches are decoded and dropped."""
        self._resume_position = (int(epoch), int(batches), stream)

    def train_dataloader(self) -> ShardLoader:
        ds = self._dataset(self.train_shards, train=True, for_generation=False, padding_side=self.train_padding_side)
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
