"""Decoded samples -> model batches: chat template, processor (log-mel, placeholder expansion, tokenising),
labels on the assistant turns only, padding (`AudioCollator`); `model_inputs` keeps the model's arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from audio_adapter.encoders.whisper import SAMPLING_RATE

from .samples import IGNORE_INDEX, message_text


# ======================================================================================= collation
class AudioCollator:
    """Decoded samples -> a model batch.

    Each sample: ``{"key": str, "audio": 16 kHz mono (T,) tensor/array, "messages": [...], "image": PIL | None}``.
    Training mode renders the whole conversation and sets ``labels`` to the assistant turns' tokens (content +
    closing ``<|im_end|>``; aligned with ``input_ids``, the model shifts), -100 elsewhere and on padding.
    Generation mode (``for_generation=True``) renders the conversation up to the last assistant turn with the
    generation prompt and returns that turn's text as ``references``. ``padding_side``: ``"right"`` for
    training, ``"left"`` for generation (default follows the mode).

    Returns ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``input_features`` (chunks of all clips,
    in sample order), ``input_features_mask``, ``audio_chunk_counts`` (B,), ``audio_token_counts`` (B,),
    ``labels`` (training), ``pixel_values`` + ``image_grid_thw`` (when a sample has an image), ``keys``,
    ``references`` (generation). Use `model_inputs(batch)` to keep only the model's keyword arguments.

    ``text_twin=True`` (training, for a loss that reads transcripts) adds ``batch["text_twin"]`` and drops samples
    without a transcript, counted as ``no_transcript`` in ``skip_counter`` (`recipes.data.text_twin`); a batch left
    empty collates to ``None``.
    """

    def __init__(
        self,
        processor,
        padding_side: str | None = None,
        for_generation: bool = False,
        text_twin: bool = False,
        skip_counter=None,
    ):
        if padding_side is None:
            padding_side = "left" if for_generation else "right"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.processor = processor
        self.padding_side = padding_side
        self.for_generation = bool(for_generation)
        tok = processor.tokenizer
        self.im_start_id = tok.convert_tokens_to_ids("<|im_start|>")
        self.im_end_id = tok.convert_tokens_to_ids("<|im_end|>")
        self._assistant_header = "assistant\n"
        self.text_twin = None
        if text_twin:
            if for_generation:
                raise ValueError("text_twin is for training batches (labels); for_generation must be False")
            from .text_twin import TextTwin

            self.text_twin = TextTwin(tok, padding_side, skip_counter)

    # -------------------------------------------------------------- text
    def render(self, messages: list[dict]) -> tuple[str, str | None]:
        """(prompt text, reference answer or None)."""
        if not self.for_generation:
            return self.processor.apply_chat_template(messages, add_generation_prompt=False), None
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = self.processor.apply_chat_template(messages[:last], add_generation_prompt=True)
        return prompt, message_text(messages[last]["content"])

    def assistant_spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """Half-open token spans [start, end) of assistant turns' content + ``<|im_end|>``."""
        tok = self.processor.tokenizer
        spans = []
        n = len(ids)
        header = self._assistant_header
        for j in (i for i, t in enumerate(ids) if t == self.im_start_id):
            # decode a few tokens after <|im_start|> until the role header is covered
            start = None
            for k in range(1, min(8, n - j)):
                text = tok.decode(ids[j + 1 : j + 1 + k], skip_special_tokens=False)
                if len(text) >= len(header) or "<|" in text:
                    if text.startswith(header):
                        # the k-th token completes the header exactly, or straddles into the content
                        start = j + 1 + k if len(text) == len(header) else j + k
                    break
            if start is None:
                continue
            end = start
            while end < n and ids[end] != self.im_end_id:
                end += 1
            spans.append((start, min(end + 1, n)))
        return spans

    # -------------------------------------------------------------- batch
    def __call__(self, samples: Sequence[dict]) -> dict[str, Any] | None:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        missing: list[dict] = []
        if self.text_twin is not None:
            samples, missing = self.text_twin.split(samples)
            if not samples:
                self.text_twin.count_missing(missing)
                return None
        texts, references, audios, images = [], [], [], []
        for s in samples:
            text, ref = self.render(s["messages"])
            texts.append(text)
            references.append(ref)
            audios.append(s["audio"])
            if s.get("image") is not None:
                images.append(s["image"])
        enc = self.processor(
            text=texts,
            audio=audios,
            sampling_rate=SAMPLING_RATE,
            images=images or None,
            padding=True,
            padding_side=self.padding_side,
            return_tensors="pt",
            return_audio_token_counts=True,  # the processor's own counts: never recounted here
        )
        batch: dict[str, Any] = dict(enc)
        if not self.for_generation:
            ids = batch["input_ids"]
            labels = torch.full_like(ids, IGNORE_INDEX)
            for row in range(ids.shape[0]):
                row_ids = ids[row].tolist()
                for a, b in self.assistant_spans(row_ids):
                    labels[row, a:b] = ids[row, a:b]
            labels[batch["attention_mask"] == 0] = IGNORE_INDEX
            batch["labels"] = labels
        else:
            batch["references"] = references
        batch["keys"] = [s.get("key") for s in samples]
        if self.text_twin is not None:  # counted once the batch stands (a failed batch is retried sample by sample)
            batch["text_twin"] = self.text_twin.build(batch, samples)
            self.text_twin.count_missing(missing)
        return batch


MODEL_INPUT_KEYS = (
    "input_ids",
    "attention_mask",
    "labels",
    "mm_token_type_ids",
    "input_features",
    "input_features_mask",
    "pixel_values",
    "image_grid_thw",
)


def model_inputs(batch: Mapping[str, Any], with_labels: bool = True) -> dict[str, Any]:
    """The subset of a collated batch that ``model(**...)`` / ``model.generate(**...)`` accepts."""
    keys = MODEL_INPUT_KEYS if with_labels else tuple(k for k in MODEL_INPUT_KEYS if k != "labels")
    return {k: batch[k] for k in keys if k in batch}
