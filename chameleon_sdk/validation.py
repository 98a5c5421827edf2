"""The one check for numbers at the boundary: finite, of the right kind, in range.

A check written as ``value <= 0`` lets NaN through (every comparison with NaN is False), and a
Python int beyond 64 bits overflows only later, inside torch. :func:`check_number` refuses both,
and :func:`number_validator` turns it into an attrs validator, so every config and option class states its
range once and gets the same message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from chameleon_sdk.errors import ChameleonError, ConfigError

__all__ = ["INT64_MAX", "INT64_MIN", "check_int64", "check_number", "number_validator"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def check_number(
    value: Any,
    where: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    error: type[ChameleonError] = ConfigError,
) -> Any:
    """Return ``value`` when it is a finite number (an int within 64 bits when ``integer``) in the
    range; raise ``error`` naming ``where``, the value and the range otherwise.

    ``bool`` is never a number here. ``low``/``high`` are inclusive unless ``low_open``/``high_open``.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float) if not integer else int):
        raise error(f"{where} must be {kind}, got {value!r}")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise error(f"{where} must fit in 64 bits (|value| < 2**63), got an integer of {value.bit_length()} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{where} must be a finite number, got {value!r}")
    ok = (
        (low is None or (value > low if low_open else value >= low))
        and (high is None or (value < high if high_open else value <= high))
    )  # fmt: skip
    if not ok:
        raise error(f"{where} must be {_range_text(low, high, low_open, high_open)}, got {value!r}")
    return value


def check_int64(value: Any, where: str, *, error: type[ChameleonError] = ConfigError) -> int:
    """``value`` as a 64-bit integer (seeds, token ids); ``error`` naming ``where`` otherwise."""
    return int(check_number(value, where, integer=True, error=error))


def number_validator(
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    label: str | Callable[[object], str] | None = None,
) -> Callable[[object, attrs.Attribute, Any], None]:
    """An attrs validator running :func:`check_number` on the field (``None`` passes when ``optional``).

    :param label: how to name the owner in messages (``"trainer option"`` gives ``trainer option lr``);
        default: the class name (``ModelConfig.dim``).
    """

    def validate(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if optional and value is None:
            return
        if label is None:
            where = f"{type(instance).__name__}.{attribute.name}"
        else:
            owner = label(instance) if callable(label) else label
            where = f"{owner} {attribute.name}"
        check_number(value, where, integer=integer, low=low, high=high, low_open=low_open, high_open=high_open)

    return validate
