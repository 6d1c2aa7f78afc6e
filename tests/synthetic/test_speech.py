"""Offline speech (eSpeak NG through ctypes) and the synthetic speech tasks: speech-like audio, deterministic
for a seed, labels that match what was spoken, and the usual shard / MCQA layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recipes.synthetic.speech import (
    DIGIT_WORDS,
    MCQA_WORDS,
    digits_sample,
    make_digits_dataset,
    make_speech_mcqa_dataset,
    speech_activity,
    speech_mcqa_sample,
)
from recipes.synthetic.tts import Speaker, SpeechSynthesisError, synthesize


def test_speech_is_speech_like_and_deterministic():
    speaker = Speaker(voice="en-us+f3", rate=170, pitch=45, word_gap=2, seed=7)
    long, sr = synthesize("seven two nine four one eight three five", speaker)
    assert sr == 22050
    assert long.dtype == np.float32 and np.abs(long).max() <= 1.0
    # speech, not silence or a tone: loud enough, and switching between sound and pauses
    assert np.sqrt((long**2).mean()) > 0.03
    assert 0.3 < speech_activity(long, sr) < 0.98
    # duration is proportional to the text (plus a fixed lead-in and end pause): equal seconds per word pair
    d2, d4, d8 = (len(synthesize(" ".join(["seven", "two"] * k), speaker)[0]) / sr for k in (1, 2, 4))
    per_pair_a, per_pair_b = d4 - d2, (d8 - d4) / 2
    assert 0.4 < per_pair_a < 1.5 and abs(per_pair_b / per_pair_a - 1) < 0.15
    # the same text and speaker give the same samples (each utterance runs in a freshly loaded library)
    again, _ = synthesize("seven two nine four one eight three five", speaker)
    np.testing.assert_array_equal(again, long)
    # other speakers sound different: other length and samples
    other, _ = synthesize("seven two nine four one eight three five", Speaker(voice="en", rate=140, pitch=70))
    assert len(other) != len(long)
    slow, _ = synthesize("seven two nine four one eight three five", Speaker(voice="en-us+f3", rate=100, seed=7))
    assert len(slow) > 1.3 * len(long)


def test_bad_speech_requests_are_refused_by_name():
    with pytest.raises(ValueError, match="rate must be an int in"):
        Speaker(rate=20)
    with pytest.raises(ValueError, match="voice must be"):
        Speaker(voice="en us")
    with pytest.raises(ValueError, match="non-empty string"):
        synthesize("   ")
    with pytest.raises(SpeechSynthesisError, match="no voice 'xx-nonexistent'"):
        synthesize("hello", Speaker(voice="xx-nonexistent"))


def test_digit_labels_match_the_spoken_text():
    for i in range(3):
        s = digits_sample(3, i)
        words = s["text"].split()
        assert 3 <= len(words) <= 5
        assert s["response"] == " ".join(str(DIGIT_WORDS.index(w)) for w in words)
        seconds = len(s["audio"]) / s["sampling_rate"]
        assert 0.25 * len(words) < seconds < 1.0 * len(words) + 0.6
    again = digits_sample(3, 1)
    np.testing.assert_array_equal(again["audio"], digits_sample(3, 1)["audio"])


def test_speech_mcqa_answer_is_in_the_spoken_words():
    seen = set()
    for i in range(6):
        s = speech_mcqa_sample(5, i, min_seconds=4, max_seconds=12)
        words = s["text"].split()
        assert words == s["words"] and set(words) <= set(MCQA_WORDS)
        right = s["choices"][s["answer"]]
        assert len(set(s["choices"])) == 4
        if s["kind"] == "after":
            assert words.count(s["target"]) == 1 and s["target"] in s["question"]
            assert right == words[words.index(s["target"]) + 1]
        else:
            assert right == (words[0] if s["kind"] == "first" else words[-1])
        # the recording's length follows its word count (rough: speakers differ in rate and word gap)
        assert 0.25 * len(words) < s["seconds"] < 0.9 * len(words) + 1
        seen.add(s["kind"])
    assert len(seen) >= 2


def test_speech_datasets_write_shards_and_mcqa_the_eval_layout(tmp_path):
    import soundfile as sf

    from recipes.data.shard_reader import iter_tar_samples
    from recipes.evaluation.mcqa_items import load_mcqa

    ds = make_digits_dataset(tmp_path / "digits", 3, seed=0, split="train")
    rows = [json.loads(line) for line in ds.manifest.read_text().splitlines()]
    assert [r["response"] for r in rows] == [digits_sample(0, i)["response"] for i in range(3)]
    audio, sr = sf.read(tmp_path / "digits" / rows[0]["audio"])
    assert sr == 22050 and len(audio) == len(digits_sample(0, 0)["audio"])
    assert len(ds.shards) == 1
    keys = [sample["__key__"] for sample in iter_tar_samples(ds.shards[0])]
    assert keys == ds.keys

    mc = make_speech_mcqa_dataset(tmp_path / "mcqa", 2, seed=1, min_seconds=3, max_seconds=6)
    items = load_mcqa(mc.manifest)
    assert len(items) == 2
    for item, row in zip(items, (json.loads(line) for line in mc.manifest.read_text().splitlines())):
        assert item.choices[item.answer] == row["choices"][row["answer"]]
        assert item.seconds == pytest.approx(sf.info(item.audio).duration, abs=1e-3)


def test_make_synthetic_cli_speech_tasks(tmp_path, capsys):
    from recipes.evaluation.mcqa_items import load_mcqa
    from scripts import make_synthetic

    assert make_synthetic.main(["digits", "--out", str(tmp_path / "d"), "--num", "2", "--max-digits", "3"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "d" / "train.jsonl").read_text().splitlines()]
    assert [len(r["response"].split()) <= 3 for r in rows] == [True, True]
    assert list((tmp_path / "d" / "shards").glob("train-*.tar"))
    assert (
        make_synthetic.main(
            [
                "speech-mcqa",
                "--out",
                str(tmp_path / "m"),
                "--num",
                "2",
                "--min-seconds",
                "3",
                "--max-seconds",
                "4",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    assert len(load_mcqa(tmp_path / "m" / "speech_mcqa.jsonl")) == 2
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        make_synthetic.main(
            ["digits", "--out", str(tmp_path / "x"), "--num", "1", "--min-digits", "4", "--max-digits", "2"]
        )
