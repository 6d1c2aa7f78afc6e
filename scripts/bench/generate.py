"""Benchmark: our `generate()` against a real peer, transformers' `Qwen2AudioForConditionalGeneration`.

Both models are random-init at matched tiny dimensions (LM hidden 64, 2 layers, 4/2 heads, MLP 128, the same
vocabulary; Whisper-style encoder d_model 64, 2 layers, 128 mel bins, 30 s windows) and get the same audio
(the same log-mel windows and mask), the same prompt ids and the same number of new tokens. Our pooling
stride is set to 2 so that both splice the same number of audio tokens (Qwen2-Audio pools by 2: 25 / s).

Printed, ours / peer:
1. encoder calls and encoder windows per `generate()` for greedy, beam 3 and sampling x 2 (two return
   sequences): we encode once before beam/sample expansion; the peer encodes the expanded batch.
2. prefill time ratio (one forward over the prompt, audio encoding included) and decode-step time ratio
   (steps of a greedy `generate()`, timed between consecutive steps), interleaved rounds, this thread's CPU
   time, median ratio with a 95 % bootstrap interval (`scripts/bench/stats.py`). Targets: ratios <= 1.10.
3. to tell our layer's cost from Qwen2-VL's own (M-RoPE, its multimodal forward), the decode step is also
   raced against stock `Qwen2VLForConditionalGeneration` built from the same config and weights, on the
   same prompt ids (audio placeholders are plain tokens to it; a decode step has no audio either way).
   Target: ours / stock Qwen2-VL <= 1.03.

    nice -n 10 python -m scripts.bench.generate
    python -m scripts.bench.generate --quick
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from rich.table import Table
from transformers import (
    LogitsProcessorList,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.testing import tiny_model_and_processor
from scripts.bench.stats import StepClock, interleave, paired_ratio, timed

TIME_TARGET = 1.10
STOCK_TARGET = 1.03
MODES = {
    "greedy": dict(do_sample=False),
    "beam 3": dict(num_beams=3, do_sample=False),
    "sampling x 2": dict(do_sample=True, top_k=20, num_return_sequences=2),
}


def synth_clip(seconds: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    return 0.3 * torch.sin(2 * torch.pi * 330.0 * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))


def build_peer(ours) -> Qwen2AudioForConditionalGeneration:
    """Qwen2-Audio with our tiny model's dimensions and vocabulary, sharing our audio token id."""
    text, audio = ours.config.text_config, ours.config.audio_config
    config = Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder",
            d_model=audio.d_model,
            encoder_layers=audio.encoder_layers,
            encoder_attention_heads=audio.encoder_attention_heads,
            encoder_ffn_dim=audio.encoder_ffn_dim,
            num_mel_bins=audio.num_mel_bins,
            max_source_positions=audio.max_source_positions,
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=text.vocab_size,
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers,
            num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads,
            max_position_embeddings=text.max_position_embeddings,
            bos_token_id=None,
            eos_token_id=None,
        ),
        audio_token_index=ours.config.audio_token_id,
    )
    torch.manual_seed(0)
    peer = Qwen2AudioForConditionalGeneration(config).eval()
    peer.generation_config.pad_token_id = ours.generation_config.pad_token_id
    peer.generation_config.eos_token_id = None
    return peer


def peer_inputs(inputs: dict) -> dict:
    return {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "input_features": inputs["input_features"],
        "feature_attention_mask": inputs["input_features_mask"],
    }


def encoder_counts(model, tower, inputs: dict, new_tokens: int) -> dict[str, tuple[int, int]]:
    """{mode: (encoder calls, windows encoded)} per generate()."""
    counts = {}
    calls: list[int] = []
    hook = tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        for mode, kwargs in MODES.items():
            calls.clear()
            torch.manual_seed(0)
            with torch.no_grad():
                model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
            counts[mode] = (len(calls), sum(calls))
    finally:
        hook.remove()
    return counts


def decode_step_measure(model, inputs: dict, new_tokens: int):
    @torch.no_grad()
    def measure() -> float:
        clock = StepClock()
        model.generate(
            **inputs,
            max_new_tokens=new_tokens + 1,
            min_new_tokens=new_tokens + 1,
            do_sample=False,
            logits_processor=LogitsProcessorList([clock]),
        )
        steps = sorted(b - a for a, b in zip(clock.stamps, clock.stamps[1:]))
        return steps[len(steps) // 2]

    return measure


def prefill_measure(model, inputs: dict):
    def run() -> None:
        with torch.no_grad():
            model(**inputs, logits_to_keep=1)

    return timed(run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="clip length (a multiple of 0.04 s keeps both models' token counts equal)",
    )
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke size: 2 s clip, 3 tokens, 2 rounds")
    return parser


def build_stock(model) -> Qwen2VLForConditionalGeneration:
    """Stock Qwen2-VL with our model's config and LM weights (the audio parts are ours only)."""
    stock = Qwen2VLForConditionalGeneration(model.config).eval()
    stock.load_state_dict(model.state_dict(), strict=False)  # the same LM weights; audio parts are ours only
    stock.generation_config.pad_token_id = model.generation_config.pad_token_id
    stock.generation_config.eos_token_id = model.generation_config.eos_token_id
    return stock


def encoder_table(model, peer, ours_in: dict, peer_in: dict, seconds: float, n_audio: int, new_tokens: int) -> Table:
    """Encoder calls / windows per `generate()` of every mode, ours against the peer."""
    ours_counts = encoder_counts(model, model.audio_tower, ours_in, new_tokens)
    peer_counts = encoder_counts(peer, peer.model.audio_tower, peer_in, new_tokens)
    table = Table(
        title=f"encoder work per generate(): {seconds:g} s clip ({n_audio} audio tokens), {new_tokens} new tokens"
    )
    for col in ("mode", "ours: calls / windows", "peer: calls / windows", "windows ours / peer"):
        table.add_column(col)
    for mode in MODES:
        (oc, ow), (pc, pw) = ours_counts[mode], peer_counts[mode]
        table.add_row(mode, f"{oc} / {ow}", f"{pc} / {pw}", f"{ow / pw:.2f}")
    return table


def race_times(model, peer, ours_in: dict, peer_in: dict, args: argparse.Namespace, console: Console) -> None:
    """Prefill and decode-step time ratios against the peer, and the decode step against stock Qwen2-VL."""
    pre = interleave({"ours": prefill_measure(model, ours_in), "peer": prefill_measure(peer, peer_in)}, args.rounds)
    stock = build_stock(model)
    stock_in = {"input_ids": ours_in["input_ids"], "attention_mask": ours_in["attention_mask"]}
    dec = interleave(
        {
            "ours": decode_step_measure(model, ours_in, args.new_tokens),
            "peer": decode_step_measure(peer, peer_in, args.new_tokens),
            "stock": decode_step_measure(stock, stock_in, args.new_tokens),
        },
        args.rounds,
    )
    console.print(f"{args.threads} thread(s), this thread's CPU time, interleaved rounds:")
    for label, samples in (("prefill (encoder included)", pre), ("decode step", dec)):
        result = paired_ratio(
            f"{label}, ours / peer", samples["ours"], samples["peer"], TIME_TARGET, higher_is_better=False
        )
        console.print(result.describe() + f"  (peer median {statistics.median(samples['peer']) * 1e3:.2f} ms)")
    result = paired_ratio(
        "decode step, ours / stock Qwen2-VL (same LM)", dec["ours"], dec["stock"], STOCK_TARGET, higher_is_better=False
    )
    console.print(result.describe() + f"  (stock median {statistics.median(dec['stock']) * 1e3:.2f} ms)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.seconds, args.new_tokens, args.rounds = 2.0, 3, 2
    torch.set_num_threads(args.threads)
    console = Console(width=200)

    model, processor = tiny_model_and_processor(seed=0, audio_pool_stride=2)
    peer = build_peer(model)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Describe the audio."}]}],
        add_generation_prompt=True,
    )
    ours_in = dict(processor(text=[prompt], audio=[synth_clip(args.seconds)], sampling_rate=SAMPLING_RATE))
    peer_in = peer_inputs(ours_in)
    n_audio = int((ours_in["input_ids"] == model.config.audio_token_id).sum())
    _, peer_tokens = peer.model.audio_tower._get_feat_extract_output_lengths(ours_in["input_features_mask"].sum(-1))
    if int(peer_tokens.sum()) != n_audio:
        raise SystemExit(f"token counts differ (ours {n_audio}, peer {int(peer_tokens.sum())}): pick another --seconds")
    console.print(encoder_table(model, peer, ours_in, peer_in, args.seconds, n_audio, args.new_tokens))
    race_times(model, peer, ours_in, peer_in, args, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
