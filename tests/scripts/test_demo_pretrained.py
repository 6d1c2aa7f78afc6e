"""The main job on the pretrained parts (`scripts.demo`, the default) at smoke scale on the offline parts, its
outputs and scores recomputed from what it wrote, and the pure pieces (normalisation, WER, agreement, template split,
recipes, gates)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image


def _run_job(args: list[str], crash_at: str | None = None) -> int:
    """`scripts.demo.main(args)` in this process; ``crash_at``: the training run that raises as it starts."""
    from recipes.training import cli
    from scripts.demo import main

    if crash_at is None:
        return main(args)
    train = cli.main

    def crashing(argv):
        if Path(argv[-1]).stem == crash_at:
            raise RuntimeError(f"simulated crash at {crash_at}")
        return train(argv)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "main", crashing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            main(args)
    return 1


def _finished(out: Path) -> list[str]:
    return sorted(p.stem for p in (out / "finished").glob("*.json"))


@pytest.fixture(scope="module")
def crashed_job(offline_parts, tmp_path_factory):
    """The CLI's entry point as a user calls it (`scripts.demo.main`), in the suite's process (measured on the
    slow CPU class, AVX2 emulation, 2 threads, alone: the whole job 25.5 s in a worker that had run the GGUF tests
    before, 36.7 s in an interpreter of its own), crashing as the first stage-2 run starts."""
    out = tmp_path_factory.mktemp("demo-pretrained")
    args = ["--quick", "--out-dir", str(out), "--parts-dir", str(offline_parts["vlm"].parent)]
    _run_job(args, crash_at="stage2")
    return out, args


@pytest.fixture(scope="module")
def crashed_again(crashed_job):
    """The same command again: it goes on from stage 2, and crashes as the KL run starts."""
    out, args = crashed_job
    stage1 = out / "stage1" / "output" / "projector.safetensors"
    before = stage1.stat().st_mtime_ns
    _run_job(args, crash_at="stage2-kl")
    assert stage1.stat().st_mtime_ns == before  # stage 1 was not trained again
    return out, args


@pytest.fixture(scope="module")
def quick_job(crashed_again):
    """The same command a third time: it finishes, from the KL run on."""
    out, args = crashed_again
    assert _run_job(args) == 0
    return out, json.loads((out / "results.json").read_text())


def test_a_crashed_job_recorded_its_finished_steps_only(crashed_job):
    out, _ = crashed_job
    assert _finished(out) == ["speech", "stage1"]
    assert (out / "stage1" / "output" / "projector.safetensors").is_file()
    assert not (out / "results.json").exists()


def test_a_rerun_goes_on_from_the_first_unfinished_step(crashed_again):
    out, _ = crashed_again
    assert _finished(out) == ["speech", "stage1", "stage2"]
    assert (out / "stage2" / "output" / "adapter").is_dir() and not (out / "stage2-kl").exists()


def test_the_last_rerun_reads_back_every_finished_step(quick_job):
    out, result = quick_job
    assert result["finished_before"] == ["speech", "stage1", "stage2"]
    assert _finished(out) == ["speech", "stage1", "stage2", "stage2-kl", "whisper peer"]
    assert set(result["agreement"]) == {"stage2", "silence", "stage2-kl"}  # stage 2's responses, read back


def test_a_folder_of_a_job_with_other_settings_is_refused(tmp_path):
    from recipes.demo.finished_steps import FinishedSteps

    steps = FinishedSteps(tmp_path, {"seed": 0, "stage1_steps": 130})
    steps.put("speech", True)
    assert FinishedSteps(tmp_path, {"seed": 0, "stage1_steps": 130}).get("speech") is True
    assert FinishedSteps(tmp_path, {"seed": 0, "stage1_steps": 130}).get("stage1") is None
    with pytest.raises(ValueError, match=r"stage1_steps differ.*another output folder"):
        FinishedSteps(tmp_path, {"seed": 0, "stage1_steps": 150})


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_quick_job_writes_every_output_and_its_scores_are_the_predictions(quick_job):
    from recipes.hearing.scoring import agreement, word_error_rate

    out, result = quick_job
    assert json.loads((out / "results.json").read_text())["wer"] == result["wer"]
    with Image.open(out / "loss.png") as png:
        assert png.format == "PNG" and png.size[0] > 500
    rows = _rows(out / "predictions.jsonl")
    assert len(rows) == sum(result["config"]["heldout"].values())
    heard = [r for r in rows if r["kind"] != "question"]
    asked = [r for r in rows if r["kind"] == "question"]
    for system in ("stage2", "stage2-kl", "silence"):
        assert result["wer"][system]["all"] == pytest.approx(
            word_error_rate([r[system] for r in heard], [r["text"] for r in heard])
        )
        assert result["agreement"][system]["all"] == agreement(
            [r[system] for r in asked], [r["reference"] for r in asked]
        )
    assert all(r["whisper"] is not None for r in heard) and all(r["whisper"] is None for r in asked)
    assert set(result["content_heard"]) == {"stage2", "stage2-kl", "silence", "typed"}
    assert result["wer"]["whisper"]["all"] == pytest.approx(
        word_error_rate([r["whisper"] for r in heard], [r["text"] for r in heard])
    )
    assert set(result["timings"]) >= {"parts", "base", "typed answers", "speech", "stage1", "stage2", "stage2-kl"}
    assert result["gates"] == {} and result["passed"]  # --quick has no gates


def test_quick_job_trains_both_stages_and_the_kl_run_distils(quick_job):
    out, result = quick_job
    assert (out / "stage1" / "output" / "projector.safetensors").is_file()
    for run in ("stage2", "stage2-kl"):
        assert (out / run / "output" / "adapter").is_dir()
    logged = {}
    for run in ("stage2", "stage2-kl"):
        (metrics,) = (out / run).glob("logs/version_*/metrics.csv")
        with open(metrics, newline="") as f:
            logged[run] = {k for row in csv.DictReader(f) for k, v in row.items() if v}
    assert "train/kl" in logged["stage2-kl"] and "train/kl" not in logged["stage2"]
    base = json.loads((Path(result["base"]) / "config.json").read_text())
    assert base["audio_encode_real_frames_only"] is False and base["audio_pool_stride"] == 4  # padded windows


def test_quick_job_questions_targets_are_the_lms_typed_answers_and_heldout_templates_are_new(quick_job):
    from recipes.hearing.texts import TEMPLATES

    out, _ = quick_job
    train = [r for r in _rows(out / "data" / "train.jsonl") if r["kind"] == "question"]
    heldout = [r for r in _rows(out / "data" / "heldout.jsonl") if r["kind"] == "question"]
    assert train and heldout
    assert all(r["prompt"] == "" and r["transcript"] == r["text"] and r["response"] for r in train + heldout)
    others = [r for r in _rows(out / "data" / "train.jsonl") if r["kind"] != "question"]
    assert others and not any("transcript" in r for r in others)  # the KL run distils the questions only
    for rows, side in ((train, 0), (heldout, 1)):
        for r in rows:
            templates = TEMPLATES[r["category"]][side]
            assert any(_matches(t, r["text"]) for t in templates), r["text"]


def _matches(template: str, text: str) -> bool:
    import re

    pattern = re.escape(template).replace(r"\{x\}", ".+").replace(r"\{a\}", r"\d").replace(r"\{b\}", r"\d")
    return re.fullmatch(pattern, text) is not None


# ============================================================================================ the pure pieces
def test_words_make_digit_strings_and_spoken_digits_one_transcript():
    from recipes.hearing.scoring import agreement, word_error_rate, words

    assert words("3 1 7") == words("317") == words("three one seven") == ["three", "one", "seven"]
    assert words("6 4 2-9.") == words("six four two nine")
    assert words("The capital of France is Paris.") == "the capital of france is paris".split()
    assert word_error_rate(["317", "the cat"], ["three one seven", "the dog sat"]) == pytest.approx(2 / 6)
    assert agreement(["Paris.", "4"], ["paris", "five"]) == 0.5
    with pytest.raises(ValueError, match="1 hypotheses for 2 references"):
        word_error_rate(["a"], ["a", "b"])


def test_heldout_question_templates_never_train():
    from recipes.hearing.texts import CATEGORIES, TEMPLATES, questions, sentences

    for category in CATEGORIES:
        train, heldout = TEMPLATES[category]
        assert train and heldout and not set(train) & set(heldout)
    assert {q.template for q in questions(40, 0, "heldout")} <= {t for _, h in TEMPLATES.values() for t in h}
    assert {q.category for q in questions(8, 0, "train")} == set(CATEGORIES)
    seen = set(sentences(50, 0))
    assert not seen & set(sentences(20, 1, exclude=seen))


def test_filler_lists_speak_every_filler_equally_often():
    """Every country, thing and fact comes in turn: over whole passes each is spoken equally often, and a list
    clip is a sentence to transcribe (capitalised, one full stop)."""
    from collections import Counter

    from recipes.hearing.texts import COUNTRIES, FACTS, THINGS, filler_lists

    pool = [*COUNTRIES, *THINGS, *FACTS]
    lists = filler_lists(2 * len(pool), seed=0, per_clip=3)  # exactly 6 passes
    assert len(lists) == 2 * len(pool) and all(t[0].isupper() and t.endswith(".") for t in lists)
    spoken = Counter(w.lower() for t in lists for w in t[:-1].split(", "))
    assert spoken == Counter({f.lower(): 6 for f in pool})
    assert filler_lists(5, seed=0) == filler_lists(5, seed=0) != filler_lists(5, seed=1)
    with pytest.raises(ValueError, match="per_clip must be >= 1, got 0"):
        filler_lists(3, seed=0, per_clip=0)


def test_the_job_trains_on_filler_lists_and_never_holds_them_out(crashed_job):
    """The training split holds the quick job's filler lists as sentences to transcribe; the held-out one none."""
    from recipes.demo.hear import HearConfig
    from recipes.hearing.texts import filler_lists

    out, _ = crashed_job
    cfg = HearConfig.quick()
    lists = filler_lists(cfg.train["fillers"], cfg.seed)
    train, heldout = (_rows(out / "data" / f"{split}.jsonl") for split in ("train", "heldout"))
    assert lists and [r for r in train if r["text"] in lists and r["kind"] == "sentence"]
    assert not [r for r in heldout if r["text"] in lists]


def test_stage_recipes_point_at_the_base_and_the_kl_run_uses_the_text_teacher(tmp_path):
    from recipes.hearing.recipe import TEXT_TEACHER_KL, StageRun, stage_recipe

    run = StageRun("stage2-kl", 2, 10, 1e-3, loss=TEXT_TEACHER_KL, init_from="stage1")
    recipe = stage_recipe(run, tmp_path / "base", "shards/train-*.tar", tmp_path, batch_size=8, seed=3)
    model = recipe["model"]
    assert model["model"] == str(tmp_path / "base") and model["stage"] == 2 and model["lr"] == 1e-3
    assert model["init_from"] == str(tmp_path / "stage1" / "output") and model["loss"] == TEXT_TEACHER_KL
    assert "tiny_overrides" not in model and recipe["trainer"]["max_steps"] == 10
    assert recipe["data"]["batch_size"] == 8 and recipe["seed_everything"] == 3
    assert stage_recipe(StageRun("stage1", 1, 5, 2e-3), tmp_path, "s", tmp_path, 8, 0)["model"].get("init_from") is None


def test_gates_need_the_bound_and_a_margin_over_silence():
    from recipes.demo.hear import GATES, gate_checks

    def scores(wer: float, silence_wer: float = 2.0) -> dict:
        parts = {part for (_, _, part) in GATES}
        return {"wer": {"stage2": dict.fromkeys(parts, wer), "silence": dict.fromkeys(parts, silence_wer)}}

    assert {m for (m, _, _) in GATES} == {"wer"}  # agreement is reported, not gated (see GATES)
    good = min(b for (_, b) in GATES.values()) / 2
    assert all(c["ok"] for c in gate_checks(scores(good)).values())
    assert not any(c["ok"] for c in gate_checks(scores(1.5)).values())  # worse than every bound
    assert not any(c["ok"] for c in gate_checks(scores(good, silence_wer=good)).values())  # silence as good


def test_the_pretrained_job_refuses_the_tiny_jobs_speech_flags():
    from scripts.demo import main

    for args in (["--speech"], ["--no-speech"], ["--pretrained", "--speech"], ["--pretrained", "--tiny"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2


@pytest.mark.parametrize(
    ("args", "job", "out_dir"),
    [
        ([], "hear", "runs/demo-pretrained"),
        (["--pretrained"], "hear", "runs/demo-pretrained"),  # the flag that asked for it before 2026-12-03
        (["--tiny"], "tiny", "runs/demo"),
        (["--tiny", "--speech", "--out-dir", "x"], "tiny", "x"),
    ],
)
def test_the_main_job_is_the_pretrained_one_and_tiny_is_asked_for(monkeypatch, args, job, out_dir):
    """`bash scripts/demo.sh` (no arguments) runs the pretrained job; ``--tiny`` the tiny notes job."""
    import scripts.demo as demo
    from recipes.demo import hear

    ran = []
    monkeypatch.setattr(hear, "run_hear", lambda cfg: ran.append(("hear", cfg)) or {"passed": True})
    monkeypatch.setattr(demo, "run_demo", lambda cfg: ran.append(("tiny", cfg)) or {"exact_match": 1.0})
    assert demo.main(args) == 0
    assert [name for name, _ in ran] == [job] and ran[0][1].out_dir == out_dir
    if job == "tiny":
        assert (ran[0][1].speech is not None) == ("--speech" in args)


def test_stage1_transcribes_the_training_clips_questions_included(crashed_job):
    """Stage 1's split holds the training clips (same speakers, same audio) with every one to transcribe."""
    out, _ = crashed_job
    data = out / "data"
    train, heard = (_rows(data / f"{split}.jsonl") for split in ("train", "transcribe"))
    assert [r["text"] for r in heard] == [r["text"] for r in train] and any(r["kind"] == "question" for r in train)
    for mine, theirs in zip(heard, train):
        assert mine["speaker"] == theirs["speaker"]
        assert (data / mine["audio"]).read_bytes() == (data / theirs["audio"]).read_bytes()
        assert "transcript" not in mine and mine["kind"] in ("digits", "sentence")
        if mine["kind"] == "sentence":
            assert mine["response"] == mine["text"]
    (stage1,) = yaml.safe_load((out / "stage1.yaml").read_text())["data"]["train_shards"].split()
    assert stage1.endswith("transcribe-*.tar")


def test_stage2_answers_every_training_question_repeated_and_transcribes_the_rest_once(crashed_again):
    """Stage 2's split: the training clips (the same audio files), each spoken question `question_repeats` times
    under keys of its own, each digits and sentence clip once; both stage-2 runs train on it (the KL run's
    recipe is written by the second, `crashed_again`, run)."""
    from recipes.demo.hear import HearConfig

    out, _ = crashed_again
    data, repeats = out / "data", HearConfig.quick().question_repeats
    train, answer = (_rows(data / f"{split}.jsonl") for split in ("train", "answer"))
    questions = [r for r in train if r["kind"] == "question"]
    assert repeats > 1 and questions
    assert len(answer) == len(train) + (repeats - 1) * len(questions)
    assert len({r["key"] for r in answer}) == len(answer)
    assert answer[: len(train)] == train  # the first pass is the training split itself
    for n in range(1, repeats):
        copies = answer[len(train) + (n - 1) * len(questions) : len(train) + n * len(questions)]
        assert [r["key"] for r in copies] == [f"{q['key']}-r{n}" for q in questions]
        assert [{**r, "key": q["key"]} for r, q in zip(copies, questions)] == questions
    for name in ("stage2", "stage2-kl"):
        (shards,) = yaml.safe_load((out / f"{name}.yaml").read_text())["data"]["train_shards"].split()
        assert shards.endswith("answer-*.tar")
    # only the shards a run reads are written (the spoken clips themselves are not sharded)
    assert {p.name.rsplit("-", 1)[0] for p in (data / "shards").glob("*.tar")} == {"transcribe", "answer"}


def test_repeated_questions_split_refuses_zero_repeats(tmp_path):
    from recipes.hearing.data import repeated_questions_split

    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        repeated_questions_split(tmp_path, "train", "answer", 0)


def test_content_words_read_the_filler_back_through_every_template():
    from recipes.hearing.texts import CATEGORIES, TEMPLATES, content_words, questions

    assert content_words("Tell me the capital of France.", "capital") == ["france"]
    assert content_words("How much is 4 plus 12?", "arithmetic") == ["four", "one", "two"]
    assert content_words("What is the colour of a banana?", "colour") == ["banana"]
    assert content_words("Is it a fact that the sun is hot?", "fact") == ["sun"]
    assert content_words("Name a colour.", "colour") == []
    with pytest.raises(ValueError, match="made by no 'capital' template"):
        content_words("What is the colour of snow?", "capital")
    for split in ("train", "heldout"):  # every question the job asks has its filler found
        for q in questions(200, 3, split):
            assert content_words(q.text, q.category) or q.text == "Name a colour."
    assert set(CATEGORIES) == set(TEMPLATES)


def test_content_heard_counts_answers_holding_every_content_word():
    from recipes.hearing.heldout import content_heard

    samples = [
        {"kind": "question", "category": "capital", "text": "Tell me the capital of Japan."},
        {"kind": "question", "category": "capital", "text": "Tell me the capital of Egypt."},
        {"kind": "question", "category": "arithmetic", "text": "How much is 3 plus 6?"},
        {"kind": "question", "category": "colour", "text": "Name a colour."},  # no content word: left out
        {"kind": "digits", "category": None, "text": "three one"},
    ]
    answers = ["The capital of Japan is", "The capital of France is", "3 + 5 =", "Red", "3 1"]
    assert content_heard(samples, answers) == {"all": 1 / 3, "arithmetic": 0.0, "capital": 0.5}
