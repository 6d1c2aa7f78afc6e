"""Benchmark: peak resident memory of the demo's stage 2 and of `generate()` on a 10-minute clip.

Each job runs in a fresh subprocess; its memory is sampled every 20 ms (psutil, the process and all its
children, e.g. DataLoader workers, summed) and its own peak is read from the kernel when it exits
(`wait4` ru_maxrss), so a regression in either shows as a larger figure. Memory, unlike time, barely moves
with the machine's load, so absolute MiB are meaningful here; they still depend on the torch build and the
allocator, so compare figures taken on one machine.

1. stage 2: `scripts/train.py fit` with `recipes/configs/tiny_stage2.yaml` (LoRA r 8 on q/k/v/o + projector,
   batch 16, one data worker), pointed at freshly synthesised notes shards, `--steps` steps, no stage-1
   projector (memory does not depend on its values).
2. generate: the tiny model, a `--minutes`-long clip (20 windows of 30 s for 10 minutes: 30,000 audio tokens),
   greedy, 8 new tokens; also the resident memory just before `generate()`, so the call's own share shows.

    nice -n 10 python -m scripts.bench.memory
    python -m scripts.bench.memory --quick      # smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]

GENERATE_JOB = """
import json, resource, sys, torch
torch.set_num_threads(1)
from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.testing import tiny_model_and_processor
minutes, new = float(sys.argv[1]), int(sys.argv[2])
model, processor = tiny_model_and_processor(seed=0)
t = torch.arange(int(minutes * 60 * SAMPLING_RATE)) / SAMPLING_RATE
clip = 0.3 * torch.sin(2 * torch.pi * 330.0 * t)
prompt = processor.apply_chat_template(
    [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Summarise."}]}],
    add_generation_prompt=True,
)
inputs = processor(text=[prompt], audio=[clip], sampling_rate=SAMPLING_RATE)
del clip, t
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import psutil
rss_before = psutil.Process().memory_info().rss
with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
print(json.dumps({"audio_tokens": int((inputs["input_ids"] == model.config.audio_token_id).sum()),
                  "windows": int(inputs["input_features"].shape[0]), "rss_before_generate": rss_before,
                  "new_tokens": int(out.shape[1] - inputs["input_ids"].shape[1])}))
"""


def run_sampled(cmd: list[str], cwd: Path, env: dict) -> tuple[int, int, str]:
    """Run `cmd`; -> (peak summed RSS of the process tree in bytes, the process's own peak RSS, stdout)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                total = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout_chunks = []
    stderr_chunks = []
    readers = [
        threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
        for s, b in ((proc.stdout, stdout_chunks), (proc.stderr, stderr_chunks))
    ]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    for r in readers:
        r.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(stderr_chunks)[-3000:]}")
    return peak, usage.ru_maxrss * 1024, "".join(stdout_chunks)


def stage2_config(tmp: Path, steps: int, clips: int) -> Path:
    import yaml

    from recipes.synthetic.datasets import make_notes_dataset

    make_notes_dataset(tmp / "data", clips, seed=0, split="train", maxcount=max(4, clips // 4))
    make_notes_dataset(tmp / "data", max(4, clips // 8), seed=1, split="val", maxcount=16)
    recipe = yaml.safe_load((ROOT / "recipes" / "configs" / "tiny_stage2.yaml").read_text())
    trainer, model, data = recipe["trainer"], recipe["model"], recipe["data"]
    trainer.update(
        max_steps=steps,
        val_check_interval=steps,
        default_root_dir=str(tmp / "run"),
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    model.update(init_from=None, output_dir=str(tmp / "run" / "output"))
    data.update(
        train_shards=str(tmp / "data" / "shards" / "train-*.tar"), val_shards=str(tmp / "data" / "shards" / "val-*.tar")
    )
    path = tmp / "stage2.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="stage-2 training steps")
    parser.add_argument("--clips", type=int, default=160, help="synthetic training clips")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the generate() clip")
    parser.add_argument("--quick", action="store_true", help="smoke size: 1 step, 8 clips, a 15 s clip")
    parser.add_argument("--job", choices=("all", "stage2", "generate"), default="all", help="which job to measure")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.clips, args.minutes = 1, 8, 0.25

    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    table = Table(title="peak resident memory (MiB)")
    for col in ("job", "process tree peak (sampled)", "main process peak (kernel)", "note"):
        table.add_column(col)
    if args.job in ("all", "stage2"):
        table.add_row(*stage2_row(args, env))
    if args.job in ("all", "generate"):
        table.add_row(*generate_row(args, env))
    console.print(table)
    return 0


def stage2_row(args: argparse.Namespace, env: dict) -> tuple[str, ...]:
    mib = 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        config = stage2_config(Path(tmp), args.steps, args.clips)
        tree, own, _ = run_sampled([sys.executable, "-m", "scripts.train", "fit", "--config", str(config)], ROOT, env)
    return (
        f"stage 2 (tiny_stage2.yaml, {args.steps} steps)",
        f"{tree / mib:.0f}",
        f"{own / mib:.0f}",
        "main process + 1 data worker",
    )


def generate_row(args: argparse.Namespace, env: dict) -> tuple[str, ...]:
    mib = 1024 * 1024
    tree, own, out = run_sampled([sys.executable, "-c", GENERATE_JOB, str(args.minutes), "8"], ROOT, env)
    info = json.loads(out.strip().splitlines()[-1])
    return (
        f"generate(), {args.minutes:g}-minute clip ({info['audio_tokens']} audio tokens, {info['windows']} windows)",
        f"{tree / mib:.0f}",
        f"{own / mib:.0f}",
        f"{(own - info['rss_before_generate']) / mib:.0f} MiB above the RSS just before generate()",
    )


if __name__ == "__main__":
    raise SystemExit(main())
