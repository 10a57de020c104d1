r"""Weights written by earlier minilg versions, renamed to today's state-dict keys.

One key map, :func:`upgrade_state_dict`, applied wherever minilg loads its own weights files.
What changed, and since when:

* **Blocks in ``stages.i.blocks``** (the core's second edition): ``stages.{i}.{j}.* ->
  stages.{i}.blocks.{j}.*`` (what ``scripts/export_fp16.py --old-keys`` did by hand).
* **Stages own their downsampling** (after a6bbf9e): the layer between stage ``i`` and stage
  ``i + 1`` moved from the backbone's ``downsamples.i`` list into the stage it opens:
  ``downsamples.{i}.* -> stages.{i+1}.downsample.*`` (same tensors, same order of operations).
* **GG's Gaze-only V projection** (``branches="gaze"``, after a6bbf9e): stored as ``mixer.v``,
  was ``mixer.qkv``. The rename depends on the model (``mixer.qkv`` stays ``qkv`` in every other
  mixer), so it is in :data:`WHERE_EXPECTED`: it applies to a key only when the model expects the
  renamed key and not the old one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

T = TypeVar("T")

#: ``(pattern, replacement)`` applied in order to every key (``re.sub``, anchored at the start).
RENAMES: tuple[tuple[str, str | Callable[[re.Match[str]], str]], ...] = (
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"^downsamples\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),
)

#: Renames applied only where the model expects the new key and not the old one.
WHERE_EXPECTED: tuple[tuple[str, str], ...] = ((r"\.mixer\.qkv\.", ".mixer.v."),)


def upgrade_key(key: str) -> str:
    """One state-dict key of an earlier layout -> today's key (today's keys are unchanged)."""
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def upgrade_state_dict(
    state: Mapping[str, T], expected: Collection[str] | None = None
) -> dict[str, T]:
    """A state dict written by an earlier minilg (e.g. a6bbf9e) with today's keys; values and
    order kept. A state dict already in today's layout comes back unchanged.

    ``expected``: the keys of the model it is for (e.g. ``model.state_dict()``), which enables
    the model-dependent renames of :data:`WHERE_EXPECTED`.
    """
    upgraded = {upgrade_key(key): value for key, value in state.items()}
    if expected is not None:
        upgraded = {_expected_key(key, expected): value for key, value in upgraded.items()}
    if len(upgraded) != len(state):
        raise ValueError("the state dict mixes old and new keys for the same tensor")
    return upgraded


def _expected_key(key: str, expected: Collection[str]) -> str:
    if key in expected:
        return key
    for pattern, replacement in WHERE_EXPECTED:
        renamed = re.sub(pattern, replacement, key)
        if renamed in expected:
            return renamed
    return key
