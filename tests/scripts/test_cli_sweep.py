"""scripts/sweep.py: the full cutoff x temperature grid in the CSV, a valid heatmap PNG, evaluate_mcqa reused."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
from PIL import Image

from audio_adapter.testing import tiny_model_and_processor
from recipes.evaluation import mcqa, mcqa_items
from recipes.evaluation import sweep as sweep_lib
from recipes.synthetic.datasets import make_mcqa_dataset
from scripts import sweep
from tests.helpers import save_tiny_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    ckpt = save_tiny_checkpoint(root / "ckpt")
    data = make_mcqa_dataset(root / "data", 4, seed=1)
    return ckpt, data.manifest


def test_paper_grid_is_the_default():
    args = sweep.build_parser().parse_args(["--model", "m", "--data", "d"])
    assert args.cutoffs == [56, 48, 40, 32, 24, 16, 8]
    assert args.temperatures == pytest.approx(np.arange(0.5, 1.65, 0.1).tolist()) and len(args.temperatures) == 12


def test_cli_writes_full_grid_csv_and_png(setup, tmp_path):
    ckpt, manifest = setup
    out = tmp_path / "out"
    cutoffs, temps = [0, 4, 8], [0.8, 1.2]
    points = sweep.main(
        [
            "--model",
            str(ckpt),
            "--data",
            str(manifest),
            "--out",
            str(out),
            "--cutoffs",
            *map(str, cutoffs),
            "--temperatures",
            *map(str, temps),
            "--base-audio-seconds",
            "1",
            "--limit",
            "3",
            "--batch-size",
            "3",
            "--max-new-tokens",
            "2",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["cutoff", "temperature", "accuracy", "n", "correct", "invalid", "unreadable"]
    assert {(int(r["cutoff"]), float(r["temperature"])) for r in rows} == set(itertools.product(cutoffs, temps))
    assert len(rows) == len(cutoffs) * len(temps) == len(points)
    for r in rows:
        assert int(r["n"]) == 3 and 0.0 <= float(r["accuracy"]) <= 1.0
        assert float(r["accuracy"]) == pytest.approx(int(r["correct"]) / 3)
    png = out / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 150


def test_default_cutoffs_too_big_for_tiny_head_is_a_cli_error(setup, tmp_path):
    ckpt, manifest = setup
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--model", str(ckpt), "--data", str(manifest), "--out", str(tmp_path), "--no-progress"])
    assert exc.value.code == 2


def test_run_sweep_evaluates_each_point_with_its_extension(setup, monkeypatch):
    """An oracle right only at (cutoff 4, t 1.2) must show up in exactly that cell; the model's extension is
    restored afterwards; every point goes through mcqa.evaluate_mcqa."""
    _, manifest = setup
    model, processor = tiny_model_and_processor()
    model.set_context_extension(method="partial_pi", base_audio_seconds=7.0)
    items = mcqa_items.load_mcqa(manifest)
    calls = []
    real = mcqa.evaluate_mcqa

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_lib, "evaluate_mcqa", counting)

    def respond(model, processor, batch, audio, **kwargs):
        ext = model.context_extension
        assert ext.method == "partial_yarn" and ext.base_audio_seconds == 2.0
        good = (ext.cutoff, ext.temperature) == (4, 1.2)
        return [f"({it.answer + 1 if good else (it.answer + 1) % 4 + 1})" for it in batch]

    points = sweep_lib.run_sweep(
        model,
        processor,
        items,
        cutoffs=[8, 4, 0],
        temperatures=[0.6, 1.2, 1.5],
        base_audio_seconds=2.0,
        show_progress=False,
        respond=respond,
    )
    assert len(calls) == 9
    assert model.context_extension.method == "partial_pi" and model.context_extension.base_audio_seconds == 7.0
    cutoffs, temps, grid = sweep_lib.accuracy_grid(points)
    assert cutoffs == [8, 4, 0] and temps == [0.6, 1.2, 1.5]
    expected = np.zeros((3, 3))
    expected[1, 1] = 1.0
    np.testing.assert_array_equal(grid, expected)
    assert all(p.n == len(items) for p in points)


def test_interrupted_sweep_keeps_finished_points_and_resumes(setup, tmp_path, monkeypatch):
    """Each grid point journals its answers (eval_mcqa's code path) and sweep.csv is rewritten after every point:
    a crash in the third point leaves the first two in sweep.csv; a re-run asks only what is missing and writes
    the same CSV as an uninterrupted sweep."""
    ckpt, manifest = setup

    def right(model, processor, batch, audio, **kwargs):
        return [f"({it.answer + 1})" for it in batch]

    calls = []

    def crashing(model, processor, batch, audio, **kwargs):
        if len(calls) == 2:
            raise RuntimeError("device lost")
        calls.append([it.key for it in batch])
        return right(model, processor, batch, audio)

    def argv(out):
        return [
            "--model",
            str(ckpt),
            "--data",
            str(manifest),
            "--out",
            str(out),
            "--cutoffs",
            "0",
            "4",
            "--temperatures",
            "0.8",
            "1.2",
            "--base-audio-seconds",
            "1",
            "--batch-size",
            "4",
            "--no-progress",
            "--device",
            "cpu",
        ]

    monkeypatch.setattr(mcqa, "answer_batch", crashing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="device lost"):
        sweep.main(argv(out))
    with open(out / "sweep.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    asked = []

    def counting(model, processor, batch, audio, **kwargs):
        asked.append([it.key for it in batch])
        return right(model, processor, batch, audio)

    monkeypatch.setattr(mcqa, "answer_batch", counting)
    sweep.main(argv(out))
    assert len(asked) == 2  # the two points never answered, one batch of 4 each
    fresh = tmp_path / "fresh"
    sweep.main(argv(fresh))
    assert (out / "sweep.csv").read_text() == (fresh / "sweep.csv").read_text()
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(float(r["accuracy"]) == 1.0 and r["unreadable"] == "0" for r in rows)


def test_temperatures_equal_to_six_digits_get_their_own_folders(setup, tmp_path):
    """1.0000001 and 1.0000002 are two grid points: two journals, two CSV rows that read back exactly (both
    mapped to the folder ``c4_t1`` and the second refused as "a different run"); a value given twice is refused."""
    _, manifest = setup
    model, processor = tiny_model_and_processor()
    items = mcqa_items.load_mcqa(manifest)[:2]

    def respond(model, processor, batch, audio, **kwargs):
        good = model.context_extension.temperature == 1.0000002
        return [f"({it.answer + 1 if good else (it.answer + 1) % 4 + 1})" for it in batch]

    out = tmp_path / "out"
    kwargs = dict(cutoffs=[4], base_audio_seconds=2.0, show_progress=False, respond=respond, out_dir=out)
    points = sweep_lib.run_sweep(model, processor, items, temperatures=[1.0000001, 1.0000002], **kwargs)
    assert [(p.temperature, p.accuracy) for p in points] == [(1.0000001, 0.0), (1.0000002, 1.0)]
    assert sorted(d.name for d in (out / "points").iterdir()) == ["c4_t1.0000001", "c4_t1.0000002"]
    with open(out / "sweep.csv", newline="") as f:
        assert [float(r["temperature"]) for r in csv.DictReader(f)] == [1.0000001, 1.0000002]
    assert sweep_lib.temperature_label(1.2) == "1.2" and sweep_lib.temperature_label(1.0) == "1"  # the short names stay
    with pytest.raises(ValueError, match=r"--temperatures lists \[1\.2\] more than once"):
        sweep_lib.run_sweep(model, processor, items, temperatures=[1.2, 0.8, 1.2], **kwargs)
