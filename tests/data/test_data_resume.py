"""Mid-epoch resume without decoding what was consumed: `resume_plan` in closed form, and a data module put back
at every batch of an epoch -- with 0 and 2 DataLoader workers, bad samples mixed in -- continues exactly as the
uninterrupted pass does, decoding only what comes after the resume point."""

from __future__ import annotations

import json
import os

import pytest
import soundfile as sf
import webdataset as wds

from audio_adapter.testing import TINY_3S
from recipes.data.datamodule import AudioShardDataModule
from recipes.data.dataset import AudioShardDataset
from recipes.synthetic.datasets import notes_sample
from recipes.training.resume import record_stream_position, resume_plan

SR = 16000


def test_resume_plan_closed_form():
    assert resume_plan(0, None, 2) == ({}, 0)
    assert resume_plan(5, None, 1) is None  # no record: decode and drop
    # one process: back to where the 5th batch left the stream
    assert resume_plan(5, {"batches": {0: 5}, "positions": {0: [40, 52]}}, 1) == ({0: 52}, 0)
    # 2 workers, 3 batches (w0, w1, w0): both back to after their first batch, then drop w0's second
    record = {"batches": {0: 2, 1: 1}, "positions": {0: [10, 21], 1: [0, 12]}}
    assert resume_plan(3, record, 2) == ({0: 10, 1: 12}, 1)
    # 2 workers, 1 batch: nobody fast-forwards, the one batch is dropped
    assert resume_plan(1, {"batches": {0: 1}, "positions": {0: [0, 9]}}, 2) == ({0: 0, 1: 0}, 1)
    # worker 1 ran dry after one batch: turn order broke, no plan
    assert resume_plan(4, {"batches": {0: 3, 1: 1}, "positions": {0: [20, 30], 1: [0, 9]}}, 2) is None
    # a record from 2 workers does not fit 3
    assert resume_plan(4, {"batches": {0: 2, 1: 2}, "positions": {0: [9, 20], 1: [8, 19]}}, 3) is None


def test_record_stream_position_keeps_the_last_two():
    stream: dict = {}
    for position in [(0, 4), (1, 5), (0, 9), (0, 13)]:
        record_stream_position(stream, position)
    assert stream == {"batches": {0: 3, 1: 1}, "positions": {0: [9, 13], 1: [0, 5]}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4 shards of 6 samples; every third is undecodable (so raw positions differ from good-sample counts)."""
    root = tmp_path_factory.mktemp("resume_shards")
    audio_path = root / "a.flac"
    index = 0
    for shard in range(4):
        with wds.TarWriter(str(root / f"part-{shard}.tar")) as writer:
            for i in range(6):
                index += 1
                if i % 3 == 2:
                    writer.write(
                        {
                            "__key__": f"bad{index:03d}",
                            "flac": os.urandom(2000),
                            "json": b'{"prompt": "q", "response": "a"}',
                        }
                    )
                    continue
                s = notes_sample(3, index)
                sf.write(audio_path, s["audio"], SR, format="FLAC")
                record = {"prompt": s["prompt"], "response": s["response"]}
                writer.write(
                    {"__key__": s["key"], "flac": audio_path.read_bytes(), "json": json.dumps(record).encode()}
                )
    return str(root / "part-*.tar")


@pytest.fixture(scope="module")
def processor():
    from audio_adapter.testing import tiny_processor

    return tiny_processor(**TINY_3S)


def _dm(shards, processor, workers: int) -> AudioShardDataModule:
    dm = AudioShardDataModule(train_shards=shards, batch_size=3, num_workers=workers, shuffle_buffer=4, seed=3)
    dm.processor = processor
    return dm


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_every_batch_continues_the_pass(shards, processor, workers):
    dm = _dm(shards, processor, workers)
    loader = dm.train_dataloader()
    loader.set_epoch(1)
    full = list(loader)
    keys = [b["keys"] for b in full]
    assert len(keys) >= 4 and sum(len(k) for k in keys) == 16
    for n in range(1, len(full)):
        stream: dict = {}
        for batch in full[:n]:
            record_stream_position(stream, batch["stream_position"])
        assert resume_plan(n, stream, workers) is not None
        dm.resume_at(1, n, stream=stream)
        resumed = dm.train_dataloader()
        assert [b["keys"] for b in resumed] == keys[n:], n


def test_fast_forward_decodes_nothing_it_passes_over(shards, processor, monkeypatch):
    dm = _dm(shards, processor, 0)
    full = list(dm.train_dataloader())
    stream: dict = {}
    for batch in full[:3]:
        record_stream_position(stream, batch["stream_position"])
    decoded = []
    original = AudioShardDataset.decode
    monkeypatch.setattr(
        AudioShardDataset, "decode", lambda self, raw: decoded.append(raw["__key__"]) or original(self, raw)
    )
    dm.resume_at(0, 3, stream=stream)
    rest = [b["keys"] for b in dm.train_dataloader()]
    assert rest == [b["keys"] for b in full[3:]]
    # only what follows the position is decoded: the remaining good samples and the bad ones among them
    assert len(decoded) == 24 - stream["positions"][0][1]
    assert not set(decoded) & {k for b in full[:3] for k in b["keys"]}
    # without the record the consumed batches are decoded again (and dropped)
    decoded.clear()
    dm.resume_at(0, 3)
    assert [b["keys"] for b in dm.train_dataloader()] == rest
    assert len(decoded) == 24
