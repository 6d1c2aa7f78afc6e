"""The language model's own answers to TYPED questions: the targets of the spoken questions (self-distillation)
and the reference their spoken answers are scored against."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recipes.common.progress import Heartbeat


def typed_prompt(processor, question: str) -> str:
    """The chat prompt of ``question`` typed: the user turn holds the text alone (what the text twin of a spoken
    question holds in place of its audio span), then the generation prompt."""
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@torch.no_grad()
def typed_answers(
    model, processor, questions: Sequence[str], max_new_tokens: int = 16, batch_size: int = 32
) -> list[str]:
    """Greedy answers of ``model`` (an audio model used text-only, before any training: the language model as
    it ships) to each typed question, special tokens stripped, in order. At most ``max_new_tokens`` tokens: a
    longer answer is cut there (its spoken twin is generated with the same limit)."""
    model.eval()
    unique = sorted(set(questions))
    answers: dict[str, str] = {}
    with Heartbeat("typed answers", len(unique), unit="question") as beat:
        for start in range(0, len(unique), batch_size):
            chunk = unique[start : start + batch_size]
            inputs = processor(text=[typed_prompt(processor, q) for q in chunk], padding=True, return_tensors="pt")
            inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "mm_token_type_ids")}
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            answers.update({q: t.strip() for q, t in zip(chunk, texts)})
            beat.update(len(answers))
    return [answers[q] for q in questions]
