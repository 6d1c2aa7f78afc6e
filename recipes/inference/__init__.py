"""What the inference CLIs share: load a checkpoint folder, read audio, prompts, extension."""
