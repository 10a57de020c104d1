"""Named scopes around the attention core's steps, for profilers and the benchmark.

:func:`scope` marks a step (``"attend"``: the glue that gathers key sources and builds the
bias-and-mask tensor; ``"kernel"``: the attention arithmetic itself) as a ``torch.profiler``
range named ``minilg::<label>``, and tells a listener, if one was installed with
:func:`listening`, when the step starts and ends. The benchmark's ``--breakdown`` listens to
attribute time and exact MACs to each step; nothing else changes when nobody listens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import torch

__all__ = ["PREFIX", "ScopeListener", "listening", "scope"]

PREFIX = "minilg::"


class ScopeListener(Protocol):
    """Told when a named scope starts (``push``) and ends (``pop``)."""

    def push(self, label: str) -> None: ...

    def pop(self) -> None: ...


_LISTENER: ContextVar[ScopeListener | None] = ContextVar("minilg_scope_listener", default=None)


@contextmanager
def scope(label: str) -> Iterator[None]:
    """Run the body as the step ``label`` (a profiler range; the listener told)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener.push(label)
    try:
        with torch.profiler.record_function(PREFIX + label):
            yield
    finally:
        if listener is not None:
            listener.pop()


@contextmanager
def listening(listener: ScopeListener) -> Iterator[ScopeListener]:
    """Install ``listener`` for the scopes run inside the ``with`` block (this thread only)."""
    token = _LISTENER.set(listener)
    try:
        yield listener
    finally:
        _LISTENER.reset(token)
