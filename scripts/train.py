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

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from recipes.data.skips import NoDataError  # noqa: E402
from recipes.training.checkpointing import CheckpointDamagedError  # noqa: E402
from recipes.training.cli import main  # noqa: E402  (scripts.train.main: the CLI, also called in-process)

if __name__ == "__main__":
    try:
        main()
    except (NoDataError, CheckpointDamagedError) as exc:  # a clear message, not a stack dump
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
