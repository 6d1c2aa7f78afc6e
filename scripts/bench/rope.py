"""Benchmark: what Partial YaRN costs over no extension, prefill and decode step, measured interleaved.

Three measures, each an A/B race in one process (partial_yarn vs none, order alternating every round), each
reported as the median of per-round ratios with a 95 % bootstrap interval and PASS/FAIL against its target
(`scripts/bench/stats.py`):

1. decode-step extra work: the only code a decode step runs differently between the two methods -- the
   rotary call on the new token's positions (stock: 3 M-RoPE rows; Partial YaRN: the 9-row extended tensor)
   and generate's per-step position bookkeeping (`_update_model_kwargs_for_generation` appending to the
   full-length (4 or 9, B, L) tensor, then the slice `prepare_inputs_for_generation` takes). Per round the
   difference partial_yarn - none is taken; its median (95 % CI) divided by the median decode step of `none`
   is the decode overhead the extension can cause. Target <= 1 %. This is the decisive figure: it is
   measured over thousands of calls, where the end-to-end step ratio (2.) moves by +-10 % with the load.
2. decode step: the real `generate()` loop (greedy, KV cache) timed between consecutive steps by a logits
   processor. Each round starts from the same cache of L - 1 prompt tokens (cropped back after the round),
   so prefill is never re-run; the cache holds random keys/values, which costs the same as real ones.
   Target <= 1 % (end to end; decided only when the machine is quiet enough).
3. prefill: one forward over the prompt with its audio span (pre-encoded audio: only the language model and
   the position/rotary work are timed). Target <= 3 %.

Shapes: `tiny` (the test model: hidden 64, head_dim 16, 2 layers) and `real` (head_dim 128, hidden 1024,
4 layers, GQA 8/2 heads, M-RoPE sections 16/24/24), 8192 audio tokens, batch 1 and 8 for decode; prefill at
batch 1 (a batch-8 8k prefill takes minutes on a CPU and measures the same ratio).

    nice -n 10 python -m scripts.bench.rope                 # both shapes
    python -m scripts.bench.rope --quick                    # smoke size, seconds
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from transformers import DynamicCache, LogitsProcessorList

from audio_adapter.model.transformers_hooks import cache_kwarg
from audio_adapter.testing import tiny_model_and_processor
from scripts.bench.stats import RatioResult, StepClock, bootstrap_median_ci, cpu_clock, interleave, paired_ratio, timed

PREFILL_TARGET = 1.03
DECODE_TARGET = 1.01

SHAPES = {
    "tiny": dict(),
    "real": dict(
        hidden_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=2816,
        mrope_section=(16, 24, 24),
    ),
}
# Partial YaRN with the paper's shape of setting: the lowest quarter of the frequencies keeps raw positions.
CUTOFF = {"tiny": 2, "real": 16}


def settings(shape: str) -> dict[str, dict]:
    return {
        "partial_yarn": dict(method="partial_yarn", cutoff=CUTOFF[shape], temperature=1.2, base_audio_seconds=30.0),
        "none": dict(method="none"),
    }


def build_inputs(model, processor, audio_tokens: int, batch: int = 1) -> dict:
    """A chat prompt with one `audio_tokens`-long audio span, repeated `batch` times; audio pre-encoded."""
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Summarise."}]}],
        add_generation_prompt=True,
    )
    before, after = prompt.split("<|AUDIO|>")
    ids = processor.tokenizer([before + "<|AUDIO|>" * audio_tokens + after], return_tensors="pt").input_ids
    ids = ids.expand(batch, -1).contiguous()
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(audio_tokens, model.config.text_config.hidden_size, generator=generator) * 0.02
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_encoder_outputs": {"audio": [audio] * batch}}


def filled_cache(model, batch: int, length: int) -> DynamicCache:
    """A KV cache holding `length` tokens of random keys/values in every layer (decode cost does not depend on
    the values, only on the shapes)."""
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    cache = DynamicCache(config=text)
    generator = torch.Generator().manual_seed(1)
    for layer in range(text.num_hidden_layers):
        shape = (batch, text.num_key_value_heads, length, head_dim)
        cache.update(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator), layer)
    return cache


def decode_step_measure(model, inputs: dict, setting: dict, new_tokens: int, cache: DynamicCache) -> callable:
    """-> measure(): median seconds per decode step of one `generate()` continuing from `cache` (the prompt
    minus its last token). Both methods share one cache object: with a separate cache each, a memory-bound
    B = 8 step once differed by 5 % between two runs of the same comparison, depending on which cache was
    allocated first."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]

    @torch.no_grad()
    def measure() -> float:
        model.set_context_extension(**setting)
        model.model.rope_deltas = None  # let generate derive the prompt's positions as for a fresh prompt
        clock = StepClock()
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            **cache_kwarg(cache),
            max_new_tokens=new_tokens + 1,
            min_new_tokens=new_tokens + 1,
            do_sample=False,
            logits_processor=LogitsProcessorList([clock]),
        )
        cache.crop(-(cache.get_seq_length() - (ids.shape[1] - 1)))
        steps = sorted(b - a for a, b in zip(clock.stamps, clock.stamps[1:]))
        return steps[len(steps) // 2]

    return measure


def step_work_measure(model, batch: int, length: int, setting: dict, calls: int) -> callable:
    """-> measure(): seconds per decode step spent on what differs between the methods: the rotary call on
    one new token's positions, and generate's bookkeeping of the full-length position tensor (append one
    column with the real `_update_model_kwargs_for_generation`, slice the new column as
    `prepare_inputs_for_generation` does)."""
    rotary = model.model.language_model.rotary_emb
    x = torch.zeros(batch, 1, model.config.text_config.hidden_size)
    if setting["method"] == "none":
        full = torch.arange(length).expand(4, batch, -1).contiguous()  # what stock generate carries
        step = full[1:, :, -1:]  # the language model splits off the text row before the rotary call
    else:
        full = torch.arange(length, dtype=torch.float32).expand(9, batch, -1).contiguous()
        full[1:7] -= 1000.0  # audio stretched earlier in the prompt: raw and stretched rows differ
        step = full[..., -1:]

    @torch.no_grad()
    def measure() -> float:
        model.set_context_extension(**setting)
        start = cpu_clock()
        for _ in range(calls):
            grown = model._update_model_kwargs_for_generation({}, {"position_ids": full})["position_ids"]
            grown[..., -1:].clone()
            rotary(x, step)
        return (cpu_clock() - start) / calls

    return measure


def prefill_measure(model, inputs: dict, setting: dict) -> callable:
    def run() -> None:
        model.set_context_extension(**setting)
        with torch.no_grad():
            model(**{**inputs, "mm_encoder_outputs": dict(inputs["mm_encoder_outputs"])}, logits_to_keep=1)

    return timed(run)


def bench_shape(console: Console, shape: str, args) -> list:
    model, processor = tiny_model_and_processor(seed=0, **SHAPES[shape])
    methods = settings(shape)
    results = []
    for batch in args.batches:
        inputs = build_inputs(model, processor, args.audio_tokens, batch)
        length = inputs["input_ids"].shape[1]
        work = interleave(
            {m: step_work_measure(model, batch, length, s, args.work_calls) for m, s in methods.items()},
            rounds=args.work_rounds,
        )
        cache = filled_cache(model, batch, length - 1)
        dec = interleave(
            {m: decode_step_measure(model, inputs, s, args.decode_tokens, cache) for m, s in methods.items()},
            rounds=args.decode_rounds,
        )
        results.append(
            paired_ratio(
                f"{shape} B={batch}: decode step, partial_yarn / none",
                dec["partial_yarn"],
                dec["none"],
                DECODE_TARGET,
                higher_is_better=False,
            )
        )
        step_none = statistics.median(dec["none"])
        console.print(results[-1].describe() + f"  (none: {step_none * 1e3:.2f} ms CPU a step)")
        extra = [(a - b) / step_none for a, b in zip(work["partial_yarn"], work["none"])]
        low, high = bootstrap_median_ci(extra)
        results.append(
            RatioResult(
                f"{shape} B={batch}: decode step from the differing work, partial_yarn / none",
                1 + statistics.median(extra),
                1 + low,
                1 + high,
                len(extra),
                DECODE_TARGET,
                False,
            )
        )
        console.print(
            results[-1].describe() + f"  (partial_yarn {statistics.median(work['partial_yarn']) * 1e6:.1f} us, "
            f"none {statistics.median(work['none']) * 1e6:.1f} us a step)"
        )
        if batch == 1:
            rounds = args.prefill_rounds if shape == "tiny" else args.real_prefill_rounds
            pre = interleave({m: prefill_measure(model, inputs, s) for m, s in methods.items()}, rounds=rounds)
            results.append(
                paired_ratio(
                    f"{shape} B=1: prefill, partial_yarn / none",
                    pre["partial_yarn"],
                    pre["none"],
                    PREFILL_TARGET,
                    higher_is_better=False,
                )
            )
            console.print(results[-1].describe())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["tiny", "real"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--audio-tokens", type=int, default=8192)
    parser.add_argument("--decode-tokens", type=int, default=16, help="timed steps per generate()")
    parser.add_argument("--decode-rounds", type=int, default=30)
    parser.add_argument("--work-rounds", type=int, default=100)
    parser.add_argument("--work-calls", type=int, default=20, help="decode steps' extra work timed together per round")
    parser.add_argument("--prefill-rounds", type=int, default=12)
    parser.add_argument("--real-prefill-rounds", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=1, help="1: on a shared machine more threads mostly wait on each other"
    )
    parser.add_argument("--quick", action="store_true", help="smoke size: tiny shape, few rounds, 256 audio tokens")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.batches, args.audio_tokens = ["tiny"], [1], 256
        args.decode_tokens, args.decode_rounds, args.work_rounds, args.work_calls = 4, 2, 2, 2
        args.prefill_rounds = args.real_prefill_rounds = 2
    torch.set_num_threads(args.threads)
    console = Console(width=200)
    console.print(
        f"Partial YaRN vs none, {args.audio_tokens} audio tokens, {args.threads} threads; "
        "ratios are medians of interleaved per-round ratios of this thread's CPU time, with 95 % bootstrap intervals"
    )
    results = []
    for shape in args.shapes:
        results += bench_shape(console, shape, args)
    failed = [r for r in results if r.verdict != "PASS"]
    console.print(f"{len(results) - len(failed)}/{len(results)} PASS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
