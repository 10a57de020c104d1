"""The main job's local control: window attention whose tokens never reach the far side.

``local_control`` is ``window_mini`` (the shared mini frame: 32 px, patch 2, maps 16, 8, 4, 2)
with **1 x 1 windows**: attention inside a window of one token is a per-token linear map (the
softmax over a single key is 1), so no block ever mixes tokens. Only the 2 x 2 patch merging
between stages joins neighbours, so a token's reach (the input pixels it depends on) is its
patch: 2 x 2 px in stage 1, then 4 x 4, 8 x 8 and **16 x 16 px in stage 4** -- one quadrant of
the 32 x 32 image. A token on the left half never depends on a pixel of the right half; the two
sides first meet in the average pool before the linear head, which adds them. On the
``match`` task (two squares far apart; the label says whether their colours match) such a model
can only score ``g(left) + h(right)`` and stays at chance (:mod:`minilg.data.match`).

``window_mini`` itself (windows of 4 x 4 tokens) is *not* local at this size: its stage-3 map
is 4 x 4 tokens, one window, so it is global from block 5, and so is ``swin_mini`` (its shifted
windows join the two tokens no earlier: notebook 07 measures it).
"""

from __future__ import annotations

from typing import Any

from minilg.models.backbone import HierarchicalBackbone
from minilg.models.swin import MINI, build_swin
from minilg.registry import register_model, with_overrides

__all__ = ["LOCAL_CONTROL_REACH", "local_control"]

# Side in pixels of the input square one token depends on, per stage (patch 2, merges of 2 x 2).
LOCAL_CONTROL_REACH: tuple[int, ...] = (2, 4, 8, 16)


@register_model("local_control", family="swin", mini=True)
def local_control(**overrides: Any) -> HierarchicalBackbone:
    """``window_mini`` with 1 x 1 windows: no token mixing before the pooled head (see module)."""
    return build_swin(with_overrides(MINI, {"shift": False, "window": 1, **overrides}))
