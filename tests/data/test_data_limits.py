"""Samples that must not stop a run, and skips that must not depend on the worker count: a sample whose texts
hold more than ``max_tokens`` tokens (a 100 KB prompt, a multi-megabyte JSON) is skipped as ``too_long``
before the collator sees it (the huge JSON without being parsed); a key repeated in another shard is skipped
and counted the same way with 1 data worker and with 2 (the default)."""

from __future__ import annotations

from collections import Counter

import pytest

from recipes.data.dataset import AudioShardDataset
from recipes.data.loader import ShardLoader
from recipes.data.skips import SampleSkipped, SkipReason
from tests.helpers import good_sample, long_prompt, write_shard


@pytest.fixture(scope="module")
def processor():
    from audio_adapter.testing import tiny_processor

    return tiny_processor(max_source_positions=150, num_mel_bins=80)


# ------------------------------------------------------------------------------------------ max_tokens
def test_long_text_samples_are_skipped_before_the_collator(tmp_path, processor, monkeypatch):
    """The issue's samples: a 100 KB prompt (tens of thousands of tokens: it crashed training and every resume)
    and a 3 MB JSON (the 50 MB one aborted the collator). With the default cap both are ``too_long``; the JSON
    above the byte cap is never parsed, and the samples around them arrive."""
    goods = [good_sample(31, i) for i in range(3)]
    huge = good_sample(31, 8, key="huge_json", prompt=long_prompt(3 << 20))
    samples = [goods[0], good_sample(31, 9, key="long_prompt", prompt=long_prompt(100_000)), goods[1], huge, goods[2]]
    url = write_shard(tmp_path / "long.tar", samples)
    import recipes.data.dataset

    parsed = []
    real_parse = recipes.data.dataset.parse_json_bytes
    monkeypatch.setattr(
        recipes.data.dataset, "parse_json_bytes", lambda data: parsed.append(len(data)) or real_parse(data)
    )
    ds = AudioShardDataset(url, processor)
    keys = [s["key"] for s in ds]
    assert keys == [g["__key__"] for g in goods]
    assert ds.skip_counter.as_dict() == {SkipReason.TOO_LONG: 2}
    from recipes.data.samples import DEFAULT_MAX_TOKENS, JSON_BYTES_PER_TOKEN

    assert len(huge["json"]) > JSON_BYTES_PER_TOKEN * DEFAULT_MAX_TOKENS
    assert max(parsed) < len(huge["json"])  # skipped on its size alone
    # the cap is a setting: None lets the 100 KB prompt through (the huge JSON too)
    keys = [s["key"] for s in AudioShardDataset(url, processor, max_tokens=None)]
    assert "long_prompt" in keys and "huge_json" in keys


def test_text_token_count_and_its_fast_path(processor):
    from recipes.data.samples import check_text_tokens

    tok = processor.tokenizer
    texts = ["Which notes are played?", long_prompt(600), "C4 E4 G4"]
    n = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    check_text_tokens(texts, tok, n)  # exactly at the cap: kept
    with pytest.raises(SampleSkipped, match=f"{n} text tokens > max_tokens={n - 1}") as info:
        check_text_tokens(texts, tok, n - 1)
    assert info.value.reason == SkipReason.TOO_LONG

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("tokenised a text that fits for sure")

    check_text_tokens(["é" * 100, "abc"], no_tokenizer, 3 * (200 + 3))  # a token is >= 1 byte (x3: NFC)


# ------------------------------------------------------------------------------------------ duplicates x workers
@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """Two shards: shard 0 repeats one of its keys 3 samples later, shard 1 repeats a key of shard 0 (with
    other contents: which copy is kept shows)."""
    root = tmp_path_factory.mktemp("dup_workers")
    a = [good_sample(23, i) for i in range(4)]
    b = [good_sample(23, i) for i in range(4, 7)]
    urls = [
        write_shard(root / "d-0.tar", a + [good_sample(23, 9, key=a[1]["__key__"])]),
        write_shard(root / "d-1.tar", b[:1] + [good_sample(23, 8, key=a[0]["__key__"])] + b[1:]),
    ]
    return {"urls": urls, "keys": [s["__key__"] for s in a + b]}


def _consumers(urls, processor, epoch: int, world: int, workers: int) -> tuple[list[tuple[str, str]], Counter]:
    """Every (rank, worker) consumer of one epoch, in-process: the (key, response) pairs and summed skips."""
    out, skips = [], Counter()
    for rank in range(world):
        for worker in range(workers):
            ds = AudioShardDataset(
                urls, processor, shuffle_shards=True, seed=5, rank=rank, world_size=world, worker=worker,
                num_workers=workers, epoch=epoch,
            )  # fmt: skip
            out += [(s["key"], s["messages"][-1]["content"][0]["text"]) for s in ds]
            skips.update(ds.skip_counter.counts)
    return sorted(out), skips


def test_duplicate_keys_across_shards_are_counted_for_any_split(duplicated, processor):
    """Whatever reads which shard (1 consumer, 2 workers, 2 ranks x 2 workers), each epoch yields every key
    once, keeps the copy that comes first in that epoch's shard order, and counts both repeats."""
    for epoch in (0, 1, 2):
        one, skips = _consumers(duplicated["urls"], processor, epoch, 1, 1)
        assert sorted(k for k, _ in one) == sorted(duplicated["keys"])
        assert skips == {SkipReason.DUPLICATE_KEY: 2}
        for world, workers in ((1, 2), (2, 1), (2, 2)):
            assert _consumers(duplicated["urls"], processor, epoch, world, workers) == (one, skips), (world, workers)


def test_duplicate_keys_with_two_data_workers(duplicated, processor):
    """The issue's case: a DataLoader with 2 worker processes (one shard each) yielded the repeated key twice
    and did not count it; now as with 1 worker."""
    results = {}
    for workers in (1, 2):
        ds = AudioShardDataset(duplicated["urls"], processor, batch_size=2)
        loader = ShardLoader(ds, num_workers=workers)
        keys = [k for batch in loader for k in batch["keys"]]
        results[workers] = (Counter(keys), loader.skip_counter.as_dict())
    assert results[2] == results[1] == (Counter(duplicated["keys"]), {SkipReason.DUPLICATE_KEY: 2})
