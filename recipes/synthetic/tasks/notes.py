"""Task ``notes``: 3-6 pure tones (C4..C5) -> their names in playing order ("C4 E4 G4 A4")."""

from __future__ import annotations

from audio_adapter.encoders.whisper import SAMPLING_RATE
from recipes.synthetic.datasets import NOTE_NAMES, NotesConfig, notes_entry_fields, notes_sample
from recipes.synthetic.tasks.base import Option, SyntheticTask

# the notes clips' settings (`recipes.synthetic.datasets.NotesConfig`), shared with the `mcqa` task
NOTES_OPTIONS = (
    Option("sampling_rate", int, SAMPLING_RATE, "sampling rate of the clips"),
    Option("min_notes", int, 3, "fewest notes per clip"),
    Option("max_notes", int, 6, "most notes per clip"),
    Option("long_seconds", float, None, "make every clip at least this long (noise-only gaps)"),
    Option("noise", float, 0.005, "noise amplitude"),
)


def notes_config(options: dict) -> NotesConfig:
    return NotesConfig(**{o.name: options[o.name] for o in NOTES_OPTIONS})


class Notes(SyntheticTask):
    description = "3-6 pure tones -> their note names"
    vocabulary = NOTE_NAMES
    options = NOTES_OPTIONS

    def sample(self, seed: int, index: int, **options) -> dict:
        return notes_sample(seed, index, notes_config(options))

    def entry_fields(self, sample: dict) -> dict:
        return notes_entry_fields(sample)
