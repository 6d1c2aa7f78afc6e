"""The main job: REAL pretrained parts learn to hear, on 2 CPU cores, in minutes (`recipes.demo.hear`).

Whisper tiny.en's encoder (frozen) + a projector + SmolLM2-135M-Instruct, pretrained parts built offline from two
PyPI wheels (`audio_adapter.pretrained.offline_parts`): stage 1 (projector), then stage 2 (LoRA + projector)
with and without `recipes.losses.TextTeacherKL`, on eSpeak speech; held-out clips scored against Whisper
tiny.en's own decoder and against silence. Exits 1 below its gates (`recipes.demo.hear.GATES`).

``--tiny``: the fast job on a tiny RANDOM model, the whole toolkit end to end:

1. Synthesise WebDataset shards of the notes task (tones -> "C4 E4 G4"), training and held-out.
2. Fit a STAND-IN audio encoder: the tiny Whisper encoder with a CTC head on the training clips, then
   frozen (a random tiny encoder carries too little signal for a tiny LM to learn from in minutes).
3. Stage 1 of the real recipe: only the projector (+ audio token rows) learns.
4. Stage 2 of the real recipe: LoRA on the language model's q/k/v/o + projector.
5. Export the merged checkpoint; evaluate held-out clips with `generate()` (exact match, token error rate),
   against a no-audio baseline (the same prompts with silence in place of each clip). Exits 1 below 90 %.
6. Write the loss curves as a PNG and print a final table.

``--tiny --speech`` adds the same pipeline on SPEECH: 3-5 spoken digits (eSpeak NG, offline, varied voices) ->
"3 7 1", in ``<out>/speech``, judged by its word error rate against the silence baseline.

    python -m scripts.demo                        # the main job: the pretrained parts hear (see README for time)
    python -m scripts.demo --quick                # its smoke run (a few clips, 1 step a run)
    python -m scripts.demo --tiny                 # the tiny notes run (~8 minutes on 2 AVX2 cores)
    python -m scripts.demo --tiny --speech        # + the spoken-digits run (~17 minutes there)
    python -m scripts.demo --tiny --quick         # its smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console

from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.processing.audio_features import extract_features
from audio_adapter.testing import tiny_model_and_processor
from recipes.demo.report import (
    both_tasks_table,
    examples_table,
    plot_losses,
    summary_table,
    train_losses,
    write_predictions,
)
from recipes.demo.standin_encoder import ctc_exact_match, pretrain_standin_encoder
from recipes.evaluation.transcripts import TranscriptScores, generate_responses, score_transcripts
from recipes.synthetic.tasks import SyntheticTask, get_task, write_task_dataset

# The demo's tiny model: short 4 s encoder windows (every clip is < 3 s) and 4x frame pooling keep a step
# cheap; hidden 128 with head_dim 32 (M-RoPE sections 4/6/6).
DEMO_MODEL = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "mrope_section": (4, 6, 6),
    "num_mel_bins": 80,
    "max_source_positions": 200,
    "audio_pool_stride": 4,
}


def demo_task(name: str) -> SyntheticTask:
    """A registered task (`recipes.synthetic.tasks.TASKS`) the demo can train on: one whose responses are words of its
    ``vocabulary`` (the stand-in encoder's CTC labels, label = index + 1)."""
    task = get_task(name)
    if task.vocabulary is None:
        raise ValueError(f"task {name!r} has no response vocabulary: the demo trains on a task that sets one")
    return task


@dataclass
class DemoConfig:
    out_dir: str = "runs/demo"
    seed: int = 0
    task: str = "notes"
    train_clips: int = 1500
    heldout_clips: int = 100
    standin_seconds: float = 30.0
    standin_steps: int | None = None  # a fixed step count instead (then standin_seconds does not stop it)
    stage1_steps: int = 250
    stage2_steps: int = 1800
    batch_size: int = 32
    stage1_lr: float = 3e-3
    stage2_lr: float = 3e-3
    eval_batch_size: int = 50
    model: dict = field(default_factory=lambda: dict(DEMO_MODEL))
    # the speech run after the notes run (None: no speech run); its own counts, same model and recipe
    speech: dict | None = field(default_factory=lambda: dict(SPEECH_RUN))

    @classmethod
    def quick(cls, **kwargs) -> DemoConfig:
        counts = dict(train_clips=64, heldout_clips=8, standin_seconds=3.0, stage1_steps=3, stage2_steps=4)
        cfg = cls(**counts, batch_size=8, eval_batch_size=8, **kwargs)
        if cfg.speech:
            cfg.speech = {**cfg.speech, **counts, "train_clips": 16, "heldout_clips": 4, "standin_steps": 2}
        return cfg

    def speech_config(self) -> DemoConfig | None:
        """The speech run's config: this one with the speech counts, task ``digits``, out ``<out>/speech``."""
        if not self.speech:
            return None
        return replace(self, task="digits", out_dir=str(Path(self.out_dir) / "speech"), speech=None, **self.speech)


# The speech run: fewer clips and steps than the notes run, to keep the main job near 10 minutes.
SPEECH_RUN = {"train_clips": 1000, "heldout_clips": 100, "standin_steps": 250, "stage1_steps": 100, "stage2_steps": 700}


def build_base_model(cfg: DemoConfig, out: Path, console: Console) -> tuple[Path, dict]:
    """Tiny model whose audio tower is the fitted stand-in encoder, saved with its processor."""
    model, processor = tiny_model_and_processor(seed=cfg.seed, **cfg.model)
    stride = model.config.audio_pool_stride
    vocabulary = demo_task(cfg.task).vocabulary
    label_of = {name: i + 1 for i, name in enumerate(vocabulary)}

    def features(split: str):
        """The written clips of ``split`` (read back: what the shards hold) and their responses' labels."""
        from recipes.inference.common import read_audio

        rows = [json.loads(line) for line in (out / "data" / f"{split}.jsonl").read_text().splitlines()]
        audio = [read_audio(out / "data" / r["audio"]) for r in rows]
        inputs = extract_features(processor.prepare_audio(audio, SAMPLING_RATE), processor.mel)
        return inputs, [[label_of[w] for w in r["response"].split()] for r in rows]

    train_feats, train_targets = features("train")
    test_feats, test_targets = features("heldout")
    budget = f"{cfg.standin_seconds:g} s" if cfg.standin_steps is None else f"{cfg.standin_steps} steps"
    console.print(f"[bold]2/6[/bold] stand-in encoder: CTC on {cfg.train_clips} clips for {budget}")
    fit = pretrain_standin_encoder(
        model.audio_tower,
        train_feats["input_features"],
        train_feats["input_features_mask"],
        train_targets,
        num_classes=len(vocabulary),
        pool_stride=stride,
        seed=cfg.seed,
        **(
            {"max_seconds": cfg.standin_seconds}
            if cfg.standin_steps is None
            else {"max_steps": cfg.standin_steps, "max_seconds": float("inf")}
        ),
    )
    ctc_em = ctc_exact_match(
        model.audio_tower,
        fit["head"],
        test_feats["input_features"],
        test_feats["input_features_mask"],
        test_targets,
        pool_stride=stride,
    )
    console.print(f"    {fit['steps']} steps, CTC loss {fit['losses'][-1]:.3f}, held-out CTC exact match {ctc_em:.0%}")
    base = out / "base"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    return base, {"standin_steps": fit["steps"], "standin_ctc_exact_match": ctc_em, "standin_losses": fit["losses"]}


def stage_config(cfg: DemoConfig, stage: int, base: Path, data: Path, out: Path) -> Path:
    """The tiny recipe YAML of `stage`, pointed at this run's base model, shards and folders."""
    import yaml

    from recipes.training.run_recipe import tiny_recipe_for_run

    steps, lr = (cfg.stage1_steps, cfg.stage1_lr) if stage == 1 else (cfg.stage2_steps, cfg.stage2_lr)
    init_from = None if stage == 1 else out / "stage1" / "output"
    recipe = tiny_recipe_for_run(stage, out / f"stage{stage}", base, steps, lr, checkpoints=4, init_from=init_from)
    recipe["trainer"]["val_check_interval"] = max(1, steps // 2)
    recipe["data"].update(
        train_shards=str(data / "shards" / "train-*.tar"),
        val_shards=str(data / "shards" / "heldout-*.tar"),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    recipe["seed_everything"] = cfg.seed
    path = out / f"stage{stage}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def load_heldout(data: Path) -> list[dict]:
    """Held-out clips as chat samples, read back from the FLAC files (what generate.py reads too)."""
    from recipes.inference.common import read_audio

    samples = []
    for line in (data / "heldout.jsonl").read_text().splitlines():
        entry = json.loads(line)
        audio = torch.from_numpy(read_audio(data / entry["audio"]))
        samples.append(
            {
                "key": entry["key"],
                "audio_path": str(data / entry["audio"]),
                "audio": audio,
                "prompt": entry["prompt"],
                "reference": entry["response"],
                "messages": [
                    {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": entry["prompt"]}]},
                    {"role": "assistant", "content": [{"type": "text", "text": entry["response"]}]},
                ],
            }
        )
    return samples


def synthesise(cfg: DemoConfig, data: Path) -> None:
    """Step 1: training and held-out shards (and FLAC clips + manifests) of ``cfg.task`` under ``data``, with the
    task's default options (`recipes.synthetic.tasks`)."""
    task = demo_task(cfg.task)
    write_task_dataset(task, data, cfg.train_clips, seed=cfg.seed, split="train", maxcount=500)
    write_task_dataset(task, data, cfg.heldout_clips, seed=cfg.seed + 1, split="heldout", maxcount=500)


def train_stage(cfg: DemoConfig, stage: int, base: Path, data: Path, out: Path, console: Console) -> None:
    """Steps 3-4: one stage of the real recipe through the training CLI."""
    from recipes.training import cli as train

    what = "projector + audio-token rows" if stage == 1 else "LoRA (q/k/v/o) + projector"
    steps = cfg.stage1_steps if stage == 1 else cfg.stage2_steps
    console.print(
        f"[bold]{2 + stage}/6[/bold] stage {stage}: {what}, {steps} steps (recipes/configs/tiny_stage{stage}.yaml)"
    )
    train.main(["fit", "--config", str(stage_config(cfg, stage, base, data, out))])


@dataclass
class HeldoutEval:
    """Step 5's outcome: the held-out samples, the responses with audio and with silence, and their scores."""

    samples: list[dict]
    predictions: list[str]
    baseline: list[str]
    scores: TranscriptScores
    base_scores: TranscriptScores


def evaluate_heldout(cfg: DemoConfig, final: Path, data: Path) -> HeldoutEval:
    """Step 5: generate for every held-out clip, and again with silence in place of each clip; score both."""
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor

    model = AudioVLMForConditionalGeneration.from_pretrained(str(final)).eval()
    processor = AudioVLMProcessor.from_pretrained(final)
    samples = load_heldout(data)
    references = [s["reference"] for s in samples]
    predictions = generate_responses(model, processor, samples, batch_size=cfg.eval_batch_size)
    silent = [{**s, "audio": torch.zeros_like(s["audio"])} for s in samples]
    baseline = generate_responses(model, processor, silent, batch_size=cfg.eval_batch_size)
    scores, base_scores = score_transcripts(predictions, references), score_transcripts(baseline, references)
    return HeldoutEval(samples, predictions, baseline, scores, base_scores)


def run_task(cfg: DemoConfig, console: Console) -> dict:
    """Steps 1-6 for ``cfg.task`` in ``cfg.out_dir``; returns the task's result (also written as result.json)."""
    from recipes.training.export import export

    task = demo_task(cfg.task)
    out = Path(cfg.out_dir)
    data = out / "data"
    timings: dict[str, float] = {}
    start = lap = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        timings[name] = now - lap
        lap = now

    console.rule(f"[bold]audio-vlm-adapter demo: {cfg.task}[/bold] ({task.description}; tiny model, CPU)")
    console.print(
        f"[bold]1/6[/bold] synthesising {cfg.train_clips} training + {cfg.heldout_clips} held-out clips "
        f"-> {data}/shards"
    )
    synthesise(cfg, data)
    mark("data")
    base, standin = build_base_model(cfg, out, console)
    mark("stand-in encoder")
    for stage in (1, 2):
        train_stage(cfg, stage, base, data, out, console)
        mark(f"stage {stage}")
    console.print("[bold]5/6[/bold] export (merge LoRA) and evaluate held-out clips with generate()")
    export(out / "stage2" / "output", out / "final")
    heldout = evaluate_heldout(cfg, out / "final", data)
    mark("evaluate")
    return report_task(cfg, console, standin, heldout, timings, start)


def report_task(
    cfg: DemoConfig, console: Console, standin: dict, heldout: HeldoutEval, timings: dict[str, float], start: float
) -> dict:
    """Step 6: loss curves, predictions.jsonl, the tables; the task's result, also written as result.json."""
    out = Path(cfg.out_dir)
    stage1, stage2 = train_losses(out / "stage1"), train_losses(out / "stage2")
    plot_losses(standin["standin_losses"], stage1, stage2, out / "loss.png")
    write_predictions(out / "predictions.jsonl", heldout.samples, heldout.predictions, heldout.baseline)
    console.print(examples_table(heldout.samples, heldout.predictions, heldout.baseline))
    total = time.perf_counter() - start
    scores, base_scores = heldout.scores, heldout.base_scores
    console.print(summary_table(cfg.task, total, scores, base_scores, standin, stage1, stage2, timings))
    console.print(
        f"[bold]6/6[/bold] loss curves -> {out / 'loss.png'}; merged checkpoint -> {out / 'final'}; "
        f"predictions -> {out / 'predictions.jsonl'}"
    )
    result = {
        "exact_match": scores.exact_match,
        "token_error_rate": scores.token_error_rate,
        "baseline_exact_match": base_scores.exact_match,
        "baseline_token_error_rate": base_scores.token_error_rate,
        "standin_ctc_exact_match": standin["standin_ctc_exact_match"],
        "task": cfg.task,
        "seconds": total,
        "timings": timings,
        "config": asdict(cfg),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict:
    """The notes task (the gate), then the speech task when ``cfg.speech`` is set. Returns the notes result
    with the speech result under ``"speech"`` (and the whole job's seconds); writes ``<out>/result.json``."""
    console = console or Console()
    torch.set_num_threads(2)
    start = time.perf_counter()
    result = run_task(cfg, console)
    speech_cfg = cfg.speech_config()
    if speech_cfg is not None:
        result["speech"] = run_task(speech_cfg, console)
        console.print(both_tasks_table([result, result["speech"]], time.perf_counter() - start))
    result["total_seconds"] = time.perf_counter() - start
    (Path(cfg.out_dir) / "result.json").write_text(json.dumps(result, indent=2))
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=None, help="default: runs/demo-pretrained (runs/demo with --tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks every step runs, learns little")
    parser.add_argument("--tiny", action="store_true", help="the fast job on a tiny RANDOM model (tones -> notes)")
    parser.add_argument("--speech", action="store_true", help="--tiny: add the spoken-digits run to the notes run")
    parser.add_argument("--no-speech", action="store_true", help=argparse.SUPPRESS)  # the default since 2026-12
    # the main job since 2026-12-03; the flag that asked for it then still works
    parser.add_argument("--pretrained", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parts-dir", default=None, help="where the offline pretrained parts are built (cached)")
    return parser


def tiny_config(args: argparse.Namespace) -> DemoConfig:
    """The tiny job's config from the command line: the notes run (the gate), plus speech with ``--speech``."""
    if args.speech and args.no_speech:
        raise SystemExit("--speech and --no-speech contradict each other: give one")
    kwargs = {"out_dir": args.out_dir or "runs/demo", "seed": args.seed}
    kwargs.update({} if args.speech else {"speech": None})
    return DemoConfig.quick(**kwargs) if args.quick else DemoConfig(**kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pretrained and args.tiny:
        parser.error("--pretrained and --tiny are two different jobs: give one (the pretrained job is the default)")
    if (args.speech or args.no_speech) and not args.tiny:
        parser.error("--speech / --no-speech belong to the tiny job: add --tiny (the pretrained job is all speech)")
    if not args.tiny:
        from recipes.demo.hear import HearConfig, run_hear

        kwargs = {"out_dir": args.out_dir or "runs/demo-pretrained", "seed": args.seed, "parts_dir": args.parts_dir}
        hear = run_hear(HearConfig.quick(**kwargs) if args.quick else HearConfig(**kwargs))
        return 0 if args.quick or hear["passed"] else 1
    result = run_demo(tiny_config(args))
    return 0 if args.quick or passed(result) else 1


def passed(result: dict) -> bool:
    """The main job's bar: notes held-out exact match >= 90 %; speech (when run) word error rate at most a third
    of the silence baseline's (the model must be hearing the digits, not guessing them)."""
    speech = result.get("speech")
    heard = speech is None or speech["token_error_rate"] <= speech["baseline_token_error_rate"] / 3
    return result["exact_match"] >= 0.9 and heard


if __name__ == "__main__":
    sys.exit(main())
