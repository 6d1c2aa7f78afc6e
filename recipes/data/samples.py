"""One sample's contents: its JSON (validated into chat turns with one audio item) and its audio and image
bytes (decoded, validated). Every problem raises `SampleSkipped` with its reason."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import soundfile as sf

from audio_adapter.processing.tokenizer import control_tokens_in

from .skips import SampleSkipped, SkipReason

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100  # the label of a position the loss ignores (torch cross_entropy's default ignore_index)


# ======================================================================================= JSON / messages
def message_text(content) -> str:
    """A turn's text: the string itself, or its text items joined (audio and image items carry none)."""
    if isinstance(content, str):
        return content
    return "".join(item.get("text", "") for item in content if isinstance(item, dict) and item.get("type") == "text")


def _is_kind(item: dict, kind: str) -> bool:
    return item.get("type") == kind or kind in item or f"{kind}_url" in item


def _content_items(i: int, content: list) -> list[dict]:
    items = []
    for item in content:
        if not isinstance(item, dict):
            raise SampleSkipped(SkipReason.BAD_JSON, f"message {i}: content items must be objects")
        if item.get("type") == "text" and not isinstance(item.get("text"), str):
            raise SampleSkipped(SkipReason.BAD_JSON, f"message {i}: text item without a string 'text'")
        if not (_is_kind(item, "audio") or _is_kind(item, "image") or isinstance(item.get("text"), str)):
            raise SampleSkipped(SkipReason.BAD_JSON, f"message {i}: unknown content item {item}")
        items.append(dict(item))
    return items


def _messages_from_list(raw: Any) -> list[dict]:
    """``{"messages": [...]}`` -> checked chat turns (copies)."""
    if not isinstance(raw, list):
        raise SampleSkipped(SkipReason.BAD_JSON, "'messages' must be a list")
    if not raw:
        raise SampleSkipped(SkipReason.MISSING_FIELDS, "'messages' is empty")
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES or "content" not in msg:
            raise SampleSkipped(SkipReason.BAD_JSON, f"message {i} needs 'role' in {ROLES} and 'content'")
        content = msg["content"]
        if isinstance(content, list):
            content = _content_items(i, content)
        elif not isinstance(content, str):
            raise SampleSkipped(SkipReason.BAD_JSON, f"message {i}: content must be a string or a list")
        messages.append({"role": msg["role"], "content": content})
    return messages


def _messages_from_prompt(record: dict, has_image: bool) -> list[dict]:
    """``{"prompt", "response"[, "system"]}`` -> chat turns (audio, then the image, then the prompt)."""
    prompt, response = record.get("prompt"), record.get("response")
    if prompt is None or response is None:
        raise SampleSkipped(SkipReason.MISSING_FIELDS, "need both 'prompt' and 'response'")
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise SampleSkipped(SkipReason.BAD_JSON, "'prompt' and 'response' must be strings")
    user = [{"type": "audio"}] + ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": prompt}]
    messages = [
        {"role": "user", "content": user},
        {"role": "assistant", "content": [{"type": "text", "text": response}]},
    ]
    system = record.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise SampleSkipped(SkipReason.BAD_JSON, "'system' must be a string")
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _check_turns(messages: list[dict]) -> None:
    for i, m in enumerate(messages):
        found = control_tokens_in(message_text(m["content"]))
        if found:
            raise SampleSkipped(SkipReason.CONTROL_TOKEN, f"message {i} ({m['role']}) text holds {found}")
    if not any(m["role"] == "user" for m in messages):
        raise SampleSkipped(SkipReason.MISSING_FIELDS, "no user turn")
    if not any(m["role"] == "assistant" and message_text(m["content"]).strip() for m in messages):
        raise SampleSkipped(SkipReason.MISSING_FIELDS, "no non-empty assistant turn")


def _place_media(messages: list[dict], has_image: bool) -> None:
    """Exactly one audio item (and one image item when ``has_image``): a missing one is put at the start of the
    first user turn (an image after the audio)."""
    for kind, wanted in (("audio", True), ("image", has_image)):
        n = sum(1 for m in messages if isinstance(m["content"], list) for it in m["content"] if _is_kind(it, kind))
        if n > 1:
            raise SampleSkipped(SkipReason.BAD_JSON, f"{n} {kind} items; a sample holds one {kind}")
        if n == 1 and not wanted:
            raise SampleSkipped(SkipReason.MISSING_IMAGE, "the messages reference an image the sample lacks")
        if n == 0 and wanted:
            first_user = next(m for m in messages if m["role"] == "user")
            if isinstance(first_user["content"], str):
                first_user["content"] = [{"type": "text", "text": first_user["content"]}]
            items = first_user["content"]
            at = 0
            if kind == "image":
                at = next((i + 1 for i, it in enumerate(items) if _is_kind(it, "audio")), 0)
            items.insert(at, {"type": kind})


def sample_transcript(record: dict) -> str | None:
    """The sample's optional ``"transcript"``: what its audio says (the notes played, the words spoken), for a
    loss that reads it in place of the audio (`recipes.losses.TextTeacherKL`). ``None`` when absent or blank;
    raises `SampleSkipped` when it is not a string (``bad_json``) or holds a chat-control token
    (``control_token``: the text twin tokenises it, so ``<|im_end|>`` typed in it would become structure)."""
    transcript = record.get("transcript")
    if transcript is None:
        return None
    if not isinstance(transcript, str):
        raise SampleSkipped(SkipReason.BAD_JSON, f"'transcript' must be a string, got {type(transcript).__name__}")
    found = control_tokens_in(transcript)
    if found:
        raise SampleSkipped(SkipReason.CONTROL_TOKEN, f"transcript holds {found}")
    return transcript if transcript.strip() else None


def normalize_messages(record: Any, has_image: bool = False) -> list[dict]:
    """Validate a sample's JSON (``{"messages": [...]}`` or ``{"prompt", "response"[, "system"]}``) and return
    chat turns with exactly one ``{"type": "audio"}`` item (inserted at the start of the first user turn when
    absent) and, when ``has_image``, exactly one ``{"type": "image"}`` item. Raises `SampleSkipped`; text holding
    a chat-control token (``<|im_end|>``, ``<|image_pad|>``, ...) is ``control_token``: it is user content, and
    parsed as structure it could end a turn early and put labels on injected text. An optional ``"transcript"``
    is checked too (`sample_transcript`)."""
    if not isinstance(record, dict):
        raise SampleSkipped(SkipReason.BAD_JSON, f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = _messages_from_list(record["messages"])
    elif "prompt" in record or "response" in record:
        messages = _messages_from_prompt(record, has_image)
    else:
        raise SampleSkipped(SkipReason.MISSING_FIELDS, "need 'messages' or 'prompt' + 'response'")
    _check_turns(messages)
    _place_media(messages, has_image)
    sample_transcript(record)  # validated here (reader and writer); read by the collator from the sample's meta
    return messages


# A sample's JSON above this many bytes per allowed token is skipped unparsed: a text of max_tokens tokens
# needs a few bytes a token (English ~4, CJK escaped as \uXXXX ~9), so only a runaway sample (the 50 MB one that
# aborted the collator) comes near it, and parsing or tokenising it is never started.
JSON_BYTES_PER_TOKEN = 64
DEFAULT_MAX_TOKENS = 4096


def check_json_size(data: bytes, max_tokens: int | None) -> None:
    """Raise `SampleSkipped` (``too_long``) for a JSON member above ``JSON_BYTES_PER_TOKEN * max_tokens`` bytes."""
    if max_tokens is not None and len(data) > JSON_BYTES_PER_TOKEN * max_tokens:
        raise SampleSkipped(
            SkipReason.TOO_LONG,
            f"JSON of {len(data)} bytes > {JSON_BYTES_PER_TOKEN} x max_tokens={max_tokens} (not parsed)",
        )


def sample_texts(messages: list[dict], record: dict) -> list[str]:
    """The texts of a sample that get tokenised: every turn's text (the system prompt too) and the transcript."""
    texts = [message_text(m["content"]) for m in messages]
    transcript = record.get("transcript") if isinstance(record, dict) else None
    return texts + ([transcript] if isinstance(transcript, str) else [])


def check_text_tokens(texts: list[str], tokenizer, max_tokens: int | None) -> None:
    """Raise `SampleSkipped` (``too_long``) when ``texts`` hold more than ``max_tokens`` tokens together.

    A byte-level BPE token stands for at least one UTF-8 byte, and the tokenizer's NFC normalisation at most
    triples a text's bytes, so texts of at most ``max_tokens // 3`` bytes (nearly every sample) pass without
    being tokenised; longer ones are tokenised, bounded by `check_json_size`. ``tokenizer=None``: not counted."""
    if max_tokens is None or tokenizer is None:
        return
    if 3 * sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) <= max_tokens:
        return
    try:
        n = sum(len(tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]) for t in texts if t)
    except Exception as exc:  # e.g. a lone surrogate: what the collator would fail on, counted here
        raise SampleSkipped(SkipReason.ENCODE_ERROR, f"tokenizer: {exc!r}") from None
    if n > max_tokens:
        raise SampleSkipped(SkipReason.TOO_LONG, f"{n} text tokens > max_tokens={max_tokens}")


def parse_json_bytes(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SampleSkipped(SkipReason.BAD_JSON, f"not valid JSON ({exc})") from None


# ======================================================================================= audio / images
def _decode_flac_fast(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int] | None:
    """FLAC through miniaudio's dr_flac (measured 1.6x faster than libsndfile on 10 s 44.1 kHz clips, same
    samples). ``None`` when miniaudio is missing or cannot decode: the caller falls back to libsndfile, which
    then names the problem."""
    try:
        import miniaudio
    except ImportError:
        return None
    try:
        info = miniaudio.flac_get_info(data)
        if max_seconds is not None and info.num_frames / max(info.sample_rate, 1) > max_seconds:
            raise SampleSkipped(
                SkipReason.TOO_LONG, f"{info.num_frames / info.sample_rate:.1f} s > max_audio_seconds={max_seconds}"
            )
        decoded = miniaudio.flac_read_f32(data)
    except miniaudio.MiniaudioError:
        return None
    # dr_flac returns what it could read of a truncated file; libsndfile refuses it, and so do we: a partial
    # clip next to a full transcript would be a silently wrong sample.
    if info.num_frames and decoded.num_frames != info.num_frames:
        raise SampleSkipped(
            SkipReason.UNDECODABLE_AUDIO, f"flac: truncated, decoded {decoded.num_frames} of {info.num_frames} frames"
        )
    audio = np.frombuffer(decoded.samples, dtype=np.float32)
    if decoded.nchannels > 1:
        audio = audio.reshape(-1, decoded.nchannels)
    return audio, int(decoded.sample_rate)


def decode_audio(data: bytes, ext: str = "", max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Audio file bytes -> (float32 array (T,) or (T, C), sampling rate). Raises `SampleSkipped` with
    ``undecodable_audio``, ``empty_audio``, ``nan_audio`` or ``too_long``."""
    fast = _decode_flac_fast(data, max_seconds) if ext == "flac" else None
    if fast is not None:
        return _validated(*fast, max_seconds)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr = int(f.samplerate)
            if max_seconds is not None and f.frames > 0 and f.frames / sr > max_seconds:
                raise SampleSkipped(SkipReason.TOO_LONG, f"{f.frames / sr:.1f} s > max_audio_seconds={max_seconds}")
            audio = f.read(dtype="float32", always_2d=False)
    except SampleSkipped:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError on garbage
        hint = ""
        if ext == "mp3" and "MP3" not in sf.available_formats():
            hint = f" (libsndfile {sf.__libsndfile_version__} has no MP3 support)"
        raise SampleSkipped(SkipReason.UNDECODABLE_AUDIO, f"{ext or 'audio'}: {exc}{hint}") from None
    return _validated(audio, sr, max_seconds)


def _validated(audio: np.ndarray, sr: int, max_seconds: float | None) -> tuple[np.ndarray, int]:
    if audio.size == 0 or audio.shape[0] == 0:
        raise SampleSkipped(SkipReason.EMPTY_AUDIO, "zero frames")
    if (
        not np.isfinite(audio.sum()) and not np.isfinite(audio).all()
    ):  # a finite sum: all finite (inf on overflow: scan)
        raise SampleSkipped(SkipReason.NAN_AUDIO, "NaN or infinite samples")
    if max_seconds is not None and audio.shape[0] / sr > max_seconds:
        raise SampleSkipped(SkipReason.TOO_LONG, f"{audio.shape[0] / sr:.1f} s > max_audio_seconds={max_seconds}")
    return audio, sr


def decode_image(data: bytes):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img.convert("RGB")
    except Exception as exc:
        raise SampleSkipped(SkipReason.BAD_IMAGE, str(exc)) from None
