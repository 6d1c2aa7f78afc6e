"""Read a CTranslate2 ``model.bin`` (format version 6) into numpy arrays, without CTranslate2 itself.

The layout (little-endian; a *string* is a ``u16`` byte count, trailing NUL included, then the bytes):
``u32`` version, string spec name, ``u32`` spec revision, ``u32`` variable count, then per variable: string name,
``u8`` rank, ``u32`` x rank shape, ``u8`` dtype id, ``u32`` byte count, the bytes; then ``u32`` alias count and
(alias, target) string pairs. Scalars (rank 0) are settings such as ``encoder/num_heads``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUPPORTED_VERSION = 6
# CTranslate2's DataType enum, in its order (bf16 is kept as raw uint16: numpy has no bfloat16).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}


@dataclass(frozen=True)
class CTranslate2Model:
    """``spec`` (e.g. ``"WhisperSpec"``), its ``revision``, ``variables`` by name (aliases resolved into extra
    names pointing at the same array) and the ``aliases`` themselves (alias -> target)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.offset, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.offset + n > len(self.data):
            raise ValueError(f"{self.path} ends early (needs {n} bytes at offset {self.offset}): truncated model.bin?")
        view = memoryview(self.data)[self.offset : self.offset + n]
        self.offset += n
        return view

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.u("H"))).rstrip(b"\0").decode("utf-8")


def read_ctranslate2_model(path: str | Path) -> CTranslate2Model:
    """Every variable of a CTranslate2 ``model.bin`` as a read-only numpy array in its stored dtype."""
    path = Path(path)
    cursor = _Cursor(path.read_bytes(), path)
    version = cursor.u("I")
    if version != SUPPORTED_VERSION:
        raise ValueError(f"{path}: CTranslate2 model format version {version}; only {SUPPORTED_VERSION} is read here")
    spec, revision = cursor.string(), cursor.u("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(cursor.u("I")):
        name = cursor.string()
        shape = tuple(cursor.u("I") for _ in range(cursor.u("B")))
        dtype_id, nbytes = cursor.u("B"), cursor.u("I")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        array = np.frombuffer(cursor.take(nbytes), dtype=_DTYPES[dtype_id])
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{path}: variable {name!r} holds {array.size} values for shape {shape}")
        variables[name] = array.reshape(shape)
    aliases = {}
    for _ in range(cursor.u("I")):
        alias, target = cursor.string(), cursor.string()
        aliases[alias] = target
        variables[alias] = variables[target]
    if cursor.offset != len(cursor.data):
        raise ValueError(f"{path}: {len(cursor.data) - cursor.offset} bytes left after the aliases")
    return CTranslate2Model(spec, revision, variables, aliases)
