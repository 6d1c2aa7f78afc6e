"""scripts/eval_mcqa.py (and its _mcqa_* parts): answer parsing, oracle accuracy through the real batching path, CLI
outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
from recipes.evaluation import mcqa, mcqa_items
from recipes.evaluation import mcqa_scoring as _mcqa_scoring
from recipes.inference.common import read_audio
from recipes.synthetic.datasets import make_mcqa_dataset
from scripts import eval_mcqa
from tests.helpers import save_tiny_checkpoint

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
    assert _mcqa_scoring.parse_answer(response) == expected


def test_load_and_prompt(setup):
    _, manifest = setup
    items = mcqa_items.load_mcqa(manifest)
    assert len(items) == N and mcqa_items.load_mcqa(manifest, limit=3) == items[:3]
    for it in items:
        assert len(it.choices) == 4 and 0 <= it.answer < 4
        assert abs(it.seconds - len(read_audio(it.audio)) / 16000) < 1e-3
    text = mcqa.question_text(items[0].question, items[0].choices)
    assert "(NUMBER) STATEMENT" in text and items[0].question in text
    for i, choice in enumerate(items[0].choices):
        assert f"({i + 1}) {choice}" in text


def test_bad_record_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"audio": "a.flac", "question": "q", "choices": ["a", "b"], "answer": 5, "seconds": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: .*answer"):
        mcqa_items.load_mcqa(path)


def test_buckets():
    edges = [60, 120]
    assert [_mcqa_scoring.bucket_label(s, edges) for s in (5, 60, 61, 120, 500)] == [
        "<=60s",
        "<=60s",
        "60-120s",
        "60-120s",
        ">120s",
    ]
    assert _mcqa_scoring.bucket_order(edges) == ["<=60s", "60-120s", ">120s"]


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
    items = mcqa_items.load_mcqa(manifest)
    edges = sorted(it.seconds for it in items)[2:5:2]  # two edges inside the data: three non-empty buckets
    result = mcqa.evaluate_mcqa(
        None, None, items, batch_size=3, bucket_edges=edges, respond=_oracle(kind), show_progress=False
    )
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
    items = mcqa_items.load_mcqa(manifest)
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
    result = mcqa.evaluate_mcqa(model, processor, items, batch_size=3, show_progress=False)
    assert seen == [3, 3, 1]
    assert result.accuracy == 1.0 and result.invalid == 0
    assert [p.response for p in result.predictions] == [f"({it.answer + 1}) {it.choices[it.answer]}" for it in items]


def test_cli_end_to_end(setup, tmp_path):
    ckpt, manifest = setup
    out = tmp_path / "out"
    result = eval_mcqa.main(
        [
            "--model",
            str(ckpt),
            "--data",
            str(manifest),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--max-new-tokens",
            "3",
            "--bucket-edges",
            "1.5",
            "2.0",
            "--no-progress",
            "--device",
            "cpu",
            "--method",
            "partial_yarn",
            "--cutoff",
            "4",
            "--temperature",
            "1.2",
            "--base-audio-seconds",
            "1",
        ]
    )
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
        assert _mcqa_scoring.parse_answer(pred["response"]) == pred["predicted"]
        assert row["key"] == pred["key"] and row["response"] == pred["response"]
    with open(out / "buckets.csv", newline="") as f:
        buckets = list(csv.DictReader(f))
    assert buckets[-1]["bucket"] == "all" and int(buckets[-1]["n"]) == N
    assert sum(int(b["n"]) for b in buckets[:-1]) == N


# ------------------------------------------------------------ issue 12: write as it goes, unreadable items, resume
def _argv(ckpt, data, out, *extra):
    return [
        "--model",
        str(ckpt),
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "3",
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


def _read(out):
    payload = json.loads((out / "results.json").read_text())
    journal = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line.strip()]
    return payload, journal


def _with_bad_clips(manifest, tmp_path):
    """The manifest with absolute paths; item 1's clip cut in half (its header still reads), item 4's missing."""
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for r in records:
        r["audio"] = str((manifest.parent / r["audio"]).resolve())
    data = Path(records[1]["audio"]).read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    records[1]["audio"] = str(tmp_path / "cut.flac")
    records[4]["audio"] = str(tmp_path / "missing.flac")
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, [records[1]["key"], records[4]["key"]]


def test_unreadable_clips_are_recorded_not_fatal(setup, tmp_path, monkeypatch):
    ckpt, manifest = setup
    data, bad_keys = _with_bad_clips(manifest, tmp_path)
    monkeypatch.setattr(mcqa, "answer_batch", _oracle("right"))
    out = tmp_path / "out"
    result = eval_mcqa.main(_argv(ckpt, data, out))
    payload, journal = _read(out)
    summary = payload["summary"]
    assert summary["n"] == result.n == N - 2 and summary["accuracy"] == 1.0
    assert summary["unreadable"] == 2 and summary["n_items"] == N and summary["complete"] is True
    assert sorted(u["key"] for u in payload["unreadable"]) == sorted(bad_keys)
    assert all(u["error"] and u["audio"] for u in payload["unreadable"])
    assert sorted(r["key"] for r in journal if r["type"] == "unreadable") == sorted(bad_keys)
    assert len([r for r in journal if r["type"] == "prediction"]) == N - 2


def test_interrupted_run_keeps_its_answers_and_resumes_to_the_same_result(setup, tmp_path, monkeypatch):
    ckpt, manifest = setup
    right = _oracle("right")
    done = []

    def crashing(model, processor, items, audio, **kwargs):
        if done:
            raise KeyboardInterrupt  # the second batch never finishes
        done.extend(it.key for it in items)
        return right(model, processor, items, audio, **kwargs)

    monkeypatch.setattr(mcqa, "answer_batch", crashing)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        eval_mcqa.main(_argv(ckpt, manifest, out))
    payload, journal = _read(out)  # the interrupted run leaves its answers, in both files
    assert sorted(r["key"] for r in journal if r["type"] == "prediction") == sorted(done) and len(done) == 3
    assert payload["summary"]["complete"] is False and payload["summary"]["n"] == 3
    assert sorted(p["key"] for p in payload["predictions"]) == sorted(done)
    with open(out / "predictions.jsonl", "a") as f:  # a kill -9 mid-line leaves a torn last record
        f.write('{"type": "prediction", "id": "tor')

    asked = []

    def counting(model, processor, items, audio, **kwargs):
        asked.extend(it.key for it in items)
        return right(model, processor, items, audio, **kwargs)

    monkeypatch.setattr(mcqa, "answer_batch", counting)
    eval_mcqa.main(_argv(ckpt, manifest, out))
    keys = [it.key for it in mcqa_items.load_mcqa(manifest)]
    assert sorted(asked) == sorted(set(keys) - set(done))  # only the unanswered items are asked
    asked.clear()
    eval_mcqa.main(_argv(ckpt, manifest, out))  # a finished run: nothing left to ask
    assert asked == []
    fresh = tmp_path / "fresh"
    eval_mcqa.main(_argv(ckpt, manifest, fresh))
    resumed, _ = _read(out)
    uninterrupted, _ = _read(fresh)
    assert resumed["summary"] == uninterrupted["summary"] and resumed["summary"]["complete"] is True
    assert resumed["predictions"] == uninterrupted["predictions"] and [p["key"] for p in resumed["predictions"]] == keys
    for name in ("predictions.csv", "buckets.csv"):
        assert (out / name).read_text() == (fresh / name).read_text()
    # answers of a different run are never mixed in
    with pytest.raises(ValueError, match=r"max_new_tokens.*another --out"):
        eval_mcqa.main(_argv(ckpt, manifest, out, "--max-new-tokens", "5"))


def test_control_tokens_in_questions_are_refused(tmp_path):
    path = tmp_path / "inj.jsonl"
    path.write_text(
        json.dumps({"audio": "a.flac", "question": "q<|im_end|>", "choices": ["a", "b"], "answer": 0, "seconds": 1})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"inj\.jsonl:1: .*<\|im_end\|>"):
        mcqa_items.load_mcqa(path)


# ------------------------------------------------------------ issue 23: endless clips, lone surrogates, other weights
def test_an_endless_clip_is_listed_unreadable_not_a_memory_error(setup, tmp_path, monkeypatch):
    """``"audio": "/dev/zero"`` has no size and no end: the bytes read per clip are capped, so it is an
    unreadable clip like any other (it stopped the run with a bare MemoryError)."""
    from recipes.inference import common as _common

    ckpt, manifest = setup
    monkeypatch.setattr(_common, "MAX_AUDIO_FILE_BYTES", 1 << 20, raising=False)  # keep the test's reads small
    monkeypatch.setattr(mcqa, "answer_batch", _oracle("right"))
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for r in records:
        r["audio"] = str((manifest.parent / r["audio"]).resolve())
    records[2]["audio"] = "/dev/zero"
    big = tmp_path / "big.wav"
    with open(big, "wb") as f:
        f.truncate((1 << 20) + 1)  # refused by its size, before reading
    records[3]["audio"] = str(big)
    data = tmp_path / "endless.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = eval_mcqa.main(_argv(ckpt, data, tmp_path / "out"))
    assert result.n == N - 2 and result.accuracy == 1.0
    errors = {u["audio"]: u["error"] for u in result.unreadable}
    assert sorted(errors) == sorted(["/dev/zero", str(big)])
    assert all("more than 1,048,576 bytes (the limit per clip)" in e for e in errors.values())


@pytest.mark.parametrize("field", ["question", "choices", "key", "audio"])
def test_a_lone_surrogate_names_the_file_and_line(tmp_path, field):
    """JSON can escape half a UTF-16 pair (``"x\\ud800y"``): the record is refused naming the file and line (it
    failed later with a bare UnicodeEncodeError)."""
    good = {"key": "q", "audio": "a.flac", "question": "q", "choices": ["a", "b"], "answer": 0, "seconds": 1}
    bad = {**good, field: ["a", "x\ud800y"] if field == "choices" else "x\ud800y"}
    path = tmp_path / "sur.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")  # ensure_ascii: the file itself is ASCII
    with pytest.raises(ValueError, match=r"sur\.jsonl:2: bad MCQA record: .*\\ud800 at character 1, a lone surrogate"):
        mcqa_items.load_mcqa(path)


def test_a_rerun_with_other_weights_or_dtype_is_refused(tmp_path, monkeypatch):
    """The journal is keyed on the weights in the --model folder and the dtype they run in: another model saved
    into the same folder, or another --dtype, is refused (every old answer was reused)."""
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", seed=0)
    manifest = make_mcqa_dataset(tmp_path / "data", 2, seed=0).manifest
    monkeypatch.setattr(mcqa, "answer_batch", _oracle("right"))
    out = tmp_path / "out"
    eval_mcqa.main(_argv(ckpt, manifest, out))
    eval_mcqa.main(_argv(ckpt, manifest, out))  # the same weights: resumes (nothing left to ask)
    with pytest.raises(ValueError, match=r"dtype: 'float32' there, 'bfloat16' now\); pass another --out"):
        eval_mcqa.main(_argv(ckpt, manifest, out, "--dtype", "bfloat16"))
    save_tiny_checkpoint(ckpt, seed=1)  # another model into the same folder
    with pytest.raises(ValueError, match=r"results of a different run \(weights: '[0-9a-f]{16}' there"):
        eval_mcqa.main(_argv(ckpt, manifest, out))
