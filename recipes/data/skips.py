"""Skipping bad data: the reasons (`SkipReason`), the exception that carries one (`SampleSkipped`) and the
per-process counter that logs and counts them (`SkipCounter`)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class SkipReason:
    """Reasons a sample (or a whole shard) is skipped. Plain strings, so counts serialise as JSON."""

    UNREADABLE_SHARD = "unreadable_shard"  # the shard cannot be opened (missing file, I/O error)
    CORRUPT_SHARD = "corrupt_shard"  # garbage where a tar header should be (once per damaged stretch)
    TRUNCATED_MEMBER = "truncated_member"  # the tar ends inside a member
    DUPLICATE_MEMBER = "duplicate_member"  # two members with the same key and extension
    DUPLICATE_KEY = "duplicate_key"  # a sample key seen before in this epoch (reader); twice in a manifest (writer)
    MEMBER_TOO_LARGE = "member_too_large"  # a tar member above max_member_bytes (never read)
    MISSING_AUDIO = "missing_audio"
    MISSING_JSON = "missing_json"
    MISSING_IMAGE = "missing_image"  # the JSON has an image turn but the sample has no image
    BAD_JSON = "bad_json"  # not JSON, not an object, or fields of the wrong type/shape
    CONTROL_TOKEN = "control_token"  # a chat-control token (<|im_end|>, <|image_pad|>, ...) typed inside text
    MISSING_FIELDS = "missing_fields"  # neither messages nor prompt+response, no assistant turn, ...
    UNDECODABLE_AUDIO = "undecodable_audio"
    EMPTY_AUDIO = "empty_audio"
    NAN_AUDIO = "nan_audio"  # NaN or infinite samples
    TOO_LONG = "too_long"  # audio above max_audio_seconds, or text above max_tokens tokens
    BAD_AUDIO = "bad_audio"  # decoded, but the processor refused it (shape, ...)
    BAD_IMAGE = "bad_image"
    ENCODE_ERROR = "encode_error"  # the processor failed on the sample at collation
    NO_TRANSCRIPT = "no_transcript"  # the loss needs the sample's transcript (TextTeacherKL) and it has none
    # writer only
    BAD_MANIFEST_LINE = "bad_manifest_line"
    BAD_KEY = "bad_key"
    MISSING_FILE = "missing_file"


class NoDataError(RuntimeError):
    """A pass over the data yielded no sample at all (every shard missing or unreadable, every sample bad).
    Raised instead of an empty epoch, which a training loop would repeat without end."""


class SampleSkipped(Exception):
    """Raised inside the pipeline to skip one sample; carries the reason (a `SkipReason` value)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Counts skipped samples by reason and logs them (the first ``log_first`` per reason at WARNING,
    the rest at DEBUG). ``counts`` is a `collections.Counter`; ``counter["too_long"]`` is 0 when unseen."""

    def __init__(self, log_first: int = 5, name: str = "data"):
        self.counts: Counter = Counter()
        self.log_first = int(log_first)
        self.name = name
        self._logged: Counter = Counter()
        self._delta: Counter = Counter()

    def add(self, reason: str, key: str | None = None, url: str | None = None, detail: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        self._delta[reason] += n
        where = " ".join(p for p in (f"key={key}" if key else "", f"shard={url}" if url else "") if p)
        msg = f"[{self.name}] skipped ({reason}) {where} {detail}".rstrip()
        level = logging.WARNING if self._logged[reason] < self.log_first else logging.DEBUG
        self._logged[reason] += 1
        logger.log(level, msg)

    def update(self, counts: Mapping[str, int]) -> None:
        """Merge counts gathered elsewhere (another worker); no logging (they were logged where they happened)."""
        for reason, n in counts.items():
            if n:
                self.counts[reason] += int(n)

    def take_delta(self) -> dict[str, int]:
        """Counts added since the last call (used to ship worker counts to the main process)."""
        delta = dict(self._delta)
        self._delta.clear()
        return delta

    def reset(self) -> None:
        self.counts.clear()
        self._logged.clear()
        self._delta.clear()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def __getitem__(self, reason: str) -> int:
        return self.counts.get(reason, 0)

    def __bool__(self) -> bool:
        return self.total > 0

    def summary(self) -> str:
        if not self.counts:
            return "no samples skipped"
        return f"{self.total} skipped: " + ", ".join(f"{r}={n}" for r, n in self.as_dict().items())

    def __repr__(self) -> str:
        return f"SkipCounter({self.as_dict()})"
