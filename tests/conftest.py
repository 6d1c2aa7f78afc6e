"""Shared fixtures. Everything is offline: tiny random-init models, an offline tokenizer, synthesised audio."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# OpenMP threads that find no work SLEEP instead of spinning: two xdist workers (and the CLI tests' own
# interpreters) share 2 cores, and spinning threads steal them. Read when OpenMP loads, so before torch (the
# workers inherit it; scripts/test.sh exports it too). Measured on 2 cores (2026-12-03): two processes of 2
# threads each running the same small-matmul loop took 28.6 s each with the default policy, 10.1 s passive
# (5.9 s for one alone).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after OMP_WAIT_POLICY)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two intra-op threads per xdist worker, and OMP_NUM_THREADS for the CLI tests' own interpreters. Measured on 2
# AVX2-emulated cores (2026-12-03, one run each): 2 threads per worker 409 s, 1 thread per worker 484 s (that
# run also had a bf16 README block since made float32, ~30 s of it): a worker waiting on a subprocess or
# finishing early leaves its core to the other.
SUITE_THREADS = max(1, min(2, os.cpu_count() or 1))
os.environ["OMP_NUM_THREADS"] = str(SUITE_THREADS)
torch.set_num_threads(SUITE_THREADS)

from audio_adapter.families import FAMILIES  # noqa: E402  (after the offline switches above)


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the default tiny configuration; do not mutate (use `tiny_model_and_processor`)."""
    from audio_adapter.testing import tiny_model_and_processor

    return tiny_model_and_processor(seed=0)


@pytest.fixture(scope="session", params=sorted(FAMILIES))
def family(request) -> str:
    """Each registered VLM family's stock model_type (`audio_adapter.families.FAMILIES`): a test or fixture that
    takes it runs once per family, so every family passes the same behavioural tests."""
    return request.param


@pytest.fixture(scope="session")
def tiny_family(family, request):
    """`tiny` of each VLM family (`family`): (model, processor), seed 0, default tiny settings; do not mutate."""
    from audio_adapter.testing import TINY_DEFAULTS, tiny_model_and_processor

    if family == TINY_DEFAULTS["family"]:
        return request.getfixturevalue("tiny")
    return tiny_model_and_processor(seed=0, family=family)


@pytest.fixture(scope="session")
def hub_replicas(tmp_path_factory):
    """Offline copies of Qwen/Qwen2-VL-7B-Instruct and openai/whisper-large-v3-turbo with the real files and tiny
    widths (`audio_adapter.testing.make_hub_replicas`): ``{"vlm": Path, "whisper": Path}``. Do not modify them.
    The tokenizer config says ``padding_side: right`` (the hard case for generation: the processor must pad left)."""
    from audio_adapter.testing import make_hub_replicas

    return make_hub_replicas(tmp_path_factory.mktemp("hub"), padding_side="right")


@pytest.fixture(scope="session")
def hub_replica_qwen2_5_vl(hub_replicas):
    """Offline copy of Qwen/Qwen2.5-VL-7B-Instruct (`audio_adapter.testing.hub_replica_qwen2_5_vl`) beside the Qwen2-VL
    one, with the same Whisper replica: ``{"vlm": Path, "whisper": Path}``. Do not modify them."""
    from audio_adapter.testing.hub_replica_qwen2_5_vl import QWEN2_5_VL_DIR, make_qwen2_5_vl_replica

    return {
        "vlm": make_qwen2_5_vl_replica(hub_replicas["vlm"].parent / QWEN2_5_VL_DIR, seed=2),
        "whisper": hub_replicas["whisper"],
    }


@pytest.fixture(scope="session")
def offline_parts() -> dict[str, Path]:
    """``{"vlm": <smollm2-135m-instruct-vl>, "whisper": <whisper-tiny.en>}``; do not modify them."""
    from audio_adapter.pretrained.offline_parts import build_offline_parts, default_parts_dir

    return build_offline_parts(default_parts_dir())
