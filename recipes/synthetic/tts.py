"""Offline English speech synthesis with eSpeak NG, through ctypes (no subprocess, no download).

The PyPI package ``espeakng-loader`` ships ``libespeak-ng.so`` and its ``espeak-ng-data``; this module drives
the library's C API directly: ``espeak_Initialize`` (synchronous output), ``espeak_SetSynthCallback`` (the
samples are collected into a buffer), ``espeak_SetVoiceByName``, ``espeak_SetParameter`` (rate, pitch, word gap)
and ``espeak_Synth``. The speech is robotic but real: phonemes, prosody, word boundaries.

The library holds global state (one voice, one callback), so every call takes a process-wide lock, and it is
initialised once per process (again after a fork, e.g. in a DataLoader worker). Output is a pure function of
(text, `Speaker`): `random_speaker(rng)` draws the speaker variety (voice variant, rate, pitch, word gap).

    audio, sr = synthesize("three one four", Speaker(voice="en-us+f3", rate=160))   # float32 (T,), 22050
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

import numpy as np

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAMETERS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "word_gap": 7}

VOICES = ("en-us", "en")  # American and British English
VARIANTS = ("", "+m1", "+m3", "+m7", "+f1", "+f2", "+f3", "+f4")
RATE_RANGE = (80, 450)  # words per minute the library accepts
PITCH_RANGE = (0, 99)
WORD_GAP_RANGE = (0, 100)  # extra pause between words, units of 10 ms


class SpeechSynthesisError(RuntimeError):
    """eSpeak NG could not be loaded or refused a request."""


@dataclass(frozen=True)
class Speaker:
    """How a text is spoken. ``voice``: an eSpeak voice name with an optional variant (``"en-us+f3"``);
    ``rate`` words per minute (80..450); ``pitch`` 0..99 (50 normal); ``word_gap``: extra pause between words in
    units of 10 ms (0..100)."""

    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50
    word_gap: int = 0
    seed: int = 0  # seed of the library's own random generator (``espeak_ng_SetRandSeed``)

    def __post_init__(self) -> None:
        for name, value, (low, high) in (
            ("rate", self.rate, RATE_RANGE),
            ("pitch", self.pitch, PITCH_RANGE),
            ("word_gap", self.word_gap, WORD_GAP_RANGE),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"Speaker.{name} must be an int in [{low}, {high}], got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise ValueError(f"Speaker.seed must be an int in [0, 2**31), got {self.seed!r}")
        if not isinstance(self.voice, str) or not self.voice or any(c.isspace() for c in self.voice):
            raise ValueError(f"Speaker.voice must be a voice name such as 'en-us' or 'en-us+f3', got {self.voice!r}")


def random_speaker(rng: np.random.Generator, word_gap: tuple[int, int] = (0, 6)) -> Speaker:
    """A speaker drawn from ``rng``: accent, voice variant, rate 140..210 wpm, pitch 30..70, word gap, jitter seed."""
    voice = VOICES[int(rng.integers(0, len(VOICES)))] + VARIANTS[int(rng.integers(0, len(VARIANTS)))]
    return Speaker(
        voice=voice,
        rate=int(rng.integers(140, 211)),
        pitch=int(rng.integers(30, 71)),
        word_gap=int(rng.integers(word_gap[0], word_gap[1] + 1)),
        seed=int(rng.integers(0, 2**31)),
    )


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _bind(lib) -> None:
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Terminate.restype = ctypes.c_int


class _Engine:
    """Where the library and its data are, and the buffer the synthesis callback fills.

    eSpeak NG carries waveform state (e.g. the glottal phase) from one utterance into the next inside the
    library's static variables, which neither ``espeak_Initialize`` nor ``espeak_ng_Terminate`` resets: the
    same text spoken twice in one process comes out a few samples different (measured). So every utterance
    gets a freshly loaded library (``dlopen`` -> speak -> ``dlclose``, about 15 ms), which makes the output a
    pure function of (text, speaker)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise SpeechSynthesisError(
                f"speech synthesis needs the espeakng-loader package ({exc}); install it: pip install espeakng-loader"
            ) from None
        self.lib_path, self.data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        self.pid = os.getpid()
        self.chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library calls it during espeak_Synth
        lib = self._open()
        self.sampling_rate = self._initialize(lib)
        self._close(lib)

    def _open(self):
        try:
            lib = ctypes.CDLL(self.lib_path)
        except OSError as exc:
            raise SpeechSynthesisError(f"could not load eSpeak NG from {self.lib_path}: {exc}") from None
        _bind(lib)
        return lib

    def _initialize(self, lib) -> int:
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if rate <= 0:
            raise SpeechSynthesisError(f"espeak_Initialize failed (returned {rate}) with data at {self.data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        return int(rate)

    @staticmethod
    def _close(lib) -> None:
        import _ctypes

        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)

    def _collect(self, wav, n, events) -> int:
        if wav and n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0: continue synthesis

    def synthesize(self, text: str, speaker: Speaker) -> np.ndarray:
        lib = self._open()
        try:
            self._initialize(lib)
            if lib.espeak_SetVoiceByName(speaker.voice.encode()) != 0:
                raise SpeechSynthesisError(f"eSpeak NG has no voice {speaker.voice!r} (try e.g. 'en-us', 'en-us+f3')")
            for name in ("rate", "pitch", "word_gap"):
                if lib.espeak_SetParameter(_PARAMETERS[name], getattr(speaker, name), 0) != 0:
                    raise SpeechSynthesisError(f"eSpeak NG refused {name}={getattr(speaker, name)}")
            lib.espeak_ng_SetRandSeed(speaker.seed)
            self.chunks = []
            data = text.encode("utf-8")
            status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            if status != 0:
                raise SpeechSynthesisError(f"espeak_Synth failed with status {status} for text {text[:60]!r}")
            pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        finally:
            self.chunks = []
            self._close(lib)
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None or _ENGINE.pid != os.getpid():  # a forked child initialises its own copy
        _ENGINE = _Engine()
    return _ENGINE


def sampling_rate() -> int:
    """The synthesiser's output rate (22,050 Hz for eSpeak NG)."""
    with _LOCK:
        return _engine().sampling_rate


def synthesize(text: str, speaker: Speaker = Speaker()) -> tuple[np.ndarray, int]:
    """Speak ``text``: (float32 mono audio (T,) in [-1, 1], sampling rate). Deterministic for (text, speaker)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text to speak must be a non-empty string, got {text!r}")
    if not isinstance(speaker, Speaker):
        raise ValueError(f"speaker must be a Speaker, got {type(speaker).__name__}")
    with _LOCK:
        engine = _engine()
        return engine.synthesize(text, speaker), engine.sampling_rate
