"""timm's feature API on every hierarchical family: ``forward_intermediates(..., stop_early)``
and ``prune_intermediate_layers(indices, prune_norm, prune_head)``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import minilg
from minilg.models.backbone import HierarchicalBackbone

MINIS = [name for name in minilg.list_models(mini=True)
         if isinstance(minilg.create_model(name), HierarchicalBackbone)]


def model_and_input(name: str) -> tuple[HierarchicalBackbone, Tensor]:
    torch.manual_seed(0)
    model = minilg.create_model(name).eval()
    assert isinstance(model, HierarchicalBackbone)
    return model, torch.randn(2, model.in_chans, model.img_size, model.img_size)


def test_every_hierarchical_family_is_covered() -> None:
    families = {minilg.registry.model_entry(name).family for name in MINIS}
    assert {"swin", "gg", "focal", "hat_net", "salg", "pvt"} <= families


@pytest.mark.parametrize("name", MINIS)
def test_stop_early_runs_no_stage_after_the_last_index(name: str) -> None:
    model, x = model_and_input(name)
    calls: list[int] = []
    for index, stage in enumerate(model.stages):
        stage.register_forward_hook(lambda *_, i=index: calls.append(i))
    with torch.no_grad():
        final, full = model.forward_intermediates(x)  # type: ignore[misc]
        assert calls == [0, 1, 2, 3]
        calls.clear()
        early = model.forward_intermediates(x, indices=[1, 0], stop_early=True,
                                            intermediates_only=True)
        assert calls == [0, 1]
        assert [torch.equal(a, b) for a, b in zip(early, full[:2], strict=True)] == [True] * 2
        last = model.forward_intermediates(x, indices=[-1], norm=True, stop_early=True)
    assert isinstance(last, tuple) and torch.equal(last[0], final)
    assert torch.equal(last[1][0], final.permute(0, 3, 1, 2))  # norm on the last stage
    with torch.no_grad():
        model.forward_intermediates(x, indices=2, stop_early=True)  # stages 2, 3: no stop
    with pytest.raises(ValueError, match="stop_early=True stops after stage 1"):
        model.forward_intermediates(x, indices=[1], stop_early=True)


@pytest.mark.parametrize("name", MINIS)
def test_prune_keeps_the_stages_up_to_the_last_index(name: str) -> None:
    model, x = model_and_input(name)
    with torch.no_grad():
        full = model.forward_intermediates(x, intermediates_only=True)
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers([0, -3]) == [0, 1]
    assert len(pruned.stages) == 2 and len(pruned.feature_info) == 2
    assert isinstance(pruned.head, nn.Identity) and pruned.num_classes == 0
    assert type(pruned.norm) is type(model.norm)  # prune_norm=False keeps it
    with torch.no_grad():
        kept = pruned.forward_intermediates(x, intermediates_only=True)
    assert [torch.equal(a, b) for a, b in zip(kept, full[:2], strict=True)] == [True] * 2
    headless = copy.deepcopy(model)
    assert headless.prune_intermediate_layers(2, prune_norm=True, prune_head=False) == [2, 3]
    assert isinstance(headless.norm, nn.Identity) and len(headless.stages) == 4
    with torch.no_grad():
        features = headless.forward_features(x)
        assert headless(x).shape == (2, model.num_classes)
    assert torch.equal(features.permute(0, 3, 1, 2), full[3])
    with pytest.raises(ValueError, match="indices"):
        copy.deepcopy(model).prune_intermediate_layers([4])
