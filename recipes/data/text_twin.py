"""The text twin of a training batch: each sample's token row with its audio span replaced by its transcript.

A loss that reads the transcript in place of the audio (`recipes.losses.TextTeacherKL`: the frozen language
model as a teacher) needs, next to the student's row::

    student  <|im_start|>user\\n <|audio_bos|> <|AUDIO|> x n <|audio_eos|> Which notes ...? <|im_end|> ... response
    twin     <|im_start|>user\\n t_1 ... t_m                                 Which notes ...? <|im_end|> ... response

where ``t_1..t_m`` are the transcript's own tokens (tokenised alone, so the prompt's tokens are the student's,
and a transcript can never merge with its neighbours). The labels move with their tokens: the twin's response
tokens are the student's, at positions shifted by ``m - (n + 2)``, so gathering each row's logits by its label
mask lines the two up (`recipes.losses.teacher.response_logits`). Images stay where they are (same
``pixel_values``). The audio markers are dropped too: the teacher is the language model on text alone.

`TextTwin` is used by `recipes.data.collate.AudioCollator` (``text_twin=True``): samples without a transcript are
dropped from the batch and counted (``no_transcript``) in the counter it is given (the data set's, so the
counts travel with the batches like every other skip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .samples import IGNORE_INDEX, sample_transcript
from .skips import SkipCounter, SkipReason

TEXT_TWIN_KEY = "text_twin"  # batch[TEXT_TWIN_KEY]: {"input_ids", "attention_mask", "labels", "mm_token_type_ids"}


def transcript_of(sample: dict) -> str | None:
    """A decoded sample's transcript: ``sample["transcript"]`` or the JSON's, kept in ``sample["meta"]``."""
    if "transcript" in sample:
        return sample_transcript(sample)
    return sample_transcript(sample.get("meta") or {})


class TextTwin:
    """Builds ``batch["text_twin"]`` (see the module docstring) for a collator.

    Args:
        tokenizer: the processor's tokenizer (pad token, audio marker ids, transcript tokens).
        padding_side: the collator's.
        skip_counter: where a sample without a transcript is counted (``no_transcript``); a private one if None.
    """

    def __init__(self, tokenizer, padding_side: str = "right", skip_counter: SkipCounter | None = None):
        self.tokenizer = tokenizer
        self.padding_side = padding_side
        self.skip_counter = skip_counter if skip_counter is not None else SkipCounter(name="text_twin")
        self.bos_id = tokenizer.convert_tokens_to_ids("<|audio_bos|>")
        self.eos_id = tokenizer.convert_tokens_to_ids("<|audio_eos|>")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def split(self, samples: Sequence[dict]) -> tuple[list[dict], list[dict]]:
        """(samples with a transcript, samples without one). A malformed transcript raises `SampleSkipped`."""
        kept, missing = [], []
        for s in samples:
            (kept if transcript_of(s) is not None else missing).append(s)
        return kept, missing

    def count_missing(self, missing: Sequence[dict]) -> None:
        for s in missing:
            self.skip_counter.add(SkipReason.NO_TRANSCRIPT, key=s.get("key"), url=s.get("url"))

    def _row(self, ids: list[int], labels: list[int], types: list[int], transcript: str) -> tuple[list, list, list]:
        if ids.count(self.bos_id) != 1 or ids.count(self.eos_id) != 1:
            raise ValueError(f"the text twin needs exactly one audio span per sample, found {ids.count(self.bos_id)}")
        b, e = ids.index(self.bos_id), ids.index(self.eos_id)
        text = self.tokenizer(transcript, add_special_tokens=False)["input_ids"]
        m = len(text)
        return (
            ids[:b] + list(text) + ids[e + 1 :],
            labels[:b] + [IGNORE_INDEX] * m + labels[e + 1 :],
            types[:b] + [0] * m + types[e + 1 :],
        )

    def build(self, batch: dict[str, Any], samples: Sequence[dict]) -> dict[str, torch.Tensor]:
        """The twin of a collated training ``batch`` of ``samples`` (all with a transcript):
        ``input_ids`` / ``attention_mask`` / ``labels`` / ``mm_token_type_ids``, each (B, L_twin), padded on
        the collator's side."""
        rows = []
        for r, s in enumerate(samples):
            real = batch["attention_mask"][r].bool()
            ids, labels = batch["input_ids"][r][real].tolist(), batch["labels"][r][real].tolist()
            types = batch["mm_token_type_ids"][r][real].tolist()
            rows.append(self._row(ids, labels, types, transcript_of(s)))
        width = max(len(ids) for ids, _, _ in rows)
        out = {
            "input_ids": torch.full((len(rows), width), self.pad_id, dtype=batch["input_ids"].dtype),
            "attention_mask": torch.zeros((len(rows), width), dtype=batch["attention_mask"].dtype),
            "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=batch["labels"].dtype),
            "mm_token_type_ids": torch.zeros((len(rows), width), dtype=batch["mm_token_type_ids"].dtype),
        }
        for r, (ids, labels, types) in enumerate(rows):
            n = len(ids)
            at = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            out["input_ids"][r, at] = torch.tensor(ids)
            out["attention_mask"][r, at] = 1
            out["labels"][r, at] = torch.tensor(labels)
            out["mm_token_type_ids"][r, at] = torch.tensor(types)
        return out
