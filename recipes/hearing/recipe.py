"""The stage recipes of the pretrained main job: the tiny stage YAMLs (recipes/configs/tiny_stage{1,2}.yaml), as
`scripts.demo` uses them, pointed at the assembled pretrained folder, this run's shards and folders.

Changed from the tiny recipes, and why: ``model`` is the assembled folder (float32: no fast bf16 matmul on an
AVX2 CPU); no validation pass (held-out clips are scored by generation afterwards, and a validation pass costs
minutes here); the frozen encoder's output is cached per clip (``encoder_cache``: the runs of one job share
it); the step counts, learning rate, batch size and loss are the job's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from recipes.training.run_recipe import tiny_recipe_for_run

TEXT_TEACHER_KL = {"class_path": "recipes.losses.TextTeacherKL", "init_args": {"temperature": 1.0, "weight": 1.0}}


@dataclass(frozen=True)
class StageRun:
    """One training run of a stage: ``stage`` 1 or 2, its ``steps``, ``lr`` and ``loss`` (None: cross-entropy)."""

    name: str
    stage: int
    steps: int
    lr: float
    loss: dict | None = None
    init_from: str | None = None  # the name of the run whose output this one starts from
    shards: str = "train"  # the split of the job's shards it trains on (data/shards/<shards>-*.tar)


def stage_recipe(
    run: StageRun, base: Path, shards: str, out: Path, batch_size: int, seed: int, num_workers: int = 1
) -> dict:
    """The recipe dict of ``run`` (see the module docstring); its folders are under ``out / run.name``.
    ``num_workers``: data-loading processes (0: in the training process, no start-up cost; the smoke run)."""
    init_from = None if run.init_from is None else out / run.init_from / "output"
    recipe = tiny_recipe_for_run(run.stage, out / run.name, base, run.steps, run.lr, checkpoints=2, init_from=init_from)
    trainer, model, data = recipe["trainer"], recipe["model"], recipe["data"]
    trainer.update(limit_val_batches=0, num_sanity_val_steps=0, val_check_interval=run.steps, log_every_n_steps=1)
    model.update(
        dtype="float32", warmup_steps=max(1, run.steps // 10),
        loss=run.loss or {"class_path": "recipes.losses.CrossEntropy"}, encoder_cache=True,
    )  # fmt: skip
    data.update(train_shards=shards, val_shards=shards, batch_size=batch_size, seed=seed, shuffle_buffer=512)
    data["num_workers"] = num_workers
    recipe["seed_everything"] = seed
    return recipe


def write_stage_recipe(run: StageRun, base: Path, shards: str, out: Path, **settings) -> Path:
    """`stage_recipe` (``settings``: its keyword arguments) written as ``out/<run.name>.yaml``; returns the path
    (for ``scripts.train fit --config``)."""
    path = out / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(stage_recipe(run, base, shards, out, **settings), sort_keys=False))
    return path
