"""One validation vocabulary for constructor arguments, used at construction only.

Every helper raises a ``ValueError`` of the same shape, naming the argument and echoing what was
passed: ``"<name> must be <what is allowed>, got <name>=<value>"``. Booleans are never taken for
integers. The package's modules validate their arguments with these helpers in ``__init__``,
never in ``forward``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

__all__ = ["Pair", "as_pair", "check_size", "one_of", "positive_int", "whole_number"]

Pair = tuple[int, int]
_T = TypeVar("_T")


def _fail(name: str, allowed: str, value: object) -> ValueError:
    return ValueError(f"{name} must be {allowed}, got {name}={value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(value: object, name: str, minimum: int = 0) -> int:
    """``value`` as an int; a ValueError unless it is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, f"an integer >= {minimum}", value)
    return int(value)


def positive_int(value: object, name: str) -> int:
    """``value`` as an int; a ValueError unless it is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(name, "a positive integer", value)
    return int(value)


def as_pair(value: object, name: str, minimum: int = 1) -> Pair:
    """``7 -> (7, 7)``, ``(7, 5) -> (7, 5)``; a ValueError unless both are ints ``>= minimum``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(_is_int(v) and v >= minimum for v in pair):
        raise _fail(name, f"an integer >= {minimum} or a pair of them", value)
    return (int(pair[0]), int(pair[1]))


def one_of(value: _T, name: str, choices: Iterable[_T]) -> _T:
    """``value`` itself; a ValueError listing ``choices`` unless it is one of them."""
    options = tuple(choices)
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in options):
        raise _fail(name, f"one of {options}", value)
    if value not in options:
        raise _fail(name, f"one of {options}", value)
    return value


def check_size(height: object, width: object) -> Pair:
    """``(H, W)`` as ints; a ValueError naming the problem unless both are positive ints."""
    return positive_int(height, "height"), positive_int(width, "width")
