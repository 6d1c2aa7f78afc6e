"""Training entry point (LightningCLI): stage 1 / stage 2 of the audio adapter from a YAML recipe.

    python -m scripts.train fit --config recipes/configs/tiny_stage1.yaml
    python -m scripts.train fit --config recipes/configs/tiny_stage2.yaml
    python -m scripts.train fit --config recipes/configs/tiny_stage2.yaml --ckpt_path last    # resume
    python -m scripts.train fit --config recipes/configs/qwen2vl7b_stage1.yaml --print_config # check a recipe

Every option of `recipes.training.module.AudioVLMLightningModule` (``model.*``),
`recipes.data.datamodule.AudioShardDataModule` (``data.*``) and ``lightning.pytorch.Trainer`` (``trainer.*``) can be set
in the YAML or on the command line. Multi-GPU / multi-node runs only change ``trainer.strategy`` / ``devices`` /
``num_nodes`` (DDP, FSDP). Unless the recipe says otherwise, the CLI adds a Rich progress bar and the atomic checkpoint
writer (`recipes.training.checkpointing.AtomicCheckpointIO`). A run whose training data yields no sample, or whose
checkpoint to resume from is damaged with no readable one beside it, exits with status 1 and a one-paragraph message.
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from jsonargparse import Namespace  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402

from recipes.data.datamodule import AudioShardDataModule
from recipes.data.skips import NoDataError  # noqa: E402
from recipes.training.checkpointing import CheckpointDamagedError  # noqa: E402
from recipes.training.module import AudioVLMLightningModule

# The frozen Whisper encoder and vision tower are kept in eval mode on purpose.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")

PROGRESS_BARS = ("RichProgressBar", "TQDMProgressBar", "ProgressBar")


def _class_name(item) -> str:
    if isinstance(item, (dict, Namespace)):
        path = item.get("class_path") if isinstance(item, dict) else getattr(item, "class_path", "")
        return str(path or "").rsplit(".", 1)[-1]
    return type(item).__name__


class AudioVLMCLI(LightningCLI):
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        callbacks = list(trainer.callbacks or [])
        if trainer.enable_progress_bar is not False and not any(_class_name(c) in PROGRESS_BARS for c in callbacks):
            callbacks.append(Namespace(class_path="lightning.pytorch.callbacks.RichProgressBar", init_args=Namespace()))
        trainer.callbacks = callbacks
        plugins = trainer.plugins
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        if not any("CheckpointIO" in _class_name(p) for p in plugins):
            plugins.append(
                Namespace(class_path="recipes.training.checkpointing.AtomicCheckpointIO", init_args=Namespace())
            )
        trainer.plugins = plugins


def main(args: list[str] | None = None, run: bool = True) -> AudioVLMCLI:
    return AudioVLMCLI(
        AudioVLMLightningModule,
        AudioShardDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    try:
        main()
    except (NoDataError, CheckpointDamagedError) as exc:  # a clear message, not a stack dump
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
