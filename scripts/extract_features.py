"""Save what the model computes for each clip: Whisper encoder states, projected audio embeddings and chosen
LLM hidden states, one safetensors file per clip plus ``index.json``.

    python -m scripts.extract_features --model ckpt/ --audio a.flac b.wav --layers 0 -1 --out feats/
    python -m scripts.extract_features --model ckpt/ --manifest mcqa.jsonl --out feats/

Per clip, ``<out>/<NNNNN>_<stem>.safetensors`` holds (one forward pass, prompt = the clip + ``--prompt``):

- ``encoder_states`` (encoder frames of the real audio, d_audio): Whisper's last hidden state, frames of
  every 30 s window concatenated, padding frames dropped (before pooling, if a stride is configured); with
  ``audio_encode_real_frames_only`` in the model's config, the states of the trimmed windows it encodes;
- ``audio_embeds`` (n_audio_tokens, hidden): the projector's output, exactly what is spliced into the LLM
  (equals ``model.get_audio_features``);
- ``hidden_states.<i>`` (seq, hidden) for each ``--layers`` entry, resolved to 0..num_layers (0 = input
  embeddings, num_layers = the final, normed, layer; negative indices count from the end, -1 = last);
- ``input_ids`` (seq,) and ``audio_mask`` (seq,) bool, to locate the audio tokens.

The model's context extension (``--method`` ...) applies, so hidden states reflect it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from audio_adapter.encoders.audio_lengths import encoder_frames
from audio_adapter.encoders.whisper import SAMPLING_RATE
from recipes.inference.common import (
    add_extension_args,
    add_model_args,
    apply_extension_args,
    chat_prompt,
    check_cli_text,
    load_model_and_processor,
    parse_with_extension,
    read_audio,
)

DEFAULT_PROMPT = "What do you hear?"


def resolve_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Map layer indices (negative from the end) onto 0..num_layers (hidden_states has num_layers + 1 entries)."""
    resolved = []
    for layer in layers:
        index = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= index <= num_layers:
            raise ValueError(
                f"layer {layer} out of range for {num_layers} layers (valid: -{num_layers + 1}..{num_layers})"
            )
        resolved.append(index)
    return list(dict.fromkeys(resolved))


def extract_clip(
    model, processor, waveform, layers: Sequence[int], prompt: str = DEFAULT_PROMPT
) -> dict[str, torch.Tensor]:
    """Tensors of one clip (16 kHz float waveform); keys as in the module docstring. ``layers`` are resolved."""
    text = chat_prompt(processor, prompt, n_audio=1)
    inputs = processor(text=[text], audio=[waveform], sampling_rate=SAMPLING_RATE, return_tensors="pt").to(model.device)
    captured: dict[str, torch.Tensor] = {}
    encode_audio_windows = model.encode_audio_windows

    def capture_encoder(*args, **kwargs):  # the model's own encoding (padded or real frames only), recorded
        captured["encoder"] = encode_audio_windows(*args, **kwargs)
        return captured["encoder"]

    model.encode_audio_windows = capture_encoder
    hook = model.audio_projector.register_forward_hook(lambda m, a, out: captured.__setitem__("projected", out))
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True, use_cache=False)
    finally:
        hook.remove()
        del model.encode_audio_windows
    mel_valid = inputs["input_features_mask"].long().sum(-1)
    frames = [captured["encoder"][i, : int(encoder_frames(m))] for i, m in enumerate(mel_valid) if m > 0]
    tensors = {
        "encoder_states": torch.cat(frames, dim=0),
        "audio_embeds": captured["projected"],
        "input_ids": inputs["input_ids"][0],
        "audio_mask": inputs["input_ids"][0] == model.config.audio_token_id,
    }
    for layer in layers:
        tensors[f"hidden_states.{layer}"] = out.hidden_states[layer][0]
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def clip_file_name(index: int, audio_path: str | os.PathLike) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(audio_path).stem)[:80] or "clip"
    return f"{index:05d}_{stem}.safetensors"


def manifest_audio(path: str | os.PathLike) -> list[str]:
    """Audio paths of a JSONL manifest (``audio`` field, relative to the manifest's directory)."""
    path = Path(path)
    paths = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                audio = Path(json.loads(line)["audio"])
                paths.append(str(audio if audio.is_absolute() else path.parent / audio))
    return list(dict.fromkeys(paths))


def extract_features(
    model,
    processor,
    audio_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    layers: Sequence[int] = (0, -1),
    prompt: str = DEFAULT_PROMPT,
    show_progress: bool = True,
) -> dict:
    """Write one safetensors file per clip and ``index.json`` under ``out_dir``; return the index."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_layers(layers, model.config.text_config.num_hidden_layers)
    index = {
        "prompt": prompt,
        "layers": resolved,
        "extension": model.context_extension.to_dict(),
        "clips": [],
    }
    with Progress(disable=not show_progress) as progress:
        task = progress.add_task("extracting", total=len(audio_paths))
        for i, audio_path in enumerate(audio_paths):
            waveform = read_audio(audio_path)
            tensors = extract_clip(model, processor, waveform, resolved, prompt)
            name = clip_file_name(i, audio_path)
            save_file(tensors, str(out / name), metadata={"audio": str(audio_path), "prompt": prompt})
            index["clips"].append(
                {
                    "audio": str(audio_path),
                    "file": name,
                    "seconds": len(waveform) / SAMPLING_RATE,
                    "n_audio_tokens": int(tensors["audio_mask"].sum()),
                    "shapes": {k: list(v.shape) for k, v in tensors.items()},
                }
            )
            progress.advance(task)
    (out / "index.json").write_text(json.dumps(index, indent=2))
    return index


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", nargs="+", metavar="PATH", help="audio files")
    source.add_argument("--manifest", help="JSONL with an 'audio' field per line (e.g. an MCQA set)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, -1], help="hidden-state layers (0 = embeddings)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text after the clip in the user turn")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true")
    add_extension_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """CLI entry; returns the index written to ``<out>/index.json``."""
    parser = build_parser()
    args = parse_with_extension(parser, argv)
    check_cli_text(parser, prompt=args.prompt)
    model, processor = load_model_and_processor(args.model, device=args.device, dtype=args.dtype)
    apply_extension_args(model, args)
    try:
        resolve_layers(args.layers, model.config.text_config.num_hidden_layers)
    except ValueError as exc:
        parser.error(str(exc))
    paths = args.audio if args.audio else manifest_audio(args.manifest)
    index = extract_features(
        model, processor, paths, args.out, args.layers, args.prompt, show_progress=not args.no_progress
    )
    Console().print(f"{len(index['clips'])} clips, layers {index['layers']} -> {Path(args.out) / 'index.json'}")
    return index


if __name__ == "__main__":
    main()
