"""Weights written by earlier minilg versions, renamed to today's state-dict keys.

One key map, :func:`upgrade_state_dict`, applied wherever minilg loads its own weights files.
What changed, and since when:

* **Stages own their downsampling** (after a6bbf9e): the layer between stage ``i`` and stage
  ``i + 1`` moved from the backbone's ``downsamples.i`` list into the stage it opens:
  ``downsamples.{i}.* -> stages.{i+1}.downsample.*`` (same tensors, same order of operations).
* **GG's Gaze-only V projection** (``branches="gaze"``): still stored as ``mixer.qkv`` today;
  when the mixer names it ``v``, its rename goes in :data:`RENAMES` beside the one above.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")

#: ``(pattern, replacement)`` applied in order to every key (``re.sub``, anchored at the start).
RENAMES: tuple[tuple[str, str | Callable[[re.Match[str]], str]], ...] = (
    (r"^downsamples\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),
)


def upgrade_key(key: str) -> str:
    """One state-dict key of an earlier layout -> today's key (today's keys are unchanged)."""
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def upgrade_state_dict(state: Mapping[str, T]) -> dict[str, T]:
    """A state dict written by an earlier minilg (e.g. a6bbf9e) with today's keys; values and
    order kept. A state dict already in today's layout comes back unchanged."""
    upgraded = {upgrade_key(key): value for key, value in state.items()}
    if len(upgraded) != len(state):
        raise ValueError("the state dict mixes old and new keys for the same tensor")
    return upgraded
