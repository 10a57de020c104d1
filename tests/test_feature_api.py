"""timm's feature API on every hierarchical family: ``forward_intermediates(..., stop_early)``
and ``prune_intermediate_layers(indices, prune_norm, prune_head)``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import minilg
from minilg.models.backbone import HierarchicalBackbone, IsotropicBackbone

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


# DeiT (a class token) and GG-DeiT (none), small
ISOTROPIC: list[tuple[str, dict[str, object]]] = [
    ("deit_mini", {}), ("gg_deit_tiny", {"img_size": 64, "num_classes": 10})]


@pytest.mark.parametrize(("name", "overrides"), ISOTROPIC)
def test_isotropic_intermediates_follow_timms_vit(name: str, overrides: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = minilg.create_model(name, **overrides).eval()
    assert isinstance(model, IsotropicBackbone)
    x = torch.randn(2, 3, model.img_size, model.img_size)
    (h, w), prefix = model.grid, model.num_prefix
    calls: list[int] = []
    for index, block in enumerate(model.blocks):  # the MLP runs in every block
        block.mlp.register_forward_hook(lambda *_, i=index: calls.append(i))
    depth = len(model.blocks)
    with torch.no_grad():
        final, blocks = model.forward_intermediates(x, norm=True)  # type: ignore[misc]
        assert sorted(set(calls)) == list(range(depth))
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert [tuple(b.shape) for b in blocks] == [(2, model.num_features, h, w)] * depth
        patches = final[:, prefix:].reshape(2, h, w, -1).permute(0, 3, 1, 2)
        assert torch.equal(blocks[-1], patches)  # norm=True: the last one is the final norm's
        calls.clear()
        early = model.forward_intermediates(x, indices=[0], return_prefix_tokens=True,
                                            stop_early=True, output_fmt="NLC",
                                            intermediates_only=True)
        assert set(calls) == {0}
        tokens, cls = early[0]
        assert tokens.shape == (2, h * w, model.num_features) and cls.shape[1] == prefix
        pruned = copy.deepcopy(model)
        assert pruned.prune_intermediate_layers(2) == [depth - 2, depth - 1]
        assert len(pruned.blocks) == depth and isinstance(pruned.head, nn.Identity)
        assert pruned.prune_intermediate_layers([0], prune_norm=True) == [0]
        assert len(pruned.blocks) == 1 and isinstance(pruned.norm, nn.Identity)
        kept = pruned.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
        plain = model.forward_intermediates(x, indices=[0], output_fmt="NHWC",
                                            intermediates_only=True)
        assert torch.equal(kept[0], plain[0])
