"""The Lightning module, what model to build, optimizer, checkpoints, exact resume."""
