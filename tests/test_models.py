"""Registered baselines: published sizes, exact model-level MACs, and the timm-style API."""

from __future__ import annotations

import pytest
import torch

import minilg
from minilg.complexity import measured_model_macs, model_macs
from minilg.reference import matches_published, paper_row, paper_rows
from minilg.registry import model_entry

# name -> (published params in M, published GMACs), from data/reference/paper_tables.csv
BASELINES = ["swin_tiny", "swin_small", "deit_tiny", "deit_small"]


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **overrides: object) -> torch.nn.Module:
    """Build on the meta device: shapes only, so full-size models cost no memory or init time.
    FlopCounterMode counts meta tensors' matmuls exactly like real ones."""
    with torch.device("meta"):
        return minilg.create_model(name, **overrides)


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_match_published_params_and_macs(name: str) -> None:
    entry = model_entry(name)
    assert entry.paper is not None
    row = paper_row(entry.paper)
    assert row is not None and row.params_m is not None and row.gmacs is not None
    model = meta_model(name)
    assert matches_published(num_params(model) / 1e6, row.params_m, rel_tol=0.01)
    macs = model_macs(model, 224)
    assert matches_published(macs / 1e9, row.gmacs, rel_tol=0.03)
    assert macs == measured_model_macs(model, 224)


def test_exact_published_figures_of_the_baselines() -> None:
    """The figures the closing note quotes, pinned so a change to the models is noticed."""
    figures = {
        name: (num_params(m), model_macs(m))
        for name in BASELINES
        for m in [meta_model(name)]
    }
    assert figures["swin_tiny"] == (28_288_354, 4_490_566_656)
    assert figures["swin_small"] == (49_606_258, 8_740_875_264)
    assert figures["deit_tiny"] == (5_717_416, 1_253_683_200)
    assert figures["deit_small"] == (22_050_664, 4_598_882_304)


@pytest.mark.parametrize("name", minilg.list_models(mini=True))
def test_mini_models_train_step_and_exact_macs(name: str) -> None:
    model = minilg.create_model(name)
    x = torch.randn(4, 3, model.img_size, model.img_size)  # type: ignore[arg-type]
    logits = model(x)
    assert logits.shape == (4, model.num_classes)
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model_macs(model) == measured_model_macs(model)
    assert num_params(model) < 3_500_000


@pytest.mark.parametrize("resolution", [64, 100])
def test_hierarchical_models_run_at_other_resolutions_with_exact_macs(resolution: int) -> None:
    model = meta_model("swin_tiny", num_classes=7, img_size=resolution)
    x = torch.randn(1, 3, resolution, resolution, device="meta")
    assert model(x).shape == (1, 7)
    assert model_macs(model, resolution) == measured_model_macs(model, resolution)


def test_forward_features_and_head_api() -> None:
    swin = minilg.create_model("swin_mini", num_classes=5)
    features = swin.forward_features(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 2, 2, 256)
    assert swin.forward_head(features).shape == (2, 5)
    assert swin.forward_head(features, pre_logits=True).shape == (2, 256)
    deit = minilg.create_model("deit_mini", num_classes=5)
    tokens = deit.forward_features(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 1 + 64, 128)
    assert deit.forward_head(tokens).shape == (2, 5)


def test_no_weight_decay_names_position_tables_and_embeddings() -> None:
    swin = minilg.create_model("swin_mini")
    names = swin.no_weight_decay()
    assert names and all(name.endswith("bias_table") for name in names)
    assert {"pos_embed", "cls_token"} <= minilg.create_model("deit_mini").no_weight_decay()


def test_unknown_model_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown model name 'swin_tiy'.*swin_tiny"):
        minilg.create_model("swin_tiy")


def test_unknown_override_names_the_allowed_fields() -> None:
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['widow'\].*window"):
        minilg.create_model("swin_tiny", widow=5)


def test_invalid_model_configurations_raise() -> None:
    with pytest.raises(ValueError, match="window"):
        minilg.create_model("swin_mini", window=0)
    with pytest.raises(ValueError, match="heads"):
        minilg.create_model("deit_mini", heads=5)
    with pytest.raises(ValueError, match="img_size=30 must be a multiple of patch_size=4"):
        minilg.create_model("deit_mini", img_size=30)
    with pytest.raises(ValueError, match="dims, depths and heads"):
        minilg.create_model("swin_mini", depths=(2, 2))


def test_isotropic_model_rejects_other_input_sizes_and_wrong_channels() -> None:
    deit = minilg.create_model("deit_mini")
    with pytest.raises(ValueError, match="img_size=32"):
        deit(torch.randn(1, 3, 64, 64))
    swin = minilg.create_model("swin_mini")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        swin(torch.randn(1, 1, 32, 32))


def test_reference_table_has_a_row_for_every_model_with_a_paper_key() -> None:
    keys = {row.paper_key for row in paper_rows()}
    for name in minilg.list_models():
        paper = model_entry(name).paper
        assert paper is None or paper in keys, name


def test_rounding_tolerance_follows_printed_digits() -> None:
    assert matches_published(1.254, 1.3, rel_tol=0.0)
    assert not matches_published(1.24, 1.3, rel_tol=0.0)
    assert matches_published(28.4, 28, rel_tol=0.0)
