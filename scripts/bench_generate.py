"""Benchmark: audio encoded once per generate() vs the seed design's re-encode-every-step.

On the tiny model with 30 s of audio and 64 new tokens, prints encoder calls per generate and the
throughput ratio (new tokens / s) of our `generate()` against a greedy loop that re-passes
`input_features` and re-runs the encoder on every decoding step (the seed approach, implemented here
for comparison only). Target: ratio >= 10x.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from audio_adapter.testing import tiny_model_and_processor


def synth_clip(seconds: float) -> torch.Tensor:
    t = torch.arange(int(seconds * 16000)) / 16000
    return 0.3 * torch.sin(2 * torch.pi * 330.0 * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))


@torch.no_grad()
def seed_design_greedy(model, inputs, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding with a KV cache that re-encodes the audio at every step (then discards it)."""
    out = model(**inputs, use_cache=True)
    cache = out.past_key_values
    sequence = inputs["input_ids"]
    next_token = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(max_new_tokens - 1):
        sequence = torch.cat([sequence, next_token], dim=1)
        model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])  # the wasted work
        out = model(
            input_ids=next_token,
            attention_mask=torch.ones_like(sequence),
            past_key_values=cache,
            use_cache=True,
            position_ids=torch.full((3, 1, 1), sequence.shape[1] - 1, dtype=torch.long),
        )
        cache = out.past_key_values
        next_token = out.logits[:, -1].argmax(-1, keepdim=True)
    return torch.cat([sequence, next_token], dim=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, processor = tiny_model_and_processor(seed=0)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Describe the audio."}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], audio=[synth_clip(args.seconds)], sampling_rate=16000)
    n = args.new_tokens
    calls: list[int] = []
    hook = model.audio_tower.register_forward_hook(lambda *_: calls.append(1))

    def ours() -> torch.Tensor:
        with torch.no_grad():
            return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def seed() -> torch.Tensor:
        return seed_design_greedy(model, inputs, n)

    ours(), seed()  # warm-up
    results = {}
    for name, fn in (("encode once (ours)", ours), ("re-encode every step (seed)", seed)):
        calls.clear()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            tokens = fn()
            times.append(time.perf_counter() - start)
        results[name] = (min(times), len(calls) / args.repeats, tokens)
    hook.remove()

    (t_ours, c_ours, tok_ours), (t_seed, c_seed, tok_seed) = results.values()
    table = Table(title=f"tiny model, {args.seconds:.0f} s audio, {n} new tokens, {args.threads} threads")
    for col in ("approach", "encoder calls / generate", "seconds", "new tokens / s"):
        table.add_column(col)
    for name, (t, c, _) in results.items():
        table.add_row(name, f"{c:.0f}", f"{t:.3f}", f"{n / t:.1f}")
    console = Console()
    console.print(table)
    ratio = t_seed / t_ours
    console.print(f"same tokens: {torch.equal(tok_ours, tok_seed)}")
    console.print(f"throughput ratio ours / seed: {ratio:.1f}x (target >= 10x) -> {'PASS' if ratio >= 10 else 'FAIL'}")


if __name__ == "__main__":
    main()
