"""Task ``speech-mcqa``: spoken word sequences from seconds to minutes long, with four-choice questions (which
word came right after X / first / last), in the layout `scripts.eval_mcqa` reads."""

from __future__ import annotations

from recipes.synthetic.tasks.base import Option, SyntheticTask


class SpeechMCQA(SyntheticTask):
    description = "long spoken word sequences with four-choice questions (after X / first / last)"
    default_split = "speech_mcqa"
    options = (
        Option("min_seconds", float, 5.0, "shortest recording (approximate)"),
        Option("max_seconds", float, 60.0, "longest recording (approximate)"),
    )

    def sample(self, seed: int, index: int, **options) -> dict:
        from recipes.synthetic.speech import speech_mcqa_sample

        return speech_mcqa_sample(seed, index, options["min_seconds"], options["max_seconds"])

    def entry_fields(self, sample: dict) -> dict:
        from recipes.synthetic.speech import speech_mcqa_entry_fields

        return speech_mcqa_entry_fields(sample)
