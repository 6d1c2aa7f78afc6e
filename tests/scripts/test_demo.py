"""The main job, the TINY demo pipeline (`scripts.demo`), end to end at smoke scale (every step runs; it learns little
in seconds), its outputs, and generate.py reproducing the demo's own evaluation from the exported checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from recipes.demo.standin_encoder import CTC_BLANK, ctc_greedy_decode, pretrain_standin_encoder
from recipes.evaluation.transcripts import edit_distance, score_transcripts


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from scripts.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo")
    result = run_demo(DemoConfig.quick(out_dir=str(out)))
    return out, result


def test_demo_writes_every_output(quick_demo):
    out, result = quick_demo
    for name in ("loss.png", "predictions.jsonl", "result.json", "stage1.yaml", "stage2.yaml"):
        assert (out / name).is_file(), name
    assert (out / "final" / "config.json").is_file()
    with Image.open(out / "loss.png") as png:
        assert png.format == "PNG" and png.size[0] > 500
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == result["config"]["heldout_clips"]
    recomputed = score_transcripts([r["prediction"] for r in rows], [r["reference"] for r in rows])
    assert recomputed.exact_match == result["exact_match"]
    assert recomputed.token_error_rate == pytest.approx(result["token_error_rate"])
    # both stages trained from the stand-in base and wrote what they trained
    assert (out / "stage1" / "output" / "projector.safetensors").is_file()
    assert (out / "stage2" / "output" / "adapter").is_dir()


def test_demo_speech_run_writes_its_outputs(quick_demo):
    """The spoken-digits run: its own shards of speech, two stages, and scores against the silence baseline."""
    out, result = quick_demo
    speech = result["speech"]
    assert speech["task"] == "digits" and result["task"] == "notes"
    assert json.loads((out / "result.json").read_text())["speech"]["exact_match"] == speech["exact_match"]
    rows = [json.loads(line) for line in (out / "speech" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == speech["config"]["heldout_clips"]
    assert all(set(r["reference"].split()) <= set("0123456789") for r in rows)
    recomputed = score_transcripts([r["silence_baseline"] for r in rows], [r["reference"] for r in rows])
    assert recomputed.token_error_rate == pytest.approx(speech["baseline_token_error_rate"])
    assert list((out / "speech" / "data" / "shards").glob("train-*.tar"))
    assert (out / "speech" / "stage2" / "output" / "adapter").is_dir()


def test_generate_cli_matches_demo_evaluation(quick_demo, capsys):
    from scripts import generate

    out, _ = quick_demo
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for row in rows[:2]:
        text = generate.main(
            [
                "--model",
                str(out / "final"),
                "--audio",
                row["audio"],
                "--prompt",
                row["prompt"],
                "--max-new-tokens",
                "32",
            ]
        )
        assert text.strip() == row["prediction"]


def test_edit_distance_closed_form():
    assert edit_distance("C4 E4 G4".split(), "C4 E4 G4".split()) == 0
    assert edit_distance("C4 G4".split(), "C4 E4 G4".split()) == 1  # deletion
    assert edit_distance("C4 D4 E4 G4".split(), "C4 E4 G4".split()) == 1  # insertion
    assert edit_distance("D4 E4 A4".split(), "C4 E4 G4".split()) == 2  # two substitutions
    assert edit_distance([], "C4 E4".split()) == 2


def test_score_transcripts():
    scores = score_transcripts(["C4 E4", "G4  A4 ", "B4"], ["C4 E4", "G4 A4", "C5 B4"])
    assert scores.exact_match == pytest.approx(2 / 3)
    assert scores.token_error_rate == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score_transcripts(["a", "b"], ["a"])


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    best = [[CTC_BLANK, 1, 1, CTC_BLANK, 1, 2, 2, 3, 3]]
    log_probs = torch.nn.functional.one_hot(torch.tensor(best), 4).float().log()
    assert ctc_greedy_decode(log_probs, torch.tensor([9])) == [[1, 1, 2, 3]]
    assert ctc_greedy_decode(log_probs, torch.tensor([5])) == [[1, 1]]


def test_standin_encoder_learns_then_is_frozen():
    from audio_adapter.processing.audio_features import extract_features
    from audio_adapter.testing import tiny_model_and_processor
    from recipes.synthetic.datasets import NOTE_NAMES, notes_sample

    model, processor = tiny_model_and_processor(max_source_positions=200, num_mel_bins=80, audio_pool_stride=4)
    clips = [notes_sample(0, i) for i in range(8)]
    feats = extract_features(processor.prepare_audio([c["audio"] for c in clips], 16000), processor.mel)
    targets = [[NOTE_NAMES.index(n) + 1 for n in c["notes"]] for c in clips]
    fit = pretrain_standin_encoder(
        model.audio_tower,
        feats["input_features"],
        feats["input_features_mask"],
        targets,
        num_classes=len(NOTE_NAMES),
        pool_stride=4,
        max_steps=40,
        max_seconds=600,
        batch_size=8,
    )
    assert fit["steps"] == 40
    assert sum(fit["losses"][-5:]) / 5 < 0.5 * sum(fit["losses"][:5]) / 5
    assert not any(p.requires_grad for p in model.audio_tower.parameters())
    assert not model.audio_tower.training


def test_main_job_bar_needs_notes_and_heard_speech():
    from scripts.demo import passed

    assert passed({"exact_match": 0.93, "speech": {"token_error_rate": 0.16, "baseline_token_error_rate": 0.98}})
    assert not passed({"exact_match": 0.89, "speech": {"token_error_rate": 0.16, "baseline_token_error_rate": 0.98}})
    # speech no better than guessing: fails even with perfect notes
    assert not passed({"exact_match": 1.0, "speech": {"token_error_rate": 0.5, "baseline_token_error_rate": 0.98}})
    assert passed({"exact_match": 0.9})  # --no-speech


def test_the_main_job_is_the_notes_run_and_speech_is_asked_for():
    """Trimmed to fit 12 minutes on a slow CPU: the notes run (the >= 90 % gate) alone unless ``--speech``."""
    from scripts.demo import SPEECH_RUN, build_parser, tiny_config

    default = tiny_config(build_parser().parse_args([]))
    assert default.speech is None and default.task == "notes" and default.out_dir == "runs/demo"
    assert tiny_config(build_parser().parse_args(["--speech"])).speech == SPEECH_RUN
    assert tiny_config(build_parser().parse_args(["--no-speech"])).speech is None
    with pytest.raises(SystemExit):
        tiny_config(build_parser().parse_args(["--speech", "--no-speech"]))
