"""scripts/eval_mcqa.py: answer parsing, oracle accuracy through the real batching path, CLI outputs."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
from recipes.synthetic import make_mcqa_dataset
from scripts import eval_mcqa
from scripts._common import read_audio
from tests.cli_helpers import save_tiny_checkpoint

N = 7


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcqa")
    ckpt = save_tiny_checkpoint(root / "ckpt")
    data = make_mcqa_dataset(root / "data", N, seed=0)
    return ckpt, data.manifest


@pytest.mark.parametrize(
    "response, expected",
    [
        ("(3)", 3),
        ("The answer is (2).", 2),
        ("(4) A pen", 4),
        ("(1) first, or maybe (2)", 1),  # the first match counts
        ("3", None),  # no parenthesised number: invalid
        ("B", None),
        ("", None),
        ("(0) nothing", None),  # outside 1..4: invalid
        ("(5) too far", None),
        ("(12)", None),  # the paper's regex takes one digit inside the brackets
    ],
)
def test_parse_answer(response, expected):
    assert eval_mcqa.parse_answer(response) == expected


def test_load_and_prompt(setup):
    _, manifest = setup
    items = eval_mcqa.load_mcqa(manifest)
    assert len(items) == N and eval_mcqa.load_mcqa(manifest, limit=3) == items[:3]
    for it in items:
        assert len(it.choices) == 4 and 0 <= it.answer < 4
        assert abs(it.seconds - len(read_audio(it.audio)) / 16000) < 1e-3
    text = eval_mcqa.question_text(items[0].question, items[0].choices)
    assert "(NUMBER) STATEMENT" in text and items[0].question in text
    for i, choice in enumerate(items[0].choices):
        assert f"({i + 1}) {choice}" in text


def test_bad_record_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"audio": "a.flac", "question": "q", "choices": ["a", "b"], "answer": 5, "seconds": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: .*answer"):
        eval_mcqa.load_mcqa(path)


def test_buckets():
    edges = [60, 120]
    assert [eval_mcqa.bucket_label(s, edges) for s in (5, 60, 61, 120, 500)] == ["<=60s", "<=60s", "60-120s", "60-120s", ">120s"]
    assert eval_mcqa.bucket_order(edges) == ["<=60s", "60-120s", ">120s"]


def _oracle(kind):
    def respond(model, processor, items, audio, **kwargs):
        if kind == "right":
            return [f"({it.answer + 1}) {it.choices[it.answer]}" for it in items]
        if kind == "wrong":
            return [f"The answer is ({(it.answer + 1) % 4 + 1})." for it in items]
        return ["I do not know." for _ in items]

    return respond


@pytest.mark.parametrize("kind, accuracy, invalid", [("right", 1.0, 0), ("wrong", 0.0, 0), ("garbage", 0.0, N)])
def test_oracle_accuracy_and_buckets(setup, kind, accuracy, invalid):
    _, manifest = setup
    items = eval_mcqa.load_mcqa(manifest)
    edges = sorted(it.seconds for it in items)[2:5:2]  # two edges inside the data: three non-empty buckets
    result = eval_mcqa.evaluate_mcqa(None, None, items, batch_size=3, bucket_edges=edges, respond=_oracle(kind), show_progress=False)
    assert result.n == N and result.accuracy == accuracy and result.invalid == invalid
    rows = result.by_bucket()
    assert len(rows) == 3
    assert sum(r["n"] for r in rows) == N and sum(r["correct"] for r in rows) == result.correct
    assert [r["n"] for r in rows] == [3, 2, 2]
    assert [p.key for p in result.predictions] == [it.key for it in items]  # data order, not batch order


def test_oracle_through_real_batched_generate(setup, monkeypatch):
    """A fake ``model.generate`` that answers right for the clip it sees (identified by its audio token count):
    exercises prompt building, left-padded batching, longest-first ordering, slicing and decoding."""
    ckpt, manifest = setup
    model = AudioVLMForConditionalGeneration.from_pretrained(str(ckpt)).eval()
    processor = AudioVLMProcessor.from_pretrained(ckpt)
    items = eval_mcqa.load_mcqa(manifest)
    by_tokens = {processor.audio_token_count(len(read_audio(it.audio))): it for it in items}
    assert len(by_tokens) == N, "test data needs distinct clip lengths"
    tok = processor.tokenizer
    seen = []

    def fake_generate(input_ids, attention_mask, **kwargs):
        assert (attention_mask[:, -1] == 1).all(), "batches must be left-padded"
        seen.append(input_ids.shape[0])
        rows = []
        for row in input_ids:
            it = by_tokens[int((row == model.config.audio_token_id).sum())]
            rows.append(tok(f"({it.answer + 1}) {it.choices[it.answer]}")["input_ids"])
        width = max(map(len, rows))
        new = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    result = eval_mcqa.evaluate_mcqa(model, processor, items, batch_size=3, show_progress=False)
    assert seen == [3, 3, 1]
    assert result.accuracy == 1.0 and result.invalid == 0
    assert [p.response for p in result.predictions] == [f"({it.answer + 1}) {it.choices[it.answer]}" for it in items]


def test_cli_end_to_end(setup, tmp_path):
    ckpt, manifest = setup
    out = tmp_path / "out"
    result = eval_mcqa.main([
        "--model", str(ckpt), "--data", str(manifest), "--out", str(out), "--batch-size", "4",
        "--max-new-tokens", "3", "--bucket-edges", "1.5", "2.0", "--no-progress", "--device", "cpu",
        "--method", "partial_yarn", "--cutoff", "4", "--temperature", "1.2", "--base-audio-seconds", "1",
    ])
    payload = json.loads((out / "results.json").read_text())
    summary = payload["summary"]
    assert summary["n"] == N == len(payload["predictions"]) == result.n
    assert summary["extension"]["method"] == "partial_yarn" and summary["extension"]["cutoff"] == 4
    assert sum(r["n"] for r in summary["by_bucket"]) == N
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N
    correct = sum(row["correct"] == "True" for row in rows)
    assert summary["correct"] == correct and summary["accuracy"] == pytest.approx(correct / N)
    for row, pred in zip(rows, payload["predictions"]):
        assert eval_mcqa.parse_answer(pred["response"]) == pred["predicted"]
        assert row["key"] == pred["key"] and row["response"] == pred["response"]
    with open(out / "buckets.csv", newline="") as f:
        buckets = list(csv.DictReader(f))
    assert buckets[-1]["bucket"] == "all" and int(buckets[-1]["n"]) == N
    assert sum(int(b["n"]) for b in buckets[:-1]) == N
