"""Synthetic data tasks: one file per task here, one line per task in `TASKS`.

`scripts.make_synthetic` offers every registered task as a subcommand (its options from the task's
``options``), and `scripts.demo` trains on any task with a ``vocabulary``. A new task is a file with a
`SyntheticTask` subclass (``sample``, ``entry_fields``, and optionally ``options``, ``default_split``,
``vocabulary``) plus its line below; nothing else changes. Entries are ``"module:Class"`` import paths,
imported only when the task is used (a speech task pulls in the synthesiser).
"""

from __future__ import annotations

import importlib

from recipes.synthetic.tasks.base import Option, SyntheticTask, write_task_dataset

TASKS: dict[str, str] = {
    "notes": "recipes.synthetic.tasks.notes:Notes",
    "mcqa": "recipes.synthetic.tasks.mcqa:NotesMCQA",
    "digits": "recipes.synthetic.tasks.digits:Digits",
    "speech-mcqa": "recipes.synthetic.tasks.speech_mcqa:SpeechMCQA",
}


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> SyntheticTask:
    """The registered task ``name`` (a fresh instance)."""
    if name not in TASKS:
        raise ValueError(
            f"unknown synthetic task {name!r}; registered tasks: {task_names()} (recipes.synthetic.tasks.TASKS)"
        )
    module_name, _, class_name = TASKS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, SyntheticTask)):
        raise TypeError(f"recipes.synthetic.tasks.TASKS[{name!r}] = {TASKS[name]!r} is not a SyntheticTask subclass")
    return cls()


__all__ = ["TASKS", "Option", "SyntheticTask", "get_task", "task_names", "write_task_dataset"]
