"""Generate text from audio file(s) (+ an optional image) and a prompt, streamed to stdout.

    python -m scripts.generate --model ckpt/ --audio talk.flac --prompt "Summarise the talk." \\
        --method partial_yarn --cutoff 32 --temperature 1.2 --base-audio-seconds 120

Every clip becomes its own audio span, placed (after the image, if any) before the prompt text in one user
turn. Greedy by default; ``--num-beams``/``--do-sample`` switch decoding (beam search cannot stream, so its
text is printed at the end). ``--do-sample`` samples with ``--sample-temperature`` (default 1.0), ``--top-p``
(default 1.0) and ``--top-k`` (default 0 = off), never with the checkpoint's saved values: Qwen2-VL's hub
generation config (top_k 1, top_p 0.001, temperature 0.01) would make it greedy. (``--temperature`` is the
Partial YaRN attention temperature.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch
from transformers import TextStreamer

from audio_adapter.encoders.whisper import SAMPLING_RATE
from recipes.inference.common import (
    AudioInput,
    add_extension_args,
    add_model_args,
    apply_extension_args,
    as_waveform,
    chat_prompt,
    check_cli_text,
    load_model_and_processor,
    parse_with_extension,
)


def load_image(path: str | os.PathLike):
    """An image file as an RGB PIL image."""
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def prepare_inputs(
    model,
    processor,
    audio: Sequence[AudioInput],
    prompt: str,
    image=None,
    system: str | None = None,
    sampling_rate=None,
):
    """Processor outputs for one chat turn (image, clips, prompt), on the model's device. Raw arrays need
    ``sampling_rate`` (one rate, or one per clip; ignored for files, which carry their own)."""
    rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple)) else [sampling_rate] * len(audio)
    if len(rates) != len(audio):
        raise ValueError(f"got {len(rates)} sampling rates for {len(audio)} audio clips")
    clips = [as_waveform(a, rate) for a, rate in zip(audio, rates)]
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    text = chat_prompt(processor, prompt, n_audio=len(clips), n_images=0 if image is None else 1, system=system)
    inputs = processor(
        text=[text],
        audio=clips or None,
        sampling_rate=SAMPLING_RATE,
        images=None if image is None else [image],
        return_tensors="pt",
        padding=True,
    )
    return inputs.to(model.device)


def generate_text(
    model,
    processor,
    audio: Sequence[AudioInput],
    prompt: str,
    image=None,
    max_new_tokens: int = 256,
    num_beams: int = 1,
    do_sample: bool = False,
    streamer=None,
    system: str | None = None,
    sampling_rate=None,
    **generate_kwargs,
) -> str:
    """Generate the answer to ``prompt`` about ``audio`` (file paths, or raw arrays at ``sampling_rate``).

    ``image``: a path or PIL image. ``streamer``: a transformers streamer (not with beam search). Returns the
    generated text without special tokens. Uses the model's current context extension."""
    inputs = prepare_inputs(model, processor, audio, prompt, image=image, system=system, sampling_rate=sampling_rate)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            streamer=streamer,
            **generate_kwargs,
        )
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--audio", nargs="+", default=[], metavar="PATH", help="audio file(s), one span each")
    parser.add_argument("--image", default=None, metavar="PATH", help="optional image")
    parser.add_argument("--prompt", required=True, help="the user's text")
    parser.add_argument("--system", default=None, help="system prompt (default: the chat template's)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy / beam search")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (for --do-sample)")
    sampling = parser.add_argument_group("sampling (with --do-sample)")
    sampling.add_argument("--sample-temperature", type=float, default=None, help="softmax temperature (default 1.0)")
    sampling.add_argument("--top-p", type=float, default=None, help="nucleus probability mass (default 1.0 = off)")
    sampling.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default 0 = off)")
    add_extension_args(parser)
    return parser


SAMPLING_DEFAULTS = {"sample_temperature": 1.0, "top_p": 1.0, "top_k": 0}


def sampling_kwargs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """``generate()`` sampling settings: explicit values (defaults: plain sampling) so that a checkpoint's saved
    near-greedy settings cannot override ``--do-sample``; empty without ``--do-sample``."""
    given = [name for name in SAMPLING_DEFAULTS if getattr(args, name) is not None]
    if not args.do_sample:
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --do-sample")
        return {}
    values = {
        name: getattr(args, name) if getattr(args, name) is not None else d for name, d in SAMPLING_DEFAULTS.items()
    }
    if values["sample_temperature"] <= 0:
        parser.error(f"--sample-temperature must be > 0, got {values['sample_temperature']}")
    if not 0 < values["top_p"] <= 1:
        parser.error(f"--top-p must be in (0, 1], got {values['top_p']}")
    if values["top_k"] < 0:
        parser.error(f"--top-k must be >= 0, got {values['top_k']}")
    return {"temperature": values["sample_temperature"], "top_p": values["top_p"], "top_k": values["top_k"]}


def main(argv: Sequence[str] | None = None) -> str:
    """CLI entry: stream the generated text to stdout and return it."""
    parser = build_parser()
    args = parse_with_extension(parser, argv)
    check_cli_text(parser, prompt=args.prompt, system=args.system)
    sampling = sampling_kwargs(args, parser)
    model, processor = load_model_and_processor(args.model, device=args.device, dtype=args.dtype)
    apply_extension_args(model, args)
    torch.manual_seed(args.seed)
    stream = args.num_beams == 1
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    text = generate_text(
        model,
        processor,
        args.audio,
        args.prompt,
        image=args.image,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        do_sample=args.do_sample,
        streamer=streamer,
        system=args.system,
        **sampling,
    )
    if not stream:
        print(text)
    sys.stdout.flush()
    return text


if __name__ == "__main__":
    main()
