"""Benchmark: cost of Partial YaRN vs no extension on the tiny model with a long audio span.

Prefill: one forward over a prompt with a >= 8k-token audio span (pre-encoded audio, so only the language
model and the position/rotary work are timed). Decode: per-step time of cached greedy decoding, taken as
(time for 1 + N new tokens - time for 1 new token) / N. Both methods run interleaved in one process and
the medians are compared. Targets: prefill overhead <= 3 %, decode-step overhead <= 1 %.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from audio_adapter.testing import tiny_model_and_processor

SETTINGS = {
    "none": dict(method="none"),
    "partial_yarn": dict(method="partial_yarn", cutoff=3, temperature=1.2, base_audio_seconds=30.0),
}


def build_inputs(model, processor, audio_tokens: int) -> dict:
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Summarise."}]}],
        add_generation_prompt=True,
    )
    before, after = prompt.split("<|AUDIO|>")
    ids = processor.tokenizer([before + "<|AUDIO|>" * audio_tokens + after], return_tensors="pt").input_ids
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(audio_tokens, model.config.text_config.hidden_size, generator=generator) * 0.02
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_encoder_outputs": {"audio": [audio]}}


@torch.no_grad()
def time_prefill(model, inputs) -> float:
    start = time.perf_counter()
    model(**{**inputs, "mm_encoder_outputs": dict(inputs["mm_encoder_outputs"])}, logits_to_keep=1)
    return time.perf_counter() - start


@torch.no_grad()
def time_generate(model, inputs, new_tokens: int) -> float:
    start = time.perf_counter()
    model.generate(
        **{**inputs, "mm_encoder_outputs": dict(inputs["mm_encoder_outputs"])},
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--audio-tokens", type=int, default=8192)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, processor = tiny_model_and_processor(seed=0)
    inputs = build_inputs(model, processor, args.audio_tokens)

    prefill = {name: [] for name in SETTINGS}
    decode = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats + 1):  # the first round is warm-up
        for name, setting in SETTINGS.items():
            model.set_context_extension(**setting)
            p = time_prefill(model, inputs)
            one = time_generate(model, inputs, 1)
            many = time_generate(model, inputs, 1 + args.decode_tokens)
            if repeat:
                prefill[name].append(p)
                decode[name].append((many - one) / args.decode_tokens)
    model.set_context_extension(method="none")

    med = {k: (statistics.median(prefill[k]), statistics.median(decode[k])) for k in SETTINGS}
    table = Table(title=f"tiny model, {args.audio_tokens} audio tokens, {args.threads} threads, median of {args.repeats}")
    for col in ("method", "prefill ms", "decode step ms"):
        table.add_column(col)
    for name, (p, d) in med.items():
        table.add_row(name, f"{p * 1e3:.2f}", f"{d * 1e3:.3f}")
    console = Console()
    console.print(table)
    prefill_overhead = med["partial_yarn"][0] / med["none"][0] - 1
    decode_overhead = med["partial_yarn"][1] / med["none"][1] - 1
    console.print(f"prefill overhead: {prefill_overhead * 100:+.2f} % (target <= 3 %) -> {'PASS' if prefill_overhead <= 0.03 else 'FAIL'}")
    console.print(f"decode-step overhead: {decode_overhead * 100:+.2f} % (target <= 1 %) -> {'PASS' if decode_overhead <= 0.01 else 'FAIL'}")


if __name__ == "__main__":
    main()
