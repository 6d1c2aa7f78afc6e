"""Task ``mcqa``: four-choice questions about the notes played (how many, first, last, highest, lowest), in
the layout `scripts.eval_mcqa` reads, with the lettered prompt/response form for training."""

from __future__ import annotations

from recipes.synthetic.datasets import mcqa_sample, notes_mcqa_entry_fields
from recipes.synthetic.tasks.base import SyntheticTask
from recipes.synthetic.tasks.notes import NOTES_OPTIONS, notes_config


class NotesMCQA(SyntheticTask):
    description = "four-choice questions about the notes (count / first / last / highest / lowest)"
    default_split = "mcqa"
    options = NOTES_OPTIONS

    def sample(self, seed: int, index: int, **options) -> dict:
        return mcqa_sample(seed, index, notes_config(options))

    def entry_fields(self, sample: dict) -> dict:
        return notes_mcqa_entry_fields(sample)
