"""Whisper tiny.en's OWN decoder on the held-out clips: the peer our model's transcription WER is compared with
(same clips, same run; `WhisperForConditionalGeneration.generate`, greedy, prompt
``<|startoftranscript|><|notimestamps|>``, padded 30 s windows as Whisper was trained)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recipes.common.progress import Heartbeat


@torch.no_grad()
def whisper_transcripts(
    whisper_dir: str, clips: Sequence[np.ndarray], batch_size: int = 16, max_new_tokens: int = 40
) -> list[str]:
    """Greedy transcripts of 16 kHz mono ``clips`` (T,) by the Whisper folder ``whisper_dir``, in order."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir, dtype=torch.float32).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(whisper_dir)
    tokenizer = AutoTokenizer.from_pretrained(whisper_dir)
    prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    config = model.generation_config
    # an English-only model without timestamps starts every row from decoder_start + no_timestamps (generate
    # returns the new tokens only; passing decoder_input_ids to Whisper's generate is deprecated)
    first = [config.decoder_start_token_id, config.no_timestamps_token_id]
    if first != prompt or getattr(config, "is_multilingual", False):
        raise ValueError(f"{whisper_dir}: generation would start from {first}, not {prompt} (English-only tiny.en)")
    texts: list[str] = []
    with Heartbeat("whisper tiny.en peer", len(clips), unit="clip") as beat:
        for start in range(0, len(clips), batch_size):
            chunk = [np.asarray(c, dtype=np.float32) for c in clips[start : start + batch_size]]
            features = extractor(chunk, sampling_rate=16000, return_tensors="pt").input_features
            mask = torch.ones(features.shape[0], features.shape[-1], dtype=torch.long)
            out = model.generate(features, attention_mask=mask, max_new_tokens=max_new_tokens, return_timestamps=False)
            texts += [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
            beat.update(len(texts))
    return texts
