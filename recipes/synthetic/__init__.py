"""Synthetic training data: tone tasks, spoken tasks (eSpeak NG), the task registry."""
