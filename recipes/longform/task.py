"""A miniature long-audio extrapolation study: train on short recordings, test on 2x-8x longer ones.

The task ("which item?", an 8-way multiple choice scored over the item names ``A``..``H``): a recording is a
sequence of items, each a 0.32 s tone at one of 8 pitches (C4..C5; item name ``A`` = C4 ... ``H`` = C5), with
one *marker* item (a C6 tone) somewhere inside. Three questions about the same recording:

* ``first`` -- the first item. The answer is a whole recording away from the question (the positional probe).
* ``after`` -- the item right after the marker, which sits anywhere: needs local order (an induction lookup).
* ``last``  -- the item just before the question: the near-answer control.

Geometry (why it is exact): 16 kHz audio, 10 ms log-mel hop, encoder stride 2, pooling stride 4 -> 12.5 audio
tokens per second, so one 0.32 s item is exactly 4 audio tokens, and the encoder window (256 source positions =
5.12 s) holds exactly 16 items = 64 tokens. Long recordings are cut into whole windows at item boundaries and
every window is encoded on its own (as the real model does with 30 s windows), so the encoder sees nothing
longer than a training clip: all length effects live in the language model.

Frames are encoded once by the frozen stand-in encoder and cached (`encode_clips`); training and evaluation
then only run the projector + language model, with the project's own splice (`mm_encoder_outputs`), position
stretch, rotary embedding, `set_context_extension` and VLAT (`virtual_audio_tokens`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from audio_adapter.encoders.whisper import SAMPLING_RATE
from extension.vlat import VirtualLengthSampler

ITEM_SECONDS = 0.32  # 4 audio tokens at 12.5 tokens/s
TONE_SECONDS = 0.26  # + 0.06 s of near-silence, so two equal neighbours stay two items
TOKENS_PER_ITEM = 4
ITEMS_PER_WINDOW = 16  # 5.12 s encoder window = 64 tokens
ITEM_NAMES = tuple("ABCDEFGH")
ITEM_FREQS = tuple(440.0 * 2.0 ** (s / 12.0) for s in (-9, -7, -5, -4, -2, 0, 2, 3))  # C4 D4 E4 F4 G4 A4 B4 C5
MARKER = len(ITEM_NAMES)  # item id of the marker
MARKER_FREQ = 1046.5  # C6
QUESTIONS = ("first", "after", "last")

# The study's model: hidden 128, 2 layers, head_dim 32 (16 rotary pairs), 5.12 s windows, 4x pooling.
LONGFORM_MODEL = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "mrope_section": (4, 6, 6),
    "num_mel_bins": 80,
    "max_source_positions": 256,
    "audio_pool_stride": 4,
}


# ------------------------------------------------------------------------------------------ audio
def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def draw_items(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """(n_items,) int64 item ids in 0..7 with exactly one marker (id 8) at a position in [1, n_items - 2]."""
    if n_items < 3:
        raise ValueError(f"a recording needs at least 3 items (first, marker, one after it), got {n_items}")
    items = rng.integers(0, len(ITEM_NAMES), size=n_items)
    items[int(rng.integers(1, n_items - 1))] = MARKER
    return items


def render_items(items: np.ndarray, rng: np.random.Generator, noise: float = 0.005) -> np.ndarray:
    """Item ids -> float32 audio (len(items) * 0.32 s at 16 kHz): one faded tone per item, random amplitude
    and phase, light white noise."""
    n_item = int(round(ITEM_SECONDS * SAMPLING_RATE))
    n_tone = int(round(TONE_SECONDS * SAMPLING_RATE))
    t = np.arange(n_tone) / SAMPLING_RATE
    fade = int(0.01 * SAMPLING_RATE)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    envelope = np.ones(n_tone)
    envelope[:fade], envelope[-fade:] = ramp, ramp[::-1]
    audio = np.zeros(len(items) * n_item, np.float32)
    for i, item in enumerate(items.tolist()):
        freq = MARKER_FREQ if item == MARKER else ITEM_FREQS[item]
        amp, phase = rng.uniform(0.3, 0.6), rng.uniform(0, 2 * np.pi)
        audio[i * n_item : i * n_item + n_tone] = amp * envelope * np.sin(2 * np.pi * freq * t + phase)
    audio += noise * rng.standard_normal(audio.shape[0]).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def make_recordings(seed: int, count: int, n_items: int, stream: int = 0) -> tuple[list[np.ndarray], torch.Tensor]:
    """``count`` recordings of ``n_items`` items: (audio clips, (count, n_items) item ids). Recording ``i``
    depends only on (seed, stream, n_items, i)."""
    clips, items = [], []
    for i in range(count):
        rng = _rng(seed, i, stream * 10_000 + n_items)
        ids = draw_items(rng, n_items)
        clips.append(render_items(ids, rng))
        items.append(torch.from_numpy(ids))
    return clips, torch.stack(items)


@torch.no_grad()
def encode_clips(model, processor, clips: Sequence[np.ndarray], batch_windows: int = 64) -> list[torch.Tensor]:
    """Frozen encoder, pooled frames per clip (before the projector): a list of (tokens_i, d_audio) tensors.

    Every window is encoded on its own, exactly as `AudioVLMForConditionalGeneration.get_audio_features` does
    (same windows, mask and pooling); only the projector is left out, because it is trained afterwards."""
    from audio_adapter.processing.audio_features import extract_features
    from recipes.demo.standin_encoder import encode_pooled, pooled_frame_lengths

    stride = model.config.audio_pool_stride
    feats = extract_features(processor.prepare_audio(list(clips), SAMPLING_RATE), processor.mel)
    pooled = torch.cat(
        [
            encode_pooled(model.audio_tower, feats["input_features"][i : i + batch_windows], stride)
            for i in range(0, feats["input_features"].shape[0], batch_windows)
        ]
    )
    lengths = pooled_frame_lengths(feats["input_features_mask"], stride)
    windows = [pooled[w, : int(n)] for w, n in enumerate(lengths)]
    out, w = [], 0
    for count in feats["audio_chunk_counts"].tolist():
        out.append(torch.cat(windows[w : w + count]))
        w += count
    return out


# ------------------------------------------------------------------------------------------ prompts
@dataclass
class TaskTokens:
    """Token ids of the prompt ``Listen:<|audio_bos|> n x <|AUDIO|> <|audio_eos|> <question>:``."""

    prefix: list[int]
    audio_bos: int
    audio: int
    audio_eos: int
    question: dict[str, int]
    colon: int
    names: torch.Tensor  # (8,) ids of " A".." H", the answer candidates

    @classmethod
    def build(cls, model, tokenizer) -> TaskTokens:
        def one(text: str) -> int:
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"{text!r} is {len(ids)} tokens in this tokenizer; the task needs single tokens")
            return ids[0]

        cfg = model.config
        return cls(
            prefix=tokenizer.encode("Listen:", add_special_tokens=False),
            audio_bos=cfg.audio_bos_token_id,
            audio=cfg.audio_token_id,
            audio_eos=cfg.audio_eos_token_id,
            question={q: one(" " + q) for q in QUESTIONS},
            colon=one(":"),
            names=torch.tensor([one(" " + n) for n in ITEM_NAMES]),
        )

    def input_ids(self, question: str, n_audio: int, batch: int) -> torch.Tensor:
        ids = (
            self.prefix
            + [self.audio_bos]
            + [self.audio] * n_audio
            + [self.audio_eos, self.question[question], self.colon]
        )
        return torch.tensor(ids)[None].expand(batch, -1).contiguous()

    def length(self, n_audio: int) -> int:
        """Prompt length in tokens for an audio span of ``n_audio`` tokens."""
        return len(self.prefix) + n_audio + 4


def answers(items: torch.Tensor, question: str) -> torch.Tensor:
    """(B, n) item ids -> (B,) the answer item of ``question``."""
    if question == "first":
        return items[:, 0]
    if question == "last":
        return items[:, -1]
    if question == "after":
        marker = (items == MARKER).long().argmax(-1)
        return items[torch.arange(items.shape[0]), marker + 1]
    raise ValueError(f"question must be one of {QUESTIONS}, got {question!r}")


def answer_logits(model, tokens: TaskTokens, frames: torch.Tensor, question: str, virtual=None) -> torch.Tensor:
    """(B, n_audio, d_audio) cached encoder frames -> (B, 8) logits of the item names after the question."""
    batch, n_audio = frames.shape[:2]
    ids = tokens.input_ids(question, n_audio, batch)
    embeds = model.audio_projector(frames, torch.full((batch,), n_audio))  # every cached frame is a token
    out = model(input_ids=ids, mm_encoder_outputs={"audio": [embeds]}, virtual_audio_tokens=virtual, logits_to_keep=1)
    return out.logits[:, -1][:, tokens.names]


# ------------------------------------------------------------------------------------------ training
@dataclass
class TrainPool:
    """Cached 16-item training recordings: frames (P, 64, d_audio) and item ids (P, 16)."""

    frames: torch.Tensor
    items: torch.Tensor

    def batch(self, n_items: int, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A crop of ``n_items`` consecutive items from ``batch`` random recordings, each crop keeping the
        recording's marker at a position in [1, n_items - 2]. Returns ((B, 4 n, d) frames, (B, n) items)."""
        pool, width = self.items.shape
        idx = torch.randint(0, pool, (batch,), generator=gen)
        marker = (self.items[idx] == MARKER).long().argmax(-1)
        low = (marker - (n_items - 2)).clamp(min=0)
        high = torch.minimum(marker - 1, torch.full_like(marker, width - n_items))
        start = low + (torch.rand(batch, generator=gen) * (high - low + 1)).long().clamp(max=high - low)
        item_idx = start[:, None] + torch.arange(n_items)[None]
        tok_idx = (start * TOKENS_PER_ITEM)[:, None] + torch.arange(n_items * TOKENS_PER_ITEM)[None]
        frames = self.frames[idx[:, None], tok_idx]
        return frames, self.items[idx[:, None], item_idx]


@dataclass
class TrainSettings:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    min_items: int = 4
    max_items: int = ITEMS_PER_WINDOW
    vlat_strategy: str | None = None  # None: vanilla; else VLAT with `extension.vlat.VirtualLengthSampler`
    vlat_raw_share: float = 0.0  # VLAT: this share of samples keeps its raw positions (virtual length = real)
    seed: int = 0


def train_lm(
    model,
    tokens: TaskTokens,
    pool: TrainPool,
    settings: TrainSettings,
    progress: Callable[[int, float, float], None] | None = None,
) -> dict:
    """Train the projector + the whole language model (from scratch) on the pool, questions taking turns.

    The model's context extension must be ``none`` (vanilla) -- VLAT adds ``virtual_audio_tokens`` drawn per
    sample. Returns ``{"losses", "accuracies", "seconds", "max_position"}``: ``max_position`` is the largest
    raw position id any training prompt had (positions are 0..L-1 when no extension is active)."""
    if model.context_extension.method != "none":
        raise ValueError(f"train with context extension 'none', got {model.context_extension.method!r}")
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(not (name.startswith("audio_tower") or ".visual." in name or name.startswith("model.visual")))
        if p.requires_grad:
            trainable.append(p)
    opt = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    sampler = VirtualLengthSampler(settings.vlat_strategy, seed=settings.seed) if settings.vlat_strategy else None
    gen = torch.Generator().manual_seed(settings.seed + 1)
    losses, accs = [], []
    max_position = 0
    model.train()
    start = time.perf_counter()
    for step in range(settings.steps):
        n_items = int(torch.randint(settings.min_items, settings.max_items + 1, (1,), generator=gen))
        question = QUESTIONS[step % len(QUESTIONS)]
        frames, items = pool.batch(n_items, settings.batch_size, gen)
        target = answers(items, question)
        virtual = None
        if sampler is not None:
            virtual = sampler.virtual_lengths(model.base_audio_tokens, settings.batch_size)
            if settings.vlat_raw_share > 0:
                raw = torch.rand(settings.batch_size, generator=gen) < settings.vlat_raw_share
                virtual[raw] = float(frames.shape[1])  # a span mapped onto its own length: raw positions
        warm = min(1.0, (step + 1) / settings.warmup_steps)
        lr = settings.lr * warm * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        logits = answer_logits(model, tokens, frames, question, virtual)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        max_position = max(max_position, tokens.length(frames.shape[1]) - 1)
        losses.append(float(loss.detach()))
        accs.append(float((logits.argmax(-1) == target).float().mean()))
        if progress is not None:
            progress(step + 1, losses[-1], accs[-1])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return {"losses": losses, "accuracies": accs, "seconds": time.perf_counter() - start, "max_position": max_position}


# ------------------------------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class Method:
    """An inference-time extension: name (``none``, ``partial_pi``, ``partial_yarn``, ``whole_pi``,
    ``whole_yarn``) with Partial YaRN's cutoff and temperature."""

    name: str
    cutoff: int = 0
    temperature: float = 1.0

    @property
    def label(self) -> str:
        if self.name == "partial_yarn":
            return f"partial_yarn c{self.cutoff} t{self.temperature:g}"
        return self.name

    def apply(self, model, base_audio_seconds: float) -> None:
        model.set_context_extension(
            method=self.name, base_audio_seconds=base_audio_seconds, cutoff=self.cutoff, temperature=self.temperature
        )


@torch.no_grad()
def accuracy(
    model, tokens: TaskTokens, frames: torch.Tensor, items: torch.Tensor, question: str, batch_size: int = 50
) -> tuple[int, int]:
    """(correct, total) of ``question`` over cached recordings (frames (N, T, d), items (N, n))."""
    target = answers(items, question)
    correct = 0
    for i in range(0, frames.shape[0], batch_size):
        logits = answer_logits(model, tokens, frames[i : i + batch_size], question)
        correct += int((logits.argmax(-1) == target[i : i + batch_size]).sum())
    return correct, int(frames.shape[0])


def rotary_wavelengths(model) -> list[float]:
    """Wavelength 2 pi / theta_i (in positions) of every rotary pair, highest frequency first."""
    inv_freq = model.model.language_model.rotary_emb.inv_freq
    return [float(2 * math.pi / f) for f in inv_freq.tolist()]
