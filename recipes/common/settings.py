"""Checks of numeric and choice settings, run when a data module, dataset or training module is built: an
out-of-range value is refused at start with its name and value (``batch_size must be an integer >= 1, got 0``)
instead of training on something else than was asked (a batch of 0 became the whole epoch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any


def check_int(name: str, value: Any, minimum: int | None = None, *, optional: bool = False) -> int | None:
    """``value`` as an int; raises ValueError unless it is an integer (bools refused) >= ``minimum``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        if isinstance(value, Real) and not isinstance(value, bool) and float(value).is_integer():
            value = int(value)  # 4.0 from a YAML float is 4
        else:
            raise ValueError(f"{name} must be an integer{_bound(minimum, None, False, False)}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``value`` as a finite float in [low, high] (open ends with ``low_open`` / ``high_open``); raises
    ValueError naming ``name`` and the value otherwise (NaN and infinities included)."""
    if value is None and optional:
        return None
    rule = _bound(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number{rule}, got {value!r}")
    v = float(value)
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be a number{rule}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be a number{rule}, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Sequence) -> Any:
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _bound(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return (" " + " and ".join(parts)) if parts else ""
