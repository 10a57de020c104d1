"""minilg.diagrams: every mechanism's data flow draws one box per step plus input and output."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import FancyBboxPatch

from minilg.diagrams import MECHANISMS, draw_mechanism


@pytest.mark.parametrize("name", list(MECHANISMS))
def test_every_mechanism_draws_its_boxes(name: str) -> None:
    fig, ax = plt.subplots()
    draw_mechanism(ax, name)
    _, paths, _ = MECHANISMS[name]
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(boxes) == 2 + sum(len(steps) for steps in paths.values())
    assert ax.get_title() == f"{name}: data flow"
    plt.close(fig)


def test_unknown_mechanism_is_named() -> None:
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="name must be one of"):
        draw_mechanism(ax, "Swin")
    plt.close(fig)
