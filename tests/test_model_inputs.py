"""Models and mixers: an empty batch, bad constructor arguments and a float64 input, each
answered the same way everywhere (issue 24)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import minilg
from minilg.attention.focal import FocalAttention
from minilg.attention.full import FullAttention
from minilg.attention.glance_gaze import GlanceGazeAttention
from minilg.attention.hierarchical import HierarchicalAttention
from minilg.attention.semantic_regions import SemanticRegionAttention
from minilg.attention.spatial_reduction import SpatialReductionAttention
from minilg.attention.window import WindowAttention
from minilg.registry import list_models

MIXERS = [
    FullAttention(8, 2), WindowAttention(8, 2, 4, 2), FocalAttention(8, 2, 4, ((1, 8), (2, 6))),
    FocalAttention(8, 2, 4, ((1, 8), (4, 3), (2, 4)), follow="official"),  # pooled k = 0, 1
    GlanceGazeAttention(8, 2, partition=3), HierarchicalAttention(8, 2, grid=2, pool=2),
    HierarchicalAttention(8, 2, grid=1, pool=1), SpatialReductionAttention(8, 2, 2),
    SemanticRegionAttention(8, 2, 4),
]


@pytest.mark.parametrize("mixer", MIXERS, ids=lambda m: type(m).__name__)
def test_every_mixer_maps_an_empty_batch_to_an_empty_output(mixer: nn.Module) -> None:
    out = mixer(torch.randn(0, 6, 7, 8))
    assert out.shape == (0, 6, 7, 8) and out.dtype == torch.float32


MINI = sorted(list_models("*mini*"))


@pytest.mark.parametrize("name", MINI)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_classes": -1}, "num_classes must be an integer >= 0, got num_classes=-1"),
        ({"num_classes": "ten"}, "num_classes must be an integer >= 0, got num_classes='ten'"),
        ({"img_size": "32"}, "img_size must be a positive integer, got img_size='32'"),
        ({"drop_path_rate": 1.5},
         "drop_path_rate must be a number in [0, 1), got drop_path_rate=1.5"),
    ],
)
def test_backbone_arguments_are_checked_first_and_echoed(
    name: str, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        minilg.create_model(name, **overrides)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["deit_mini", "swin_mini"])
def test_float64_images_for_a_float32_model_are_one_clear_line(name: str) -> None:
    model = minilg.create_model(name)
    with pytest.raises(ValueError) as info:
        model(torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    assert str(info.value).endswith(
        "has torch.float32 weights but got torch.float64 images; convert them with "
        "x.to(torch.float32) (or the model with model.to(torch.float64))")
    assert model.double()(torch.zeros(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
