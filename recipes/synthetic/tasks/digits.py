"""Task ``digits``: 3-5 spoken digits (eSpeak NG, offline, varied voices) -> the digits ("3 7 1")."""

from __future__ import annotations

from recipes.synthetic.tasks.base import Option, SyntheticTask


class Digits(SyntheticTask):
    description = "3-5 spoken digits (eSpeak NG) -> the digits"
    vocabulary = tuple("0123456789")
    options = (
        Option("min_digits", int, 3, "fewest digits per clip"),
        Option("max_digits", int, 5, "most digits per clip"),
    )

    def sample(self, seed: int, index: int, **options) -> dict:
        from recipes.synthetic.speech import digits_sample  # the synthesiser only when speech is made

        return digits_sample(seed, index, options["min_digits"], options["max_digits"])

    def entry_fields(self, sample: dict) -> dict:
        from recipes.synthetic.speech import digits_entry_fields

        return digits_entry_fields(sample)
