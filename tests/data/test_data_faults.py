"""Damaged shards and hostile data: a damaged tar header mid-shard is skipped up to the next valid header (the
intact samples after it arrive, the damage is counted); duplicate keys anywhere are skipped and counted; shard
members above the size cap are skipped before they are read whole; a shard list that yields nothing stops with
an error naming the shards and the skip counts; out-of-range data settings are refused with name and value."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tracemalloc
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from audio_adapter.testing import TINY_3S
from recipes.data.shard_reader import _Bad, iter_tar_samples
from recipes.data.skips import SkipReason
from recipes.synthetic.datasets import notes_sample


@pytest.fixture(scope="module")
def processor():
    from audio_adapter.testing import tiny_processor

    return tiny_processor(**TINY_3S)


def _good(seed: int, i: int, key: str | None = None) -> dict:
    s = notes_sample(seed, i)
    buf = io.BytesIO()
    sf.write(buf, s["audio"], 16000, format="FLAC")
    return {
        "__key__": key or s["key"],
        "flac": buf.getvalue(),
        "json": json.dumps({"prompt": s["prompt"], "response": s["response"]}).encode(),
    }


def _write(path, samples) -> str:
    with wds.TarWriter(str(path)) as writer:
        for s in samples:
            writer.write(s)
    return str(path)


def _read(url: str, **kwargs) -> tuple[list[dict], list[_Bad]]:
    samples, events = [], []
    for item in iter_tar_samples(url, **kwargs):
        (events if isinstance(item, _Bad) else samples).append(item)
    return samples, events


# ------------------------------------------------------------------------------------------ damaged header
def test_damaged_header_mid_shard_resynchronises(tmp_path):
    """Five samples; the header of the third sample's audio member is overwritten with garbage. The reader skips
    to the next valid header: samples 1, 2, 4, 5 arrive intact, sample 3 arrives without its audio (skipped
    later as missing_audio), and one corrupt_shard event says how many bytes were skipped. Same for a gzip
    stream and a pipe (stream mode, no seeking)."""
    rng = np.random.default_rng(0)
    samples = [
        {"__key__": f"s{i:03d}", "flac": rng.bytes(3000 + 700 * i), "json": json.dumps({"i": i}).encode()}
        for i in range(5)
    ]
    plain = tmp_path / "damaged.tar"
    _write(plain, samples)
    with tarfile.open(plain) as tf:
        member = tf.getmember("s002.flac")
    data = bytearray(plain.read_bytes())
    # the whole header (pax extended header + ustar header): the member cannot be found any more
    data[member.offset : member.offset_data] = rng.bytes(member.offset_data - member.offset)
    plain.write_bytes(bytes(data))
    gz = tmp_path / "damaged.tar.gz"
    gz.write_bytes(gzip.compress(bytes(data)))

    for url in (str(plain), str(gz), f"pipe:cat {plain}"):
        got, events = _read(url)
        assert [s["__key__"] for s in got] == ["s000", "s001", "s002", "s003", "s004"], url
        for s in got:
            i = int(s["__key__"][1:])
            assert s["json"] == samples[i]["json"]
            if i == 2:
                assert "flac" not in s  # its audio member sat behind the damaged header
            else:
                assert s["flac"] == samples[i]["flac"], url
        assert [e.reason for e in events] == [SkipReason.CORRUPT_SHARD], url
        skipped = member.offset_data + ((member.size + 511) // 512) * 512 - member.offset
        assert f"skipped {skipped} bytes" in events[0].detail and str(member.offset) in events[0].detail, events[
            0
        ].detail


def test_gzip_shards_multi_member_padded_and_cut_short(tmp_path):
    """A .tar.gz made of several gzip members (concatenated files) with zero padding reads whole; one cut short
    keeps the samples before the cut and ends with one event."""
    rng = np.random.default_rng(1)
    samples = [{"__key__": f"g{i}", "flac": rng.bytes(20000), "json": b"{}"} for i in range(4)]
    plain = tmp_path / "g.tar"
    _write(plain, samples)
    data = plain.read_bytes()
    multi = tmp_path / "multi.tar.gz"
    multi.write_bytes(gzip.compress(data[:30000]) + gzip.compress(data[30000:]) + bytes(1000))
    got, events = _read(str(multi))
    assert [s["flac"] for s in got] == [s["flac"] for s in samples] and events == []
    cut = tmp_path / "cut.tar.gz"
    whole = gzip.compress(data)
    cut.write_bytes(whole[: len(whole) * 3 // 4])
    got, events = _read(str(cut))
    assert [s["flac"] for s in got] == [s["flac"] for s in samples[: len(got)]] and 1 <= len(got) < 4
    assert len(events) == 1, events


def test_damaged_header_counts_per_reason(tmp_path, processor):
    """End to end through the dataset: 4 of 5 samples arrive; the loss is counted (corrupt_shard for the damaged
    region, missing_audio for the sample that lost its audio member)."""
    from recipes.data.dataset import AudioShardDataset

    samples = [_good(21, i) for i in range(5)]
    path = tmp_path / "d.tar"
    _write(path, samples)
    with tarfile.open(path) as tf:
        member = [m for m in tf.getmembers() if m.name.startswith(samples[3]["__key__"])][0]
    data = bytearray(path.read_bytes())
    data[member.offset : member.offset_data] = os.urandom(member.offset_data - member.offset)
    path.write_bytes(bytes(data))
    ds = AudioShardDataset(str(path), processor)
    keys = [s["key"] for s in ds]
    assert keys == [s["__key__"] for i, s in enumerate(samples) if i != 3]
    assert ds.skip_counter.as_dict() == {SkipReason.CORRUPT_SHARD: 1, SkipReason.MISSING_AUDIO: 1}


# ------------------------------------------------------------------------------------------ duplicate keys
def test_duplicate_keys_anywhere_are_skipped_and_counted(tmp_path, processor):
    """A key repeated later in the same shard (not adjacent) and a key repeated in another shard are each
    trained once; the repeats are counted as duplicate_key."""
    from recipes.data.dataset import AudioShardDataset

    a = [_good(22, i) for i in range(4)]
    b = [_good(22, i) for i in range(4, 7)]
    shard0 = _write(tmp_path / "dup-0.tar", a + [_good(22, 9, key=a[1]["__key__"])])  # a[1] again, 3 samples later
    shard1 = _write(tmp_path / "dup-1.tar", b + [_good(22, 8, key=a[0]["__key__"])])  # a[0] again, other shard
    ds = AudioShardDataset([shard0, shard1], processor)
    keys = [s["key"] for s in ds]
    assert Counter(keys) == Counter(s["__key__"] for s in a + b)
    assert ds.skip_counter.as_dict() == {SkipReason.DUPLICATE_KEY: 2}
    # every epoch starts afresh (a key seen in epoch 0 is not a duplicate in epoch 1)
    assert Counter(s["key"] for s in ds) == Counter(keys)


# ------------------------------------------------------------------------------------------ member size cap
def test_oversized_member_is_skipped_before_it_is_read(tmp_path):
    """A .tar.gz of 40 KB holding a 32 MB member: with a 1 MB cap the member is skipped (member_too_large)
    without ever being held in memory (peak well below its size), and the samples around it arrive."""
    big = 32 << 20
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, payload in [
            ("a.flac", b"A" * 5000),
            ("a.json", b"{}"),
            ("b.flac", None),
            ("b.json", b"{}"),
            ("c.flac", b"C" * 5000),
            ("c.json", b"{}"),
        ]:
            info = tarfile.TarInfo(name)
            if payload is None:
                info.size = big
                tf.addfile(info, io.BytesIO(bytes(big)))
            else:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    path = tmp_path / "big.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        got, events = _read(str(path), max_member_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while skipping a {big >> 20} MiB member"
    assert [s["__key__"] for s in got] == ["a", "b", "c"] and events == []
    assert got[0]["flac"] == b"A" * 5000 and got[2]["flac"] == b"C" * 5000
    assert "flac" not in got[1] and "flac" in got[1]["__too_large__"]

    from recipes.data.dataset import AudioShardDataset
    from recipes.data.skips import SampleSkipped

    ds = AudioShardDataset(str(path), max_member_bytes=1 << 20)
    with pytest.raises(SampleSkipped) as info:
        ds.decode(got[1])
    assert info.value.reason == SkipReason.MEMBER_TOO_LARGE and str(big) in info.value.detail
    # the cap is a setting: without it the member is read
    got, _ = _read(str(path), max_member_bytes=None)
    assert len(got[1]["flac"]) == big


# ------------------------------------------------------------------------------------------ no data at all
def test_loader_pass_without_a_sample_raises_naming_shards_and_counts(tmp_path, processor):
    """A shard list where every sample is bad (or every shard is missing) stops the pass with NoDataError naming
    the shards and the skip counts, instead of yielding an empty epoch (which Lightning repeats forever)."""
    from recipes.data.dataset import AudioShardDataset
    from recipes.data.loader import ShardLoader
    from recipes.data.skips import NoDataError

    bad = [
        {"__key__": f"bad{i}", "flac": os.urandom(2000), "json": b'{"prompt": "q", "response": "a"}'} for i in range(3)
    ]
    shard = _write(tmp_path / "allbad-000000.tar", bad)
    missing = str(tmp_path / "train-000001.tar")
    for workers in (0, 2):
        loader = ShardLoader(AudioShardDataset([shard, missing], processor, batch_size=2), num_workers=workers)
        with pytest.raises(NoDataError) as info:
            list(loader)
        msg = str(info.value)
        assert shard in msg and missing in msg, msg
        assert "undecodable_audio=3" in msg and "unreadable_shard=1" in msg, msg


# ------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "name, value",
    [
        ("batch_size", 0),
        ("batch_size", -4),
        ("batch_size", 2.5),
        ("eval_batch_size", 0),
        ("num_workers", -1),
        ("shuffle_buffer", -1),
        ("max_audio_seconds", 0),
        ("max_audio_seconds", float("nan")),
        ("max_member_bytes", 0),
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("world_size", 0),
        ("rank", 2),
        ("seed", 1.5),
        ("train_padding_side", "up"),
        ("eval_padding_side", None),
        ("split", "random"),
    ],
)
def test_datamodule_refuses_out_of_range_settings(name, value):
    from recipes.data.datamodule import AudioShardDataModule

    kwargs = {"train_shards": "x.tar", name: value}
    if name == "rank":
        kwargs["world_size"] = 2
    with pytest.raises(ValueError, match=rf"{name}.*{value!r}" if not isinstance(value, float) else name) as info:
        AudioShardDataModule(**kwargs)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("batch_size", 0),
        ("shuffle_buffer", -2),
        ("max_audio_seconds", -1.0),
        ("max_member_bytes", -5),
        ("epoch", -1),
        ("max_tokens", 0),
    ],
)
def test_dataset_refuses_out_of_range_settings(tmp_path, processor, name, value):
    from recipes.data.dataset import AudioShardDataset

    shard = _write(tmp_path / "one.tar", [_good(23, 0)])
    with pytest.raises(ValueError, match=name) as info:
        AudioShardDataset(shard, processor, **{name: value})
    assert repr(value) in str(info.value)
