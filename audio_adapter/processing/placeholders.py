"""Placeholder checks and expansion on prompt text: pure functions of strings, no tokenizer.

A clip is written ``<|audio_bos|><|AUDIO|><|audio_eos|>`` and an image ``<|vision_start|><|image_pad|><|vision_end|>``;
the processor repeats each ``<|AUDIO|>`` / ``<|image_pad|>`` to its clip's / image's token count.
"""

from __future__ import annotations

from collections.abc import Sequence

from .tokenizer import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
AUDIO_SPAN = AUDIO_BOS_TOKEN + AUDIO_TOKEN + AUDIO_EOS_TOKEN


def check_audio_spans(texts: Sequence[str]) -> None:
    """Every ``<|AUDIO|>``, ``<|audio_bos|>`` and ``<|audio_eos|>`` must belong to one whole
    ``<|audio_bos|><|AUDIO|><|audio_eos|>`` span: a bare one would give the model audio without its
    markers (or markers without audio), a layout it never trained on."""
    for i, text in enumerate(texts):
        spans = text.count(AUDIO_SPAN)
        for token in (AUDIO_TOKEN, AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN):
            if text.count(token) != spans:
                raise ValueError(
                    f"text {i} has {text.count(token)} {token} but {spans} whole {AUDIO_SPAN} spans: write each "
                    f"clip exactly as {AUDIO_SPAN} (apply_chat_template does, for a {{'type': 'audio'}} item)"
                )


def check_placeholder_count(texts: Sequence[str], token: str, n_items: int, what: str) -> None:
    """As many ``token`` placeholders in all texts together as ``n_items`` (``what``: e.g. "audio clips")."""
    n_placeholders = sum(t.count(token) for t in texts)
    if n_placeholders != n_items:
        raise ValueError(f"text has {n_placeholders} {token} placeholders but {n_items} {what} were given")


def check_no_orphan_images(texts: Sequence[str], images) -> None:
    """``<|image_pad|>`` needs images; ``<|video_pad|>`` is refused (videos are not supported)."""
    for token, what in ((IMAGE_TOKEN, "no images were given"), (VIDEO_TOKEN, "videos are not supported")):
        n = sum(t.count(token) for t in texts)
        if n and (token == VIDEO_TOKEN or images is None):
            raise ValueError(f"text has {n} {token} placeholders but {what}")


def expand_placeholders(texts: Sequence[str], token: str, counts: Sequence[int], what: str) -> list[str]:
    """Repeat the k-th ``token`` (in reading order across the texts) ``counts[k]`` times."""
    check_placeholder_count(texts, token, len(counts), what)
    it = iter(counts)
    out = []
    for text in texts:
        pieces = text.split(token)
        out.append(pieces[0] + "".join(token * next(it) + piece for piece in pieces[1:]))
    return out
