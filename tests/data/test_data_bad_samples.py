"""A shard set salted with every kind of bad sample (and a corrupt shard file) yields all good samples, counts
each skip by reason, and never raises -- in-process and with DataLoader workers."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from audio_adapter.testing import TINY_3S
from recipes.data.dataset import AudioShardDataset
from recipes.data.loader import ShardLoader
from recipes.data.skips import SkipCounter, SkipReason
from recipes.synthetic.datasets import notes_sample

SR = 16000
MAX_SECONDS = 20.0


@pytest.fixture(scope="module")
def processor():
    from audio_adapter.testing import tiny_processor

    return tiny_processor(**TINY_3S)


def _audio_bytes(audio: np.ndarray, sr: int, fmt: str = "FLAC", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _good(i: int) -> dict:
    s = notes_sample(11, i)
    return {
        "__key__": s["key"],
        "flac": _audio_bytes(s["audio"], SR),
        "json": json.dumps({"prompt": s["prompt"], "response": s["response"]}).encode(),
    }


def _json(prompt="Which notes?", response="C4") -> bytes:
    return json.dumps({"prompt": prompt, "response": response}).encode()


EXPECTED = {
    SkipReason.UNDECODABLE_AUDIO: 1,
    SkipReason.EMPTY_AUDIO: 1,
    SkipReason.NAN_AUDIO: 1,
    SkipReason.BAD_JSON: 2,  # not JSON; JSON of the wrong shape
    SkipReason.MISSING_FIELDS: 1,
    SkipReason.TOO_LONG: 1,
    SkipReason.MISSING_AUDIO: 1,
    SkipReason.MISSING_JSON: 1,
    SkipReason.TRUNCATED_MEMBER: 1,
    SkipReason.CORRUPT_SHARD: 2,  # a garbage file; a damaged header block in another shard (passed over)
    SkipReason.UNREADABLE_SHARD: 1,  # listed but missing
}


@pytest.fixture(scope="module")
def salted(tmp_path_factory):
    root = tmp_path_factory.mktemp("salted")
    tone = notes_sample(11, 99)["audio"]
    nan = tone.copy()
    nan[len(nan) // 2] = np.nan
    bad = [
        {"__key__": "bad_undecodable", "flac": os.urandom(3000), "json": _json()},
        {"__key__": "bad_empty", "wav": _audio_bytes(np.zeros(0, np.float32), SR, "WAV"), "json": _json()},
        {"__key__": "bad_nan", "wav": _audio_bytes(nan, SR, "WAV", "FLOAT"), "json": _json()},
        {"__key__": "bad_json", "flac": _audio_bytes(tone, SR), "json": b'{"prompt": "x", "response": '},
        {"__key__": "bad_json_shape", "flac": _audio_bytes(tone, SR), "json": b'["prompt", "response"]'},
        {"__key__": "bad_fields", "flac": _audio_bytes(tone, SR), "json": b'{"prompt": "only a prompt"}'},
        {"__key__": "bad_too_long", "flac": _audio_bytes(np.zeros(8000 * 25, np.float32), 8000), "json": _json()},
        {"__key__": "bad_no_audio", "json": _json()},
        {"__key__": "bad_no_json", "flac": _audio_bytes(tone, SR)},
    ]
    goods = [_good(i) for i in range(12)]
    # shard 0: 3 good + 5 bad interleaved; shard 1: 3 good + 4 bad; shard 2: 3 good then a truncated sample
    layout = [goods[0:3], goods[3:6], goods[6:9], goods[9:12]]
    layout[0] = [layout[0][0], bad[0], bad[1], layout[0][1], bad[2], bad[3], layout[0][2], bad[4]]
    layout[1] = [bad[5], layout[1][0], bad[6], layout[1][1], bad[7], bad[8], layout[1][2]]
    layout[2] = layout[2] + [{"__key__": "bad_truncated", "flac": _audio_bytes(tone, SR), "json": _json()}]
    paths = []
    for i, samples in enumerate(layout):
        path = root / f"good-{i}.tar"
        with wds.TarWriter(str(path)) as w:
            for s in samples:
                w.write(s)
        paths.append(path)
    # truncate shard 2 in the middle of its last sample's audio
    with tarfile.open(paths[2]) as tf:
        last = [m for m in tf.getmembers() if m.name.startswith("bad_truncated")][0]
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: last.offset_data + last.size // 2])
    # shard 3: garbage over the (pax) header block of its third sample: the reader passes over it to the
    # member's own ustar header, so all three samples survive (the garbage is counted as corrupt_shard)
    with tarfile.open(paths[3]) as tf:
        third = [m for m in tf.getmembers() if m.name.startswith(goods[11]["__key__"])][0]
    data = bytearray(paths[3].read_bytes())
    data[third.offset : third.offset + 512] = os.urandom(512)
    paths[3].write_bytes(bytes(data))
    garbage = root / "good-9-garbage.tar"
    garbage.write_bytes(os.urandom(20000))
    urls = [str(p) for p in paths] + [str(garbage), str(root / "good-missing.tar")]
    expected_keys = [g["__key__"] for g in goods]
    return {"urls": urls, "keys": expected_keys}


def test_every_bad_kind_is_skipped_and_counted(salted, processor):
    ds = AudioShardDataset(salted["urls"], processor, max_audio_seconds=MAX_SECONDS)
    keys = [s["key"] for s in ds]
    assert Counter(keys) == Counter(salted["keys"])
    assert ds.skip_counter.as_dict() == dict(sorted(EXPECTED.items()))
    assert ds.skip_counter[SkipReason.TOO_LONG] == 1 and ds.skip_counter["never_seen"] == 0


def test_cap_is_configurable(salted, processor):
    ds = AudioShardDataset(salted["urls"], processor, max_audio_seconds=None)
    keys = [s["key"] for s in ds]
    assert "bad_too_long" in keys and ds.skip_counter[SkipReason.TOO_LONG] == 0


def test_batches_with_workers_aggregate_counts_in_main_process(salted, processor):
    """Two workers split the 6 shard urls; the loader sums the counts the workers ship with their batches."""
    ds = AudioShardDataset(salted["urls"], processor, batch_size=4, shuffle_buffer=3, max_audio_seconds=MAX_SECONDS)
    loader = ShardLoader(ds, num_workers=2)
    keys = []
    for batch in loader:
        keys += batch["keys"]
        assert batch["input_features"].shape[0] == int(batch["audio_chunk_counts"].sum())
    assert Counter(keys) == Counter(salted["keys"])
    assert loader.skip_counter.as_dict() == dict(sorted(EXPECTED.items()))
    # a second epoch adds the same again
    assert sum(len(b["keys"]) for b in loader) == len(salted["keys"])
    assert loader.skip_counter.total == 2 * sum(EXPECTED.values())


def test_datamodule_exposes_counts_across_ranks_and_workers(salted, processor):
    from recipes.data.datamodule import AudioShardDataModule

    total = SkipCounter()
    keys = []
    for rank in range(2):
        dm = AudioShardDataModule(
            train_shards=salted["urls"],
            processor=processor,
            batch_size=3,
            num_workers=2,
            max_audio_seconds=MAX_SECONDS,
            rank=rank,
            world_size=2,
        )
        dm.setup("fit")
        for batch in dm.train_dataloader():
            keys += batch["keys"]
        total.update(dm.skip_counts)
    assert Counter(keys) == Counter(salted["keys"])
    assert total.as_dict() == dict(sorted(EXPECTED.items()))


def test_message_validation_reasons():
    from recipes.data.samples import normalize_messages
    from recipes.data.skips import SampleSkipped

    cases = {
        SkipReason.BAD_JSON: [
            "text",
            {"messages": "hi"},
            {"messages": [{"role": "robot", "content": "x"}]},
            {"messages": [{"role": "user", "content": 5}]},
            {"prompt": 1, "response": "x"},
            {
                "messages": [
                    {"role": "user", "content": [{"type": "audio"}, {"type": "audio"}]},
                    {"role": "assistant", "content": "x"},
                ]
            },
        ],
        SkipReason.MISSING_FIELDS: [
            {},
            {"response": "x"},
            {"messages": []},
            {"messages": [{"role": "user", "content": "q"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
        ],
        SkipReason.MISSING_IMAGE: [
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
                    {"role": "assistant", "content": "a"},
                ]
            },
        ],
    }
    for reason, records in cases.items():
        for record in records:
            with pytest.raises(SampleSkipped) as info:
                normalize_messages(record)
            assert info.value.reason == reason, record
    # string content gets the audio item inserted into the first user turn; the image goes after it
    msgs = normalize_messages(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, has_image=True
    )
    assert msgs[0]["content"] == [{"type": "audio"}, {"type": "image"}, {"type": "text", "text": "q"}]


@pytest.mark.parametrize("max_member_bytes", [None, 4000])
def test_header_scan_finds_the_keys_the_reader_yields(salted, max_member_bytes):
    """`shard_keys` (tar headers only: how consumers reading different shards learn of repeated keys) lists what
    a full read yields, shard by shard: cut short, damaged, garbage, missing, members above the cap."""
    from recipes.data.shard_reader import _Bad, iter_tar_samples, shard_keys

    for url in salted["urls"]:
        read = [s["__key__"] for s in iter_tar_samples(url, max_member_bytes) if not isinstance(s, _Bad)]
        assert shard_keys(url, max_member_bytes) == read, url
    for url in (f"pipe:cat {salted['urls'][2]}", f"pipe:cat {salted['urls'][3]}"):  # read forwards: a stream
        read = [s["__key__"] for s in iter_tar_samples(url, max_member_bytes) if not isinstance(s, _Bad)]
        assert shard_keys(url, max_member_bytes) == read and read, url
