"""Block diagrams of the mechanisms' data flow, drawn with matplotlib for the notebooks.

:func:`flow_diagram` draws one row of boxes per path of a mechanism, from a shared input on the
left to a shared output on the right (where the paths merge): MSA has one path, GG-MSA two
(Glance and Gaze), Focal one per level, H-MHSA two steps, SALG its local and global halves.
:data:`MECHANISMS` holds the diagram of every mechanism the notebooks teach.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

Flow = tuple[str, Mapping[str, Sequence[str]], str]  # (input, {path: boxes}, output)

MECHANISMS: dict[str, Flow] = {
    "MSA": ("X (N, C)", {"": ["Q, K, V = X W^{q,k,v}", "A = softmax(Q K^T / sqrt d)",
                              "A V, heads merged"]}, "W^o: (N, C)"),
    "W-MSA": ("X (H, W, C)", {"": ["M x M windows", "MSA in every window (M^2 tokens)",
                                   "windows merged"]}, "W^o: (H, W, C)"),
    "GG-MSA": ("X (H, W, C)", {"Glance": ["Q, K, V", "dilated split (Eqs. 6-8)",
                                          "MSA per partition (Eq. 9)", "merge (Eq. 10)"],
                               "Gaze": ["V", "depthwise k x k conv (Eq. 13)"]},
               "sum, W^o (Eq. 14)"),
    "Focal": ("X (H, W, C)", {"level 1": ["fine tokens", "(s_p + 2e)^2 around the window"],
                              "level 2": ["pool s_w x s_w (f_p, Eq. 1)", "s_r^2 pooled keys"],
                              "queries": ["Q of the s_p x s_p window (Eq. 2)"]},
              "one softmax + B^l (Eq. 3), W^o"),
    "H-MHSA": ("X (H, W, C)", {"step 1": ["G1 x G1 grids", "MSA in every grid (Eqs. 6-9)"],
                               "step 2": ["avg-pool G2 x G2 (Eq. 10)",
                                          "every token attends all pooled (Eqs. 11-13)"]},
               "sum, W^p (Eq. 14)"),
    "SRA": ("X (H, W, C)", {"queries": ["Q = X W^q: all N tokens"],
                            "keys": ["conv R x R, stride R", "LN", "K, V: N / R^2 tokens"]},
            "softmax(Q K^T / sqrt d) V, W^o"),
    "SALG": ("X (H, W, C)", {"local": ["regions (Eq. 1)", "masked MSA in coverage areas (Eq. 2)"],
                             "global": ["AGR tokens (region means)",
                                        "propagation: MSA or average (Eqs. 3-4)"]},
             "map + AGR tokens, next block"),
}


def flow_diagram(ax: Any, source: str, paths: Mapping[str, Sequence[str]], sink: str,
                 title: str = "") -> None:
    """Draw ``source -> each path's boxes -> sink`` on a matplotlib axes, one row per path."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    rows = list(paths.items())
    steps = max(len(boxes) for _, boxes in rows)
    width = steps + 2  # source, the steps, sink
    ax.set(xlim=(-0.1, width - 0.1), ylim=(-0.6, len(rows) - 0.3), xticks=[], yticks=[])
    ax.axis("off")
    middle = (len(rows) - 1) / 2

    def box(x: float, y: float, text: str, colour: str) -> None:
        ax.add_patch(FancyBboxPatch((x, y - 0.28), 0.8, 0.56, boxstyle="round,pad=0.02",
                                    facecolor=colour, edgecolor="0.3"))
        ax.text(x + 0.4, y, textwrap.fill(text, 18), ha="center", va="center", fontsize=7)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=9,
                                     color="0.3"))

    box(0, middle, source, "#dde8f5")
    box(width - 1, middle, sink, "#f5e3d0")
    for row, (name, boxes) in enumerate(rows):
        y = len(rows) - 1 - row
        if name:
            ax.text(1, y + 0.36, name, fontsize=8, fontweight="bold")
        previous = (0.8, middle)
        for step, text in enumerate(boxes, start=1):
            box(step, y, text, "#e8f0e0")
            arrow(previous[0], previous[1], step, y)
            previous = (step + 0.8, y)
        arrow(previous[0], previous[1], width - 1, middle)
    if title:
        ax.set_title(title, fontsize=10)


def draw_mechanism(ax: Any, name: str) -> None:
    """:func:`flow_diagram` of one of :data:`MECHANISMS`, titled with its name."""
    if name not in MECHANISMS:
        raise ValueError(f"name must be one of {sorted(MECHANISMS)}, got name={name!r}")
    source, paths, sink = MECHANISMS[name]
    flow_diagram(ax, source, paths, sink, title=f"{name}: data flow")
