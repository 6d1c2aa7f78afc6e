"""Tiny random-init models and an offline processor with the real token layout, for tests, demos, benchmarks."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel, WhisperConfig

from ..encoders.audio_lengths import frames_per_token, window_seconds
from ..encoders.whisper import WHISPER
from ..families import FAMILIES
from ..pretrained.loading import suppress_audio_tokens
from ..processing.processor import AudioVLMProcessor
from ..processing.tokenizer import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN, build_qwen_tokenizer
from .hub_replicas import make_hub_replicas  # noqa: F401  (re-exported: offline copies of the real checkpoints)

# Every knob `tiny_model_and_processor` accepts, with its default.
TINY_DEFAULTS = {
    "max_rank": 2048,  # BPE ranks kept (None = the full 151,643-rank Qwen vocabulary)
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "mrope_section": (2, 3, 3),  # sums to head_dim / 2 = 8
    "vision_depth": 1,
    "vision_embed_dim": 32,
    "audio_d_model": 64,
    "audio_layers": 2,
    "audio_heads": 4,
    "audio_ffn_dim": 128,
    "num_mel_bins": WHISPER.num_mel_bins,
    "max_source_positions": WHISPER.max_source_positions,  # the real 30 s / 1500-frame window geometry
    "audio_pool_stride": 1,
    "projector_type": "linear",
    "projector_stack_factor": 1,
    "context_extension": None,
    "family": "qwen2_vl",  # stock model_type of the VLM family (`audio_adapter.families.FAMILIES`)
    "max_position_embeddings": 32768,
}

# The "3-second tiny" preset most tests use (``tiny_model_and_processor(**TINY_3S)``): 3 s encoder windows (150
# encoder frames x 2 mel frames x 10 ms) and 80 mel bins, so log-mel and the encoder stay cheap on CPU and a
# synthetic clip (< 3 s) fits one window. The tiny recipes (recipes/configs/tiny_stage*.yaml) set the same values.
TINY_3S = {"max_source_positions": 150, "num_mel_bins": 80}


def _resolve(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(TINY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown tiny-model overrides {unknown}; valid: {sorted(TINY_DEFAULTS)}")
    return {**TINY_DEFAULTS, **overrides}


def tiny_qwen2vl_kwargs(vocab_size: int, **overrides) -> dict:
    """Keyword arguments for a tiny `Qwen2VLConfig` (shared by our config and the stock-model tests)."""
    s = _resolve(overrides)
    return {
        "text_config": {
            "vocab_size": vocab_size,
            "hidden_size": s["hidden_size"],
            "intermediate_size": s["intermediate_size"],
            "num_hidden_layers": s["num_hidden_layers"],
            "num_attention_heads": s["num_attention_heads"],
            "num_key_value_heads": s["num_key_value_heads"],
            "max_position_embeddings": s["max_position_embeddings"],
            "bos_token_id": None,  # Qwen's 151643/151645 defaults lie outside a truncated vocabulary
            "eos_token_id": None,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": list(s["mrope_section"]),
            },
        },
        "vision_config": {
            "depth": s["vision_depth"],
            "embed_dim": s["vision_embed_dim"],
            "hidden_size": s["hidden_size"],
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
    }


def tiny_qwen2_5_vl_kwargs(vocab_size: int, **overrides) -> dict:
    """Keyword arguments for a tiny `Qwen2_5_VLConfig`: Qwen2-VL's text model, Qwen2.5's vision tower (RMSNorm,
    SwiGLU, window attention: two blocks, the last with full attention, windows of 2 x 2 merged patches)."""
    s = _resolve(overrides)
    vision = {
        "depth": s["vision_depth"] + 1,
        "hidden_size": s["vision_embed_dim"],
        "intermediate_size": 2 * s["vision_embed_dim"],
        "num_heads": 2,
        "out_hidden_size": s["hidden_size"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
        "window_size": 56,
        "fullatt_block_indexes": [s["vision_depth"]],
    }
    return {**tiny_qwen2vl_kwargs(vocab_size, **overrides), "vision_config": vision}


# family -> keyword arguments of its tiny stock config (vocab_size, **overrides) -> dict
TINY_FAMILY_KWARGS = {"qwen2_vl": tiny_qwen2vl_kwargs, "qwen2_5_vl": tiny_qwen2_5_vl_kwargs}


def tiny_family_kwargs(vocab_size: int, **overrides) -> dict:
    """Keyword arguments for the tiny stock config of ``overrides["family"]`` (default Qwen2-VL)."""
    family = _resolve(overrides)["family"]
    if family not in TINY_FAMILY_KWARGS:
        raise ValueError(f"unknown tiny-model family {family!r}; valid: {sorted(TINY_FAMILY_KWARGS)}")
    return TINY_FAMILY_KWARGS[family](vocab_size, **overrides)


def tiny_processor(**overrides) -> AudioVLMProcessor:
    """Offline processor: truncated Qwen BPE + Qwen2-VL special tokens + audio tokens, small images."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    s = _resolve(overrides)
    tokenizer = build_qwen_tokenizer(s["max_rank"])
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2)
    chunk_seconds = window_seconds(s["max_source_positions"])
    # the processor counts placeholder tokens with the config's frames_per_token: pool stride x stack factor
    return AudioVLMProcessor(
        tokenizer,
        image_processor,
        n_mels=s["num_mel_bins"],
        chunk_seconds=chunk_seconds,
        audio_frames_per_token=frames_per_token(s["audio_pool_stride"], s["projector_stack_factor"]),
    )


def tiny_config(processor: AudioVLMProcessor, **overrides) -> PreTrainedConfig:
    """The tiny audio config of ``overrides["family"]`` whose token ids match ``processor``'s tokenizer."""
    s = _resolve(overrides)
    tokenizer = processor.tokenizer
    vocab_size = ((len(tokenizer) + 63) // 64) * 64  # spare rows, like the real 152,064 > 151,657
    audio_config = WhisperConfig(
        d_model=s["audio_d_model"],
        encoder_layers=s["audio_layers"],
        encoder_attention_heads=s["audio_heads"],
        encoder_ffn_dim=s["audio_ffn_dim"],
        decoder_layers=1,
        decoder_attention_heads=s["audio_heads"],
        decoder_ffn_dim=s["audio_ffn_dim"],
        num_mel_bins=s["num_mel_bins"],
        max_source_positions=s["max_source_positions"],
        # decoder-side ids only matter to a full WhisperModel built from this config (tests compare against one)
        vocab_size=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    return FAMILIES[s["family"]].config_class(
        **tiny_family_kwargs(vocab_size, **overrides),
        audio_config=audio_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        audio_bos_token_id=tokenizer.convert_tokens_to_ids(AUDIO_BOS_TOKEN),
        audio_token_id=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
        audio_eos_token_id=tokenizer.convert_tokens_to_ids(AUDIO_EOS_TOKEN),
        audio_pool_stride=s["audio_pool_stride"],
        projector_type=s["projector_type"],
        projector_stack_factor=s["projector_stack_factor"],
        context_extension=s["context_extension"],
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_model_and_processor(seed: int = 0, **overrides) -> tuple[PreTrainedModel, AudioVLMProcessor]:
    """A tiny random-init audio model (float32, eval mode) and its offline processor.

    Deterministic for a seed; nothing touches the network. Overrides: see `TINY_DEFAULTS` (``family`` picks the
    VLM family, default ``"qwen2_vl"``: an `AudioVLMForConditionalGeneration`).
    """
    processor = tiny_processor(**overrides)
    config = tiny_config(processor, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FAMILIES[_resolve(overrides)["family"]].model_class(config)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    suppress_audio_tokens(model.generation_config, config)
    return model.eval(), processor
