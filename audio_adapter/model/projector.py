"""Audio projectors: pooled encoder frames of each window -> audio-token embeddings of the language model.

Every projector has the same interface (`forward(frames, token_lengths)`), owns its weight initialisation
(`init_module`: one of its submodules, called by the model's ``_init_weights``; `reinitialize`: all of it) and
is built from the config by `build_audio_projector`:

    "linear"     the paper's: one ``nn.Linear(d_audio, hidden, bias=False)`` per frame (saved key
                 ``audio_projector.weight``); projector_stack_factor must be 1.
    "stack_mlp"  Ultravox-style: stack ``projector_stack_factor`` consecutive frames (zero-padding a window's
                 tail) -> RMSNorm -> SwiGLU MLP -> hidden. Each token then covers ``stack_factor`` frames, which
                 `AudioVLMConfig.audio_frames_per_token` (pool stride x stack factor) accounts for.

Adding a projector: a class here with that interface, a line in `PROJECTORS`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def check_projector_settings(projector_type: str, stack_factor: int) -> None:
    """Raise ValueError naming the bad value for an unknown type or a stack factor the type cannot use."""
    if projector_type not in PROJECTORS:
        raise ValueError(f"projector_type must be one of {tuple(PROJECTORS)}, got {projector_type!r}")
    if isinstance(stack_factor, bool) or not isinstance(stack_factor, int) or stack_factor < 1:
        raise ValueError(f"projector_stack_factor must be an int >= 1, got {stack_factor!r}")
    if not PROJECTORS[projector_type].stacks_frames and stack_factor != 1:
        stacking = tuple(name for name, cls in PROJECTORS.items() if cls.stacks_frames)
        raise ValueError(
            f"projector_stack_factor {stack_factor} needs a stacking projector_type {stacking}; "
            f"projector_type {projector_type!r} projects single frames (stack factor 1)"
        )


def select_tokens(frames: torch.Tensor, token_lengths: torch.Tensor) -> torch.Tensor:
    """(N, T, d) frames, (N,) counts -> (sum(counts), d): the first ``token_lengths[i]`` frames of each window."""
    lengths = token_lengths.to(frames.device)
    valid = torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]
    return frames[valid]


def stack_frames(frames: torch.Tensor, stack_factor: int) -> torch.Tensor:
    """(N, T, d) -> (N, ceil(T / k), k * d): runs of k consecutive frames side by side, zero-padded tail."""
    if stack_factor == 1:
        return frames
    batch, length, dim = frames.shape
    padded = F.pad(frames, (0, 0, 0, -length % stack_factor))
    return padded.reshape(batch, -1, stack_factor * dim)


class LinearAudioProjector(nn.Linear):
    """The paper's projector: ``audio_embeds = frames @ W.T`` with W (hidden, d_audio), no bias."""

    stacks_frames = False

    def __init__(self, d_audio: int, hidden_size: int, initializer_range: float):
        super().__init__(d_audio, hidden_size, bias=False)
        self.initializer_range = float(initializer_range)

    @classmethod
    def from_config(cls, config) -> LinearAudioProjector:
        text = config.text_config
        return cls(config.audio_config.d_model, text.hidden_size, text.initializer_range)

    def forward(self, frames: torch.Tensor, token_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, d_audio) frames + (N,) token counts -> (sum(counts), hidden); without counts, every frame
        of any (..., d_audio) input is projected (select first: projecting padding would be wasted work)."""
        if token_lengths is not None:
            frames = select_tokens(frames, token_lengths)
        return super().forward(frames.to(self.weight.dtype))

    def init_module(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) weight (torch init functions: flag-aware inside transformers' init)."""
        if module is self:
            nn.init.normal_(self.weight, mean=0.0, std=self.initializer_range)

    def reinitialize(self) -> None:
        for module in self.modules():
            self.init_module(module)


class StackMLPAudioProjector(nn.Module):
    """Ultravox-style: stack k frames -> RMSNorm(k * d_audio) -> SwiGLU (k * d_audio -> hidden -> hidden)."""

    stacks_frames = True

    def __init__(self, d_audio: int, hidden_size: int, stack_factor: int, initializer_range: float, eps: float):
        super().__init__()
        self.stack_factor = int(stack_factor)
        self.initializer_range = float(initializer_range)
        stacked = self.stack_factor * d_audio
        self.norm = nn.RMSNorm(stacked, eps=eps)
        self.gate_up = nn.Linear(stacked, 2 * hidden_size, bias=False)
        self.down = nn.Linear(hidden_size, hidden_size, bias=False)

    @classmethod
    def from_config(cls, config) -> StackMLPAudioProjector:
        text = config.text_config
        return cls(
            config.audio_config.d_model,
            text.hidden_size,
            config.projector_stack_factor,
            text.initializer_range,
            text.rms_norm_eps,
        )

    def forward(self, frames: torch.Tensor, token_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, d_audio) frames + (N,) token counts -> (sum(counts), hidden): the first ``counts[i]`` stacked
        frames of window i. Without counts: (N, ceil(T / k), hidden), every stacked frame."""
        stacked = stack_frames(frames, self.stack_factor)
        if token_lengths is not None:
            stacked = select_tokens(stacked, token_lengths)
        x = self.norm(stacked.to(self.gate_up.weight.dtype))
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)

    def init_module(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)

    def reinitialize(self) -> None:
        for module in self.modules():
            self.init_module(module)


# projector_type -> class (each with `from_config`, `stacks_frames`, `init_module`, `reinitialize`)
PROJECTORS: dict[str, type[nn.Module]] = {"linear": LinearAudioProjector, "stack_mlp": StackMLPAudioProjector}


def build_audio_projector(config) -> nn.Module:
    """The projector `config.projector_type` names, from the audio width to the text hidden size.

    Its weights are initialised by the model's ``post_init`` (through `init_module`) or by `reinitialize`."""
    check_projector_settings(config.projector_type, config.projector_stack_factor)
    return PROJECTORS[config.projector_type].from_config(config)
