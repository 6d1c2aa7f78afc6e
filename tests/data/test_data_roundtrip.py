"""Manifest -> shards (scripts/make_shards.py) -> streaming reader: every sample exactly once across
simulated ranks x DataLoader workers, labels only on the response, and the synthetic generators."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_adapter.testing import TINY_3S
from recipes.data.collate import IGNORE_INDEX
from recipes.data.dataset import AudioShardDataset
from recipes.data.loader import ShardLoader
from recipes.data.skips import SkipReason
from recipes.synthetic.datasets import NOTE_NAMES, NotesConfig, make_mcqa_dataset, make_notes_dataset, notes_sample
from scripts.make_shards import main as make_shards_main

N_SAMPLES = 22


@pytest.fixture(scope="module")
def processor():
    from audio_adapter.testing import tiny_processor

    return tiny_processor(**TINY_3S)  # 3 s windows: cheap log-mel


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    """Synthetic manifest sharded by the CLI into 8 shards of <= 3 samples."""
    root = tmp_path_factory.mktemp("notes")
    ds = make_notes_dataset(root, N_SAMPLES, seed=3, write_shards=False)
    pattern = str(root / "shards" / "train-%04d.tar")
    assert make_shards_main([str(ds.manifest), pattern, "--maxcount", "3", "--no-progress"]) == 0
    entries = [json.loads(line) for line in ds.manifest.read_text().splitlines()]
    return {
        "root": root,
        "glob": str(root / "shards" / "*.tar"),
        "responses": {e["key"]: e["response"] for e in entries},
    }


def _check_labels(processor, batch, responses):
    tok = processor.tokenizer
    for row, key in enumerate(batch["keys"]):
        labels = batch["labels"][row]
        kept = labels[labels != IGNORE_INDEX]
        assert tok.decode(kept.tolist(), skip_special_tokens=False) == responses[key] + "<|im_end|>"
        # the unmasked tokens are the input tokens at those positions (teacher forcing, unshifted)
        mask = labels != IGNORE_INDEX
        assert torch.equal(batch["input_ids"][row][mask], kept)


def test_make_shards_layout(notes):
    shards = sorted(Path(notes["root"], "shards").glob("*.tar"))
    assert len(shards) == 8  # ceil(22 / 3)
    with tarfile.open(shards[0]) as tf:
        names = tf.getnames()
    assert names[:2] == [f"{sorted(notes['responses'])[0]}.flac", f"{sorted(notes['responses'])[0]}.json"]


def test_simulated_ranks_and_workers_see_each_sample_once(notes, processor):
    per_consumer = {}
    for rank in range(2):
        for worker in range(2):
            ds = AudioShardDataset(
                notes["glob"],
                processor,
                batch_size=4,
                shuffle_buffer=5,
                shuffle_shards=True,
                seed=7,
                rank=rank,
                world_size=2,
                worker=worker,
                num_workers=2,
            )
            keys = []
            for batch in ds:
                if "keys" not in batch:
                    continue
                keys += batch["keys"]
                _check_labels(processor, batch, notes["responses"])
            per_consumer[(rank, worker)] = keys
            assert not ds.skip_counter
    assert all(per_consumer.values()), {k: len(v) for k, v in per_consumer.items()}
    everything = Counter(k for keys in per_consumer.values() for k in keys)
    assert everything == Counter(notes["responses"].keys())


def test_real_dataloader_workers_two_ranks(notes, processor):
    """2 simulated ranks x 2 real DataLoader worker processes."""
    seen = Counter()
    for rank in range(2):
        ds = AudioShardDataset(
            notes["glob"],
            processor,
            batch_size=3,
            shuffle_buffer=4,
            shuffle_shards=True,
            seed=1,
            rank=rank,
            world_size=2,
        )
        loader = ShardLoader(ds, num_workers=2)
        rank_keys = []
        for batch in loader:
            assert "skip_counts" not in batch
            _check_labels(processor, batch, notes["responses"])
            rank_keys += batch["keys"]
        assert rank_keys
        seen.update(rank_keys)
        assert loader.skip_counter.total == 0
    assert seen == Counter(notes["responses"].keys())


def test_sample_split_when_fewer_shards_than_consumers(tmp_path, processor):
    ds_files = make_notes_dataset(tmp_path, 7, seed=5, write_shards=True, maxcount=100)
    assert len(ds_files.shards) == 1
    seen = Counter()
    for rank in range(2):
        for worker in range(2):
            ds = AudioShardDataset(ds_files.shards, None, rank=rank, world_size=2, worker=worker, num_workers=2)
            seen.update(s["key"] for s in ds)
    assert seen == Counter(ds_files.keys)
    with pytest.raises(ValueError):
        AudioShardDataset(ds_files.shards, None, split="nodes")


def test_epochs_reshuffle_but_keep_the_set(notes, processor):
    ds = AudioShardDataset(notes["glob"], None, shuffle_buffer=8, shuffle_shards=True, seed=0)
    first = [s["key"] for s in ds]
    second = [s["key"] for s in ds]  # direct iteration advances the epoch
    assert sorted(first) == sorted(second) == sorted(notes["responses"])
    assert first != second
    again = AudioShardDataset(notes["glob"], None, shuffle_buffer=8, shuffle_shards=True, seed=0)
    assert [s["key"] for s in again] == first  # deterministic for (seed, epoch)


def test_datamodule_batches(notes, processor):
    from recipes.data.datamodule import AudioShardDataModule

    dm = AudioShardDataModule(
        train_shards=notes["glob"],
        val_shards=notes["glob"],
        test_shards=notes["glob"],
        processor=processor,
        batch_size=5,
        num_workers=0,
        shuffle_buffer=4,
        rank=0,
        world_size=1,
    )
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert sum(len(b["keys"]) for b in train) == N_SAMPLES
    b = train[0]
    assert b["attention_mask"][:, 0].all() and "labels" in b  # right padding: real tokens first
    _check_labels(processor, b, notes["responses"])
    test = list(dm.test_dataloader())
    t = test[0]
    assert t["attention_mask"][:, -1].all() and "labels" not in t  # left padding for generation
    assert [notes["responses"][k] for k in t["keys"]] == t["references"]
    prompt = processor.tokenizer.decode(t["input_ids"][0][t["attention_mask"][0].bool()].tolist())
    assert prompt.endswith("<|im_start|>assistant\n")
    assert dm.skip_counts == {}


def test_make_shards_skips_bad_lines_and_keeps_good_neighbours(tmp_path):
    from PIL import Image

    sr = 16000
    good = (0.1 * np.sin(np.arange(sr) * 2 * np.pi * 440 / sr)).astype(np.float32)
    sf.write(tmp_path / "good.wav", good, sr, subtype="PCM_16")
    sf.write(tmp_path / "good.flac", good, 22050)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), sr)
    nan = good.copy()
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, sr, subtype="FLOAT")
    (tmp_path / "garbage.flac").write_bytes(b"definitely not flac" * 50)
    sf.write(tmp_path / "long.flac", np.zeros(sr * 12, np.float32), sr)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "img.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    lines = [
        {"key": "ok_wav", "audio": "good.wav", "prompt": "p", "response": "r1"},
        {"key": "no_file", "audio": "missing.wav", "prompt": "p", "response": "r"},
        {
            "key": "ok_flac",
            "audio": str(tmp_path / "good.flac"),
            "messages": [
                {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "q"}]},
                {"role": "assistant", "content": "r2"},
            ],
        },
        {"key": "garbage", "audio": "garbage.flac", "prompt": "p", "response": "r"},
        "NOT JSON",
        {"key": "empty", "audio": "empty.wav", "prompt": "p", "response": "r"},
        {"key": "nan", "audio": "nan.wav", "prompt": "p", "response": "r"},
        {"key": "no_response", "audio": "good.wav", "prompt": "p"},
        {"key": "bad.key", "audio": "good.wav", "prompt": "p", "response": "r"},
        {"key": "ok_wav", "audio": "good.wav", "prompt": "p", "response": "dup"},
        {"key": "too_long", "audio": "long.flac", "prompt": "p", "response": "r"},
        {"key": "bad_img", "audio": "good.wav", "image": "bad.png", "prompt": "p", "response": "r"},
        {"key": "ok_img", "audio": "good.wav", "image": "img.png", "prompt": "p", "response": "r3", "extra": 5},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out" / "s-%03d.tar"
    rc = make_shards_main([str(manifest), str(out), "--maxcount", "2", "--max-audio-seconds", "10", "--no-progress"])
    assert rc == 0
    strict_rc = make_shards_main([str(manifest), str(tmp_path / "o2" / "s-%03d.tar"), "--strict", "--no-progress"])
    assert strict_rc == 1

    from recipes.data.shard_writer import write_shards

    summary = write_shards(
        manifest, str(tmp_path / "o3" / "s-%03d.tar"), maxcount=2, max_audio_seconds=10, progress=False
    )
    assert summary.written == 3
    assert dict(summary.skipped) == {
        SkipReason.MISSING_FILE: 1,
        SkipReason.UNDECODABLE_AUDIO: 1,
        SkipReason.BAD_MANIFEST_LINE: 1,
        SkipReason.EMPTY_AUDIO: 1,
        SkipReason.NAN_AUDIO: 1,
        SkipReason.MISSING_FIELDS: 1,
        SkipReason.BAD_KEY: 1,
        SkipReason.DUPLICATE_KEY: 1,
        SkipReason.TOO_LONG: 1,
        SkipReason.BAD_IMAGE: 1,
    }
    assert len(summary.shards) == 2 and all(Path(p).is_file() for p in summary.shards)
    members = {}
    for shard in summary.shards:
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                members[m.name] = tf.extractfile(m).read()
    assert sorted(members) == sorted(
        ["ok_wav.wav", "ok_wav.json", "ok_flac.flac", "ok_flac.json", "ok_img.wav", "ok_img.png", "ok_img.json"]
    )
    assert members["ok_wav.wav"] == (tmp_path / "good.wav").read_bytes()  # original bytes
    assert members["ok_img.png"] == (tmp_path / "img.png").read_bytes()
    assert json.loads(members["ok_img.json"]) == {"prompt": "p", "response": "r3", "extra": 5}
    ds = AudioShardDataset(summary.shards, None)
    got = {s["key"]: s for s in ds}
    assert sorted(got) == ["ok_flac", "ok_img", "ok_wav"] and not ds.skip_counter
    assert got["ok_img"]["image"].size == (40, 30)
    assert got["ok_flac"]["sampling_rate"] == 22050  # no processor: the file's own rate
    assert got["ok_img"]["meta"] == {"extra": 5}


def test_synthetic_notes_deterministic_and_in_spec():
    a, b = notes_sample(0, 3), notes_sample(0, 3)
    assert np.array_equal(a["audio"], b["audio"]) and a["response"] == b["response"]
    assert not np.array_equal(notes_sample(1, 3)["audio"][:1000], a["audio"][:1000])
    lengths = set()
    for i in range(40):
        s = notes_sample(0, i)
        assert 3 <= len(s["notes"]) <= 6 and set(s["notes"]) <= set(NOTE_NAMES)
        assert s["response"] == " ".join(s["notes"])
        seconds = len(s["audio"]) / s["sampling_rate"]
        assert 0.25 * len(s["notes"]) < seconds < 0.35 * len(s["notes"]) + 0.1 * (len(s["notes"]) + 1) + 0.01
        assert np.abs(s["audio"]).max() <= 1.0
        lengths.add(len(s["audio"]))
    assert len(lengths) > 30  # variable lengths
    # the dominant frequency of a single-note clip is the note's pitch
    one = notes_sample(0, 0, NotesConfig(min_notes=1, max_notes=1, noise=0.0))
    spec = np.abs(np.fft.rfft(one["audio"]))
    peak = np.argmax(spec) * one["sampling_rate"] / len(one["audio"])
    from recipes.synthetic.datasets import NOTE_FREQS

    assert abs(peak - NOTE_FREQS[one["notes"][0]]) < 5.0


def test_synthetic_long_clips_and_mcqa(tmp_path):
    s = notes_sample(0, 0, NotesConfig(long_seconds=40.0))
    assert len(s["audio"]) / 16000 >= 40.0 and 3 <= len(s["notes"]) <= 6
    ds = make_mcqa_dataset(tmp_path, 30, seed=2)
    rows = [json.loads(line) for line in ds.manifest.read_text().splitlines()]
    assert len(rows) == 30 and len({r["kind"] for r in rows}) >= 3
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and 0 <= r["answer"] < 4
        assert (tmp_path / r["audio"]).is_file()
        assert r["response"] == "ABCD"[r["answer"]]
    from recipes.synthetic.datasets import mcqa_sample

    for i in range(30):
        m = mcqa_sample(2, i)
        right = m["choices"][m["answer"]]
        expected = {
            "count": str(len(m["notes"])),
            "first": m["notes"][0],
            "last": m["notes"][-1],
            "highest": max(m["notes"], key=NOTE_NAMES.index),
            "lowest": min(m["notes"], key=NOTE_NAMES.index),
        }[m["kind"]]
        assert right == expected


def test_datamodule_under_trainer_fit_reshuffles_per_epoch(notes, processor):
    import lightning.pytorch as pl

    from recipes.data.datamodule import AudioShardDataModule

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)
            self.processor = processor  # the data module picks it up at setup
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, list(batch["keys"])))
            return self.lin(batch["input_features"].mean().view(1, 1)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = AudioShardDataModule(train_shards=notes["glob"], batch_size=6, num_workers=2, shuffle_buffer=6)
    probe = Probe()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(probe, datamodule=dm)
    epochs = [[k for e, keys in probe.seen if e == epoch for k in keys] for epoch in range(2)]
    for keys in epochs:
        assert Counter(keys) == Counter(notes["responses"].keys())
    assert epochs[0] != epochs[1]
    assert dm.skip_counts == {}
