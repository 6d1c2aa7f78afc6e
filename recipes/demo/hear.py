"""The EXPERIMENTAL pretrained job (`scripts.demo --pretrained`): Whisper tiny.en + SmolLM2-135M-Instruct learn to
hear eSpeak speech on 2 CPU cores, and are scored against Whisper's own decoder and against silence.

1. parts: the two offline pretrained folders (`audio_adapter.pretrained.offline_parts`, built once into a cache).
2. base: assembled (Whisper tiny.en encoder frozen, pooled x4, linear projector 384 -> 576, SmolLM2 in the
   Qwen2-VL layout), encoding padded 30 s windows as Whisper was trained (the states of real frames alone
   differ a lot for clips this short: Whisper's own WER goes from 6-31 % padded to 71-450 % real-frames-only,
   `scripts.bench.real_frames`); the frozen encoder's output is cached per clip (`encoder_cache`).
3. typed answers: the LM's own answers to the questions typed (the spoken questions' targets).
4. speech: digits, sentences and questions spoken by random eSpeak speakers; held-out questions use templates
   no training clip used.
5. stage 1 (projector + audio-token rows, LM frozen) on every training clip to transcribe (the spoken
   questions too: their words are what stage 2 must hear), then two stage-2 runs from its output (LoRA + projector):
   cross-entropy, and `recipes.losses.TextTeacherKL` (the LM reading the transcript as teacher).
6. evaluation of held-out clips (and the same prompts with silence); Whisper tiny.en's own transcripts.
7. results.json, loss.png, predictions.jsonl and the final table; exit status 1 below the gates.

Steps 3-6 are recorded as they finish (`recipes.demo.finished_steps`): the same command run again goes on from
the first unfinished one (a training run cut short starts over).
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from recipes.common.progress import Heartbeat
from recipes.demo.finished_steps import FinishedSteps
from recipes.hearing.recipe import TEXT_TEACHER_KL, StageRun, write_stage_recipe

TRANSCRIBE = "transcribe"  # stage 1's split: the training clips, every one to transcribe (questions too)
ANSWER = "answer"  # stage 2's split: the training clips, each spoken question `question_repeats` times
# question: the typed answers' limit too. 5 tokens MEASURED (2026-12-03, SmolLM2-135M, greedy) to end just after
# the question's filler where the answer restates it ("The capital of Japan is", "The colour of snow is") and
# before the tails that differ between wordings of one question (6 tokens: "... is usually" / "... is a"), which
# no model could guess for a wording it never heard. Asking for "one word" makes SmolLM2-135M answer worse
# ('The answer is "blood"', "This is a classic math problem").
MAX_NEW_TOKENS = {"digits": 12, "sentence": 20, "question": 5}
QUICK_TOKENS = {"digits": 3, "sentence": 3, "question": 3}


@dataclass
class HearConfig:
    out_dir: str = "runs/demo"
    parts_dir: str | None = None  # None: default_parts_dir()
    seed: int = 0
    # "fillers": short lists of the questions' fillers to transcribe (`texts.filler_lists`), training only
    train: dict = field(default_factory=lambda: {"digits": 200, "sentence": 150, "fillers": 120, "question": 250})
    heldout: dict = field(default_factory=lambda: {"digits": 30, "sentence": 20, "question": 40})
    # sized for <= 20 minutes on 2 AVX2 cores, MEASURED there (2026-12-04, emulated, idle, 720 training clips):
    # 150 stage-1 steps 896 / 932 s in all (seeds 0 / 1; stage 1 560 / 623 s: ~4.5 s a step while the first
    # epoch fills the encoder cache, ~2.5 s after); 200 steps (seed 1) 1034 s for digits WER 67.7 % vs 77.2 %,
    # sentences 59.7 % vs 50.8 %, no more of the questions heard: too close to the budget for what it buys
    stage1_steps: int = 150
    stage2_steps: int = 30
    batch_size: int = 8
    # stage-1 learning rate, MEASURED (2026-12-03, digits only: 400 clips, 100 steps, batch 8, padded windows, 30
    # held-out clips, one run each): 3e-3 -> loss 0.93, WER 52.8 %, exact 3 %; 5e-3 -> loss 0.19, WER 25.2 %,
    # exact 30 % (the cosine schedule halves the mean rate; the projector must move far from its random start).
    # On the transcription split (every kind, 150 steps, one run each): 5e-3 -> digits WER 80.5 % after stage 2;
    # 1e-2 -> 68.3 % / sentences 64.1 % (stage 1 alone); 1e-2 with projector_init_scale 0.3 -> 61.8 % / 53.1 %
    stage1_lr: float = 1e-2
    stage2_lr: float = 1e-3
    # copies of each spoken question in stage 2's split (the clips are not re-spoken). 1, MEASURED (2026-12-04,
    # seed 0, slow class): with 2, stage 2 answered held-out SENTENCES as questions ("The capital of Egypt is"):
    # sentences WER 50.8 % after stage 1 -> 86.7 % after stage 2; with 1, 53.9 % after stage 2
    question_repeats: int = 1
    eval_batch_size: int = 16
    num_workers: int = 1  # data-loading processes of each training run
    audio_pool_stride: int = 4
    # the fresh projector's weights x this: its output starts near the LM's own embedding scale (a token's norm
    # ~10 at scale 1, ~3 at 0.3, against ~3.2 for SmolLM2's embedding rows); measured above
    projector_init_scale: float = 0.3
    max_new_tokens: dict = field(default_factory=lambda: dict(MAX_NEW_TOKENS))
    gates: bool = True

    @classmethod
    def quick(cls, **kwargs) -> HearConfig:
        """A smoke run of every step (a few clips, 1 step a run): learns nothing, checks everything runs."""
        counts = {
            "train": {"digits": 4, "sentence": 2, "fillers": 1, "question": 2},
            "heldout": {"digits": 1, "sentence": 1, "question": 2},
        }
        # question_repeats 2: the smoke run also makes (and the tests check) the questions' copies
        return cls(**counts, stage1_steps=1, stage2_steps=1, batch_size=4, max_new_tokens=dict(QUICK_TOKENS),
                   num_workers=0, question_repeats=2, gates=False, **kwargs)  # fmt: skip

    def runs(self) -> list[StageRun]:
        stage2 = {"init_from": "stage1", "shards": ANSWER}
        return [
            StageRun("stage1", 1, self.stage1_steps, self.stage1_lr, shards=TRANSCRIBE),
            StageRun("stage2", 2, self.stage2_steps, self.stage2_lr, **stage2),
            StageRun("stage2-kl", 2, self.stage2_steps, self.stage2_lr, loss=TEXT_TEACHER_KL, **stage2),
        ]


class Timer:
    """Seconds of each named step of the job, in order."""

    def __init__(self) -> None:
        self.start = self.lap = time.perf_counter()
        self.steps: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self.lap, 1)
        self.lap = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def assemble_base(parts: dict, out: Path, pool_stride: int, projector_scale: float = 1.0) -> Path:
    """The assembled starting model at ``out`` (reused when already there: it is a pure function of the parts,
    ``pool_stride`` and ``projector_scale``): both parts, float32, a fresh projector drawn from seed 0 with its
    weights times ``projector_scale``, pooling ``pool_stride``, padded windows (the default encoding)."""
    from audio_adapter import AudioVLMProcessor, load_pretrained_parts
    from recipes.inference.common import save_model_folder

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)  # the fresh projector
    processor = AudioVLMProcessor.from_parts(str(parts["vlm"]), str(parts["whisper"]))
    model = load_pretrained_parts(
        str(parts["vlm"]), str(parts["whisper"]), tokenizer=processor.tokenizer,
        audio_pool_stride=pool_stride, dtype=torch.float32,
    )  # fmt: skip
    with torch.no_grad():
        for weight in model.audio_projector.parameters():
            weight.mul_(projector_scale)
    processor.audio_frames_per_token = model.config.audio_frames_per_token
    return save_model_folder(model, processor, out)


def make_speech(cfg: HearConfig, base: Path, data: Path, timer: Timer) -> None:
    """Steps 3-4: the LM's typed answers, then the training shards and the held-out clips under ``data``."""
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
    from recipes.hearing import texts
    from recipes.hearing.data import (
        question_utterances,
        repeated_questions_split,
        transcription_split,
        transcription_utterances,
        write_speech_split,
    )
    from recipes.hearing.lm_answers import typed_answers

    questions = {"train": texts.questions(cfg.train["question"], cfg.seed, "train")}
    questions["heldout"] = texts.questions(cfg.heldout["question"], cfg.seed + 1, "heldout")
    model = AudioVLMForConditionalGeneration.from_pretrained(str(base)).eval()
    processor = AudioVLMProcessor.from_pretrained(base)
    every = questions["train"] + questions["heldout"]
    answers = dict(zip((q.text for q in every), typed_answers(model, processor, [q.text for q in every],
                                                             cfg.max_new_tokens["question"])))  # fmt: skip
    del model
    timer.mark("typed answers")
    spoken = {"train": texts.sentences(cfg.train["sentence"], cfg.seed)}
    spoken["train"] += texts.filler_lists(cfg.train.get("fillers", 0), cfg.seed)
    spoken["heldout"] = texts.sentences(cfg.heldout["sentence"], cfg.seed + 1, exclude=set(spoken["train"]))
    for split, seed in (("train", cfg.seed), ("heldout", cfg.seed + 1)):
        asked = [q for q in questions[split] if answers[q.text]]  # an empty answer is no target
        utterances = transcription_utterances(spoken[split]) + question_utterances(
            [q.text for q in asked], [q.category for q in asked], [answers[q.text] for q in asked]
        )
        counts = cfg.train if split == "train" else cfg.heldout
        total = counts["digits"] + len(utterances)
        with Heartbeat(f"speech {split}", total, unit="clip") as beat:
            write_speech_split(data, split, counts["digits"], utterances, seed, beat.update)
        if split == "train":  # the same clips (their FLAC files): the questions to transcribe; to answer, repeated
            transcription_split(data, "train", TRANSCRIBE)
            repeated_questions_split(data, "train", ANSWER, cfg.question_repeats)
    timer.mark("speech")


def train_and_evaluate(
    cfg: HearConfig, base: Path, out: Path, timer: Timer, console: Console, steps: FinishedSteps
) -> dict:
    """Steps 5-6: the three training runs through the training CLI; each stage-2 model is evaluated on the
    held-out clips right after it trained (the cross-entropy one with silence too). Returns the responses.
    A run recorded in ``steps`` is not run again (its responses are read back)."""
    from recipes.hearing.heldout import generate_by_kind, load_samples, silenced
    from recipes.training import cli as train

    samples = load_samples(out / "data")
    responses: dict[str, list[str]] = {}
    for run in cfg.runs():
        if (finished := steps.get(run.name)) is not None:
            responses.update(finished)
            timer.mark(run.name)
            console.print(f"[bold]{run.name}[/bold]: finished before (recorded in {steps.folder})")
            continue
        shutil.rmtree(out / run.name, ignore_errors=True)  # what a run cut short left: it starts over
        what = "projector + audio-token rows, LM frozen" if run.stage == 1 else "LoRA (q/k/v/o) + projector"
        loss = (run.loss or {"class_path": "CrossEntropy"})["class_path"].rsplit(".", 1)[-1]
        console.print(f"[bold]{run.name}[/bold]: {what}, {run.steps} steps, {loss}")
        shards = str(out / "data" / "shards" / f"{run.shards}-*.tar")
        settings = {"batch_size": cfg.batch_size, "seed": cfg.seed, "num_workers": cfg.num_workers}
        path = write_stage_recipe(run, base, shards, out, **settings)
        cli = train.main(["fit", "--config", str(path)])
        timer.mark(run.name)
        if run.stage == 1:
            steps.put(run.name, {})
            continue
        model, processor = cli.model.audio_vlm.eval(), cli.model.processor
        asked = [*samples, *silenced(samples)] if run.loss is None else samples  # silence in the same batches
        with torch.no_grad():
            texts = generate_by_kind(model, processor, asked, cfg.max_new_tokens, cfg.eval_batch_size)
        responses[run.name] = texts[: len(samples)]
        if run.loss is None:
            responses["silence"] = texts[len(samples) :]
        del cli, model
        gc.collect()  # one model in memory at a time
        steps.put(run.name, {k: v for k, v in responses.items() if k in (run.name, "silence")})
        timer.mark(f"evaluate {run.name}")
    return responses


def whisper_peer(parts: dict, samples: list[dict], timer: Timer, quick: bool) -> list[str | None]:
    """Whisper tiny.en's own transcripts of the held-out transcription clips (None for the questions)."""
    from recipes.hearing.heldout import TRANSCRIPTION_KINDS
    from recipes.hearing.peer import whisper_transcripts

    at = [i for i, s in enumerate(samples) if s["kind"] in TRANSCRIPTION_KINDS]
    texts = whisper_transcripts(str(parts["whisper"]), [samples[i]["audio"].numpy() for i in at],
                                max_new_tokens=3 if quick else 40)  # fmt: skip
    out: list[str | None] = [None] * len(samples)
    for i, text in zip(at, texts):
        out[i] = text
    timer.mark("whisper peer")
    return out


def score(samples: list[dict], responses: dict[str, list[str]], whisper: list[str | None]) -> dict:
    """WER (transcription kinds) of each model, Whisper and silence; digits exact match; question agreement and
    content heard (`recipes.hearing.heldout.content_heard`)."""
    from recipes.hearing.heldout import content_heard, exact_digits, question_agreement, transcription_wer

    at = [i for i, w in enumerate(whisper) if w is not None]
    heard = [samples[i] for i in at]
    systems = {**responses, "whisper": [str(whisper[i]) for i in at]}
    picked = {name: (heard, texts) if name == "whisper" else (samples, texts) for name, texts in systems.items()}
    return {
        "wer": {name: transcription_wer(s, t) for name, (s, t) in picked.items()},
        "digits_exact_match": {name: exact_digits(s, t) for name, (s, t) in picked.items()},
        "agreement": {name: question_agreement(samples, t) for name, t in responses.items()},
        # "typed": the LM's own answers to the typed questions, the ceiling (an answer that never restates the
        # numbers, "To solve this problem, we", holds no content word)
        "content_heard": {name: content_heard(samples, t) for name, t in
                          {**responses, "typed": [s["reference"] for s in samples]}.items()},
    }  # fmt: skip


# The gates: what "the model hears" means here, set from MEASURED runs (written down before the last run).
# 2026-12-04, slow class (AVX2 emulation, 2 cores), the shipped settings (filler lists, questions once in stage
# 2): stage 2 (CE) digits WER 0.553 / 0.772 (seeds 0 / 1), sentences 0.539 / 0.508, against silence's 1.285 /
# 1.268 and 1.172 / 1.298 (2026-12-03's settings: digits 0.675 / 0.748, sentences 0.570 / 0.710); the bounds
# leave room for run-to-run spread and stay far below silence. Spoken-question agreement and content heard are
# NOT gated: seed 0 hears the questions (content heard 25 %, agreement 10 %, silence 0 %), seed 1 does not (0 %
# and 0 %; 2.5 % with 200 stage-1 steps), and a gate one seed fails would only make the main job fail. Both are
# reported next to silence; see docs/pretrained-job.md.
GATES = {
    ("wer", "stage2", "digits"): ("<=", 0.85),
    ("wer", "stage2", "sentence"): ("<=", 0.75),
}


def gate_checks(scores: dict) -> dict[str, dict]:
    """Each gate's measured value, bound and verdict, plus the silence baseline it must beat."""
    checks = {}
    for (measure, system, part), (op, bound) in GATES.items():
        value = scores[measure][system][part]
        silence = scores[measure]["silence"][part]
        ok = value <= bound and value < silence if op == "<=" else value >= bound and value > silence
        checks[f"{measure} {system} {part} {op} {bound}"] = {"value": value, "silence": silence, "ok": bool(ok)}
    return checks


def run_hear(cfg: HearConfig, console: Console | None = None) -> dict:
    """The whole pretrained job in ``cfg.out_dir``; returns (and writes as results.json) its result."""
    from audio_adapter.pretrained.offline_parts import build_offline_parts, default_parts_dir
    from recipes.common.atomic import atomic_write_text
    from recipes.demo.report import hear_table, plot_runs, train_losses, write_hear_predictions
    from recipes.hearing.heldout import load_samples

    console = console or Console()
    torch.set_num_threads(2)
    out, timer = Path(cfg.out_dir), Timer()
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]audio-vlm-adapter main job[/bold]: Whisper tiny.en + SmolLM2-135M-Instruct learn to hear")
    with Heartbeat("offline parts + base model", unit="step"):
        parts = build_offline_parts(cfg.parts_dir or default_parts_dir())
        timer.mark("parts")
        # beside the parts it is made from (a cache like them): every run starts from the same base
        scale = cfg.projector_init_scale
        base_name = f"assembled-whisper-tiny.en-smollm2-135m-pool{cfg.audio_pool_stride}-padded"
        base_name += "" if scale == 1.0 else f"-projector{scale:g}"
        base = assemble_base(parts, parts["vlm"].parent / base_name, cfg.audio_pool_stride, scale)
        timer.mark("base")
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "parts_dir", "gates", "num_workers")}
    steps = FinishedSteps(out, settings)
    if steps.get("speech") is None:
        shutil.rmtree(out / "data", ignore_errors=True)  # what a cut-short step left
        make_speech(cfg, base, out / "data", timer)
        steps.put("speech", True)
    else:
        timer.mark("typed answers")
        timer.mark("speech")
    responses = train_and_evaluate(cfg, base, out, timer, console, steps)
    samples = load_samples(out / "data")
    if (whisper := steps.get("whisper peer")) is None:
        whisper = whisper_peer(parts, samples, timer, quick=not cfg.gates)
        steps.put("whisper peer", whisper)
    scores = score(samples, responses, whisper)
    losses = {run.name: train_losses(out / run.name) for run in cfg.runs()}
    plot_runs(losses, out / "loss.png")
    write_hear_predictions(out / "predictions.jsonl", samples, responses, whisper)
    checks = gate_checks(scores) if cfg.gates else {}
    result = {**scores, "base": str(base), "gates": checks, "passed": all(c["ok"] for c in checks.values()),
              "losses": {k: [v[0][1], v[-1][1]] if v else None for k, v in losses.items()},
              "timings": timer.steps, "total_seconds": timer.total(), "config": asdict(cfg),
              "finished_before": steps.reused}  # fmt: skip
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    console.print(hear_table(result))
    console.print(f"loss curves -> {out / 'loss.png'}; predictions -> {out / 'predictions.jsonl'}")
    return result
