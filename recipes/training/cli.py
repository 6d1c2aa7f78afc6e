"""The training CLI (LightningCLI) over `AudioVLMLightningModule` and `AudioShardDataModule`: `scripts.train` runs it,
the demo calls it in-process. Unless the recipe says otherwise it adds a Rich progress bar and the atomic checkpoint
writer."""

from __future__ import annotations

import warnings

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from recipes.data.datamodule import AudioShardDataModule
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
    """Parse ``args`` (default: the command line) and, with ``run``, run the subcommand (``fit`` ...)."""
    return AudioVLMCLI(
        AudioVLMLightningModule,
        AudioShardDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )
