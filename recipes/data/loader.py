"""`ShardLoader`: the ``DataLoader`` over a batching `recipes.data.dataset.AudioShardDataset` (epochs, skip counts
shipped from the workers, no-data errors, mid-epoch skipping for a resume)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import DataLoader

from recipes.data.dataset import SKIPS_ONLY, AudioShardDataset
from recipes.data.skips import NoDataError, SkipCounter


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
        if self.num_workers > 0 and self.dataset.splits_shards(self.num_workers):
            # one header scan here, kept across epochs and inherited by the workers (which start afresh each epoch)
            self.dataset.shared_keys()
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
