"""The long-form benchmark: the recording geometry it relies on, its training crops, and every step at smoke
scale (`scripts.longform --quick`), including resuming from what an earlier run wrote."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

from recipes.longform.task import (
    LONGFORM_MODEL,
    MARKER,
    TOKENS_PER_ITEM,
    TrainPool,
    answers,
    encode_clips,
    make_recordings,
)


def test_recordings_fill_whole_windows_encoded_independently():
    from audio_adapter.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(**LONGFORM_MODEL)
    audio, items = make_recordings(0, 2, 32, stream=5)
    assert items.shape == (2, 32) and ((items == MARKER).sum(-1) == 1).all()
    assert audio[0].shape == (32 * 5120,)  # 0.32 s per item at 16 kHz
    frames = encode_clips(model, processor, audio)
    assert [f.shape[0] for f in frames] == [32 * TOKENS_PER_ITEM] * 2  # 4 tokens an item, two 5.12 s windows
    # the second window is encoded on its own: its frames equal encoding the second half as a recording
    second_half = encode_clips(model, processor, [audio[0][16 * 5120 :]])[0]
    torch.testing.assert_close(frames[0][64:], second_half)


def test_training_crops_keep_the_marker_inside_and_answers_follow_the_items():
    frames = torch.arange(5 * 64, dtype=torch.float32).reshape(5, 64, 1)
    items = torch.randint(0, 8, (5, 16), generator=torch.Generator().manual_seed(0))
    items[torch.arange(5), torch.tensor([1, 14, 7, 3, 10])] = MARKER
    pool = TrainPool(frames, items)
    gen = torch.Generator().manual_seed(1)
    for n in (4, 9, 16):
        crop_frames, crop_items = pool.batch(n, 64, gen)
        assert crop_frames.shape == (64, n * TOKENS_PER_ITEM, 1) and crop_items.shape == (64, n)
        marker_at = (crop_items == MARKER).long().argmax(-1)
        assert ((crop_items == MARKER).sum(-1) == 1).all()
        assert (marker_at >= 1).all() and (marker_at <= n - 2).all()
        # frames of the crop are the recording's frames of those items (4 consecutive tokens each)
        starts = crop_frames[:, 0, 0].long() % 64
        assert (starts % TOKENS_PER_ITEM == 0).all()
    crop = torch.tensor([[3, 1, MARKER, 5, 7]])
    assert answers(crop, "first").tolist() == [3]
    assert answers(crop, "after").tolist() == [5]
    assert answers(crop, "last").tolist() == [7]
    with pytest.raises(ValueError, match="question must be one of"):
        answers(crop, "middle")


@pytest.fixture(scope="module")
def quick_longform(tmp_path_factory):
    from recipes.longform.config import LongformConfig
    from recipes.longform.run import run_longform

    out = tmp_path_factory.mktemp("longform")
    cfg = LongformConfig.quick(out_dir=str(out))
    return out, cfg, run_longform(cfg)


def test_longform_quick_writes_every_output(quick_longform):
    out, cfg, summary = quick_longform
    rows = list(csv.DictReader(open(out / "longform.csv")))
    n_lengths, n_questions = len(cfg.eval_items), 3
    # vanilla: 5 methods; the VLAT twin and the VLAT variant: none + partial_pi
    assert len(rows) == (5 + 2 + 2) * n_lengths * n_questions
    assert {r["method"] for r in rows if r["kind"] == "vlat"} == {"none", "partial_pi"}
    assert {r["method"] for r in rows if r["kind"] == "vlat_mix"} == {"none", "partial_pi"}
    assert {r["method"] for r in rows if r["kind"] == "vanilla"} == {
        "none",
        "partial_pi",
        f"partial_yarn c{cfg.partial_yarn_cutoff} t1",
        "whole_pi",
        "whole_yarn",
    }
    for r in rows:
        assert int(r["correct"]) <= int(r["n"]) == cfg.eval_n
    sweep = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(sweep) == len(cfg.sweep_cutoffs) * len(cfg.sweep_temperatures)
    for name in ("longform.png", "sweep.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG"
    # the extrapolation guarantee: training never reached the positions of the longer evaluations
    for run in summary["runs"].values():
        reach = {int(k): v for k, v in run["eval_reach"].items()}
        assert all(reach[n] > run["max_position"] for n in cfg.eval_items if n > 16)


def test_longform_resumes_without_redoing_work(quick_longform):
    from recipes.longform.run import run_longform

    out, cfg, _ = quick_longform
    lines = (out / "results.jsonl").read_text().splitlines()
    models = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    summary = run_longform(cfg)
    assert (out / "results.jsonl").read_text().splitlines() == lines
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == models
    assert summary["timings"]["evaluate vanilla_s0"] < 5
    only = run_longform(cfg, only=["vlat_s0"])  # a share of the runs, as one of several processes would
    assert list(only["runs"]) == ["vlat_s0"]
    with pytest.raises(SystemExit, match="unknown runs"):
        run_longform(cfg, only=["vanilla_s9"])
    other = type(cfg)(**{**cfg.__dict__, "eval_n": cfg.eval_n + 1})
    with pytest.raises(SystemExit, match="other settings"):
        run_longform(other)
    assert json.loads((out / "config.json").read_text())["eval_n"] == cfg.eval_n


def test_vlat_raw_share_keeps_raw_positions_for_that_share():
    """vlat_mix: a sample drawn as 'raw' gets a virtual length equal to its own span, i.e. raw positions."""
    from audio_adapter.testing import tiny_model_and_processor
    from recipes.longform.task import TaskTokens, TrainSettings, train_lm

    model, processor = tiny_model_and_processor(
        **{**LONGFORM_MODEL, "hidden_size": 64, "mrope_section": (2, 3, 3), "intermediate_size": 64}
    )
    model.set_context_extension(method="none", base_audio_seconds=5.12)
    tokens = TaskTokens.build(model, processor.tokenizer)
    items = torch.randint(0, 8, (4, 16), generator=torch.Generator().manual_seed(0))
    items[:, 5] = MARKER
    pool = TrainPool(torch.randn(4, 64, 64), items)
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        seen.append(
            (kwargs["virtual_audio_tokens"].clone(), kwargs["input_ids"].eq(model.config.audio_token_id).sum(-1))
        )
        return original(*args, **kwargs)

    model.forward = spy
    train_lm(model, tokens, pool, TrainSettings(steps=3, batch_size=8, vlat_strategy="limited", vlat_raw_share=1.0))
    for virtual, n_audio in seen:
        assert torch.equal(virtual, n_audio.float())
    seen.clear()
    train_lm(model, tokens, pool, TrainSettings(steps=3, batch_size=8, vlat_strategy="limited", vlat_raw_share=0.0))
    for virtual, _ in seen:
        assert set(virtual.tolist()) <= {64.0, 320.0, 640.0}
