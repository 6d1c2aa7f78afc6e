"""Step 2 of `scripts.longform`: the runs (vanilla, VLAT, the VLAT mix), each trained on short recordings only
and saved as ``models/<name>.pt`` (a re-run loads it), and the check that evaluations reach untrained positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console

from recipes.longform.cache import new_model, progress_bar, save_torch
from recipes.longform.task import ITEMS_PER_WINDOW, TOKENS_PER_ITEM, TaskTokens, TrainPool, TrainSettings, train_lm

if TYPE_CHECKING:
    from recipes.longform.config import LongformConfig


def run_specs(cfg: LongformConfig) -> list[dict]:
    """Every run of ``cfg``: name, kind, seed, VLAT strategy (None: vanilla), steps (and the VLAT mix's raw share)."""
    runs = [
        {"name": f"vanilla_s{s}", "kind": "vanilla", "seed": s, "vlat": None, "steps": cfg.steps}
        for s in cfg.vanilla_seeds
    ]
    runs += [
        {"name": f"vlat_s{s}", "kind": "vlat", "seed": s, "vlat": cfg.vlat_strategy, "steps": cfg.vlat_steps}
        for s in cfg.vlat_seeds
    ]
    runs += [
        {
            "name": f"vlatmix_s{s}",
            "kind": "vlat_mix",
            "seed": s,
            "vlat": cfg.vlat_strategy,
            "steps": cfg.vlat_steps,
            "raw_share": cfg.vlat_raw_share,
        }
        for s in cfg.vlat_mix_seeds
    ]
    return runs


def _train(cfg: LongformConfig, run: dict, model, processor, cache: dict, console: Console) -> dict:
    """Train ``model`` on the cached training pool; the run's log (losses thinned to about 300 points)."""
    pool = TrainPool(cache["pool"]["frames"], cache["pool"]["items"])
    settings = TrainSettings(
        steps=run["steps"],
        batch_size=cfg.batch_size,
        vlat_strategy=run["vlat"],
        seed=run["seed"],
        vlat_raw_share=run.get("raw_share", 0.0),
    )
    tokens = TaskTokens.build(model, processor.tokenizer)
    with progress_bar(console) as progress:
        task = progress.add_task(f"train {run['name']}", total=settings.steps)
        log = train_lm(
            model,
            tokens,
            pool,
            settings,
            progress=lambda step, loss, acc: progress.update(
                task, completed=step, description=f"train {run['name']} loss {loss:.3f}"
            ),
        )
    tail = log["accuracies"][-100:]
    log = {
        "seconds": log["seconds"],
        "max_position": log["max_position"],
        "final_train_accuracy": sum(tail) / len(tail),
        "losses": log["losses"][:: max(1, len(log["losses"]) // 300)],
    }
    console.print(
        f"    {run['name']}: {settings.steps} steps in {log['seconds']:.0f} s, train accuracy (last 100) "
        f"{log['final_train_accuracy']:.2f}, largest training position {log['max_position']}"
    )
    return log


def trained_model(cfg: LongformConfig, run: dict, cache: dict, out: Path, console: Console):
    """The run's model: trained now, or loaded from ``models/<name>.pt`` when an earlier run finished it."""
    model, processor = new_model(cfg, run["seed"], cache["encoder"])
    path = out / "models" / f"{run['name']}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)  # tensors and plain values only: no pickled code runs
        model.load_state_dict(saved["state"], strict=False)
        console.print(f"    {run['name']}: loaded {path}")
        return model, processor, saved["log"]
    log = _train(cfg, run, model, processor, cache, console)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("audio_tower")}
    save_torch({"state": state, "log": log}, path)
    return model, processor, log


def check_positions(cfg: LongformConfig, tokens: TaskTokens, log: dict, run: dict) -> dict:
    """The extrapolation guarantee: every evaluation longer than T reaches raw positions no training prompt had."""
    reach = {n: tokens.length(n * TOKENS_PER_ITEM) - 1 for n in cfg.eval_items}
    if run["kind"] == "vanilla":
        too_short = [n for n in cfg.eval_items if n > ITEMS_PER_WINDOW and reach[n] <= log["max_position"]]
        if too_short:
            raise RuntimeError(
                f"eval lengths {too_short} do not reach past the trained positions ({log['max_position']})"
            )
    return reach
