"""A stage's tiny recipe (recipes/configs/tiny_stage{1,2}.yaml) pointed at one run's folders: what both demo jobs
(`scripts.demo`'s tiny job and the pretrained one, `recipes.hearing.recipe`) train with through the training CLI.
Each job then sets the fields in which it differs (data, validation, loss)."""

from __future__ import annotations

from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parent.parent / "configs"


def tiny_recipe_for_run(
    stage: int, run_dir: Path, base: Path, steps: int, lr: float, checkpoints: int, init_from: Path | None = None
) -> dict:
    """The tiny stage-``stage`` recipe dict training ``base`` for ``steps`` steps at ``lr``; its logs, checkpoints
    (``checkpoints`` of them over the run) and output folder under ``run_dir``; ``init_from``: the output folder
    of the run it starts from (stage 2). The tiny-model keys (``tiny_overrides``, ``tiny_seed``) are dropped:
    ``base`` is a saved model folder."""
    recipe = yaml.safe_load((RECIPES / f"tiny_stage{stage}.yaml").read_text())
    trainer, model = recipe["trainer"], recipe["model"]
    trainer.update(max_steps=steps, default_root_dir=str(run_dir))
    trainer["logger"]["init_args"]["save_dir"] = str(run_dir)
    for callback in trainer.get("callbacks", []):
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["dirpath"] = str(run_dir / "checkpoints")
            callback["init_args"]["every_n_train_steps"] = max(1, steps // checkpoints)
    for key in ("tiny_overrides", "tiny_seed", "init_from"):
        model.pop(key, None)
    model.update(model=str(base), lr=lr, output_dir=str(run_dir / "output"))
    if init_from is not None:
        model["init_from"] = str(init_from)
    return recipe
