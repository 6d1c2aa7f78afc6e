"""Reading tar shards: a local uncompressed file (random access), a gzip-compressed file and a pipe (stream mode)
give the same samples, and the same event for a member cut short."""

from __future__ import annotations

import gzip
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from recipes.data.shard_reader import _Bad, iter_tar_samples
from recipes.data.skips import SkipReason


def _write_shard(path, n: int) -> None:
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(path)) as writer:
        for i in range(n):
            writer.write(
                {"__key__": f"s{i:03d}", "flac": rng.bytes(5000 + 100 * i), "json": json.dumps({"i": i}).encode()}
            )


def _read(url: str) -> tuple[list[tuple], list[str]]:
    samples, events = [], []
    for item in iter_tar_samples(url):
        if isinstance(item, _Bad):
            events.append(item.reason)
        else:
            samples.append((item["__key__"], item["flac"], item["json"]))
    return samples, events


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tar")
    plain = root / "plain.tar"
    _write_shard(plain, 6)
    gz = root / "plain.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    # cut in the middle of the last sample's audio member
    with tarfile.open(plain) as tf:
        last = [m for m in tf.getmembers() if m.name.startswith("s005")][0]
    cut = root / "cut.tar"
    cut.write_bytes(plain.read_bytes()[: last.offset_data + last.size // 2])
    return {"plain": str(plain), "gz": str(gz), "cut": str(cut)}


def test_random_access_gzip_and_pipe_read_the_same(shards):
    expected, events = _read(shards["plain"])
    assert [k for k, _, _ in expected] == [f"s{i:03d}" for i in range(6)] and events == []
    for url in (shards["gz"], f"pipe:cat {shards['plain']}"):
        assert _read(url) == (expected, [])


def test_member_cut_short_is_one_event_either_way(shards):
    full, _ = _read(shards["plain"])
    for url in (shards["cut"], f"pipe:cat {shards['cut']}"):
        samples, events = _read(url)
        assert samples == full[:5]
        assert events == [SkipReason.TRUNCATED_MEMBER]
