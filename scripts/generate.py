"""Generate text from audio file(s) (+ an optional image) and a prompt, streamed to stdout.

    python -m scripts.generate --model ckpt/ --audio talk.flac --prompt "Summarise the talk." \\
        --method partial_yarn --cutoff 32 --temperature 1.2 --base-audio-seconds 120

Every clip becomes its own audio span, placed (after the image, if any) before the prompt text in one user
turn. Greedy by default; ``--num-beams``/``--do-sample`` switch decoding (beam search cannot stream, so its
text is printed at the end).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch
from transformers import TextStreamer

from scripts._common import (
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
    model, processor, audio: Sequence[AudioInput], prompt: str, image=None, system: str | None = None, sampling_rate=None
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
        sampling_rate=16000,
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
    add_extension_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    """CLI entry: stream the generated text to stdout and return it."""
    parser = build_parser()
    args = parse_with_extension(parser, argv)
    check_cli_text(parser, prompt=args.prompt, system=args.system)
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
    )
    if not stream:
        print(text)
    sys.stdout.flush()
    return text


if __name__ == "__main__":
    main()
