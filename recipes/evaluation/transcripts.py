"""Held-out evaluation by generation: exact match and token error rate of generated transcripts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..common.progress import Heartbeat
from ..data.collate import AudioCollator, model_inputs


def edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitutions, insertions, deletions cost 1)."""
    previous = list(range(len(reference) + 1))
    for i, hyp_token in enumerate(hypothesis, start=1):
        current = [i] + [0] * len(reference)
        for j, ref_token in enumerate(reference, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (hyp_token != ref_token))
        previous = current
    return previous[-1]


@dataclass
class TranscriptScores:
    exact_match: float  # fraction of clips whose whole transcript is right
    token_error_rate: float  # word-level edit distance / reference words, over all clips
    n: int


def score_transcripts(predictions: Sequence[str], references: Sequence[str]) -> TranscriptScores:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no references to score")
    exact = sum(p.split() == r.split() for p, r in zip(predictions, references))
    errors = sum(edit_distance(p.split(), r.split()) for p, r in zip(predictions, references))
    words = sum(len(r.split()) for r in references)
    return TranscriptScores(exact / len(references), errors / max(1, words), len(references))


@torch.no_grad()
def generate_responses(
    model,
    processor,
    samples: Sequence[dict],
    batch_size: int = 32,
    max_new_tokens: int = 32,
    progress=None,
) -> list[str]:
    """Greedy, cached, left-padded batched generation for chat samples.

    Args:
        samples: dicts with ``audio`` (16 kHz mono tensor/array) and ``messages`` (the user turn; an assistant
            turn, if present, is dropped by the generation collator).
        progress: optional callable(n_done) after each batch.
    Returns:
        the decoded responses, in sample order, special tokens stripped.
    """
    collate = AudioCollator(processor, padding_side="left", for_generation=True)
    model.eval()
    responses: list[str] = []
    with Heartbeat("evaluate", len(samples), unit="clip") as beat:
        for start in range(0, len(samples), batch_size):
            responses += _generate_batch(model, processor, collate, samples[start : start + batch_size], max_new_tokens)
            beat.update(len(responses))
            if progress is not None:
                progress(len(responses))
    return responses


def _generate_batch(model, processor, collate, samples: Sequence[dict], max_new_tokens: int) -> list[str]:
    """Greedy responses of one batch of samples."""
    batch = collate(list(samples))
    inputs = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in model_inputs(batch, False).items()}
    generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = generated[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
