"""SALG Transformer (Zhang et al., "Semantic-Aware Local-Global Vision Transformer", Sec. III).

SALG Sec. III-A and III-D: a three-convolution patch embedding (strides 2, 2, 1) to ``H/4``,
three *SALG stages* (segmentation of the stage input into semantic regions, then Local-Global
blocks: intra-region attention with AGR tokens, Eq. 2, followed by inter-region propagation,
Eq. 3 or 4) and one plain transformer stage, with Swin's patch merging in between. Region window
``M = 7`` in every stage, coverage margins ``p = 1, 2, 1``, head dim 32, MLP ratio 4.

* ``salg_super_tiny``: C = 48, depths 2-2-2-2; ``salg_tiny``: C = 96, 2-2-6-2;
  ``salg_small``: C = 96, 2-2-18-2; average-pooling propagation (Table I). The ``*_msa`` variants
  use MSA propagation (Table IV). ``swin_super_tiny`` is the paper's Swin-ST baseline.
* Table III rows are one switch, ``variant``: ``"base"`` (regular windows, no shift, no AGR
  tokens: Swin without shifted windows in SALG's frame), ``"local_global"`` (regular windows
  with AGR tokens and propagation), ``"seg_local"`` (segmentation and intra-region attention with
  AGR tokens, no propagation), ``"full"``. Table III's full rows are the MSA figures of Table IV,
  so compare with ``propagation="msa"``.

Choices the paper leaves open, and why:

* **Heads at C = 48** (super-tiny and Swin-ST): head dim 32 cannot divide 48, so heads are
  2, 3, 6, 12 (head dims 24, 32, 32, 32): 32 wherever C allows it, and two heads rather than one
  in stage 1 to keep it multi-head.
* **Patch embedding widths and norms**: ``3 -> C/2`` (stride 2), ``C/2 -> C`` (stride 2),
  ``C -> C`` (stride 1), 3x3 kernels, BatchNorm + ReLU between convolutions (the conv-BN-ReLU
  stem of the work the paper cites for it, "Scaled ReLU matters", its ref. [33]).
* **Stage 4** ("a normal stage based on the typical Transformer block") uses W-MSA with the
  region window and no shift: at 224 px its 7 x 7 map is one window, i.e. MSA over the whole map
  with Swin's relative position bias, and larger inputs (detection) stay linear in the map size.
* **Segmentation once per stage**, on the stage input; AGR tokens start as region means plus one
  learned embedding and travel through the stage (see :mod:`minilg.attention.semantic_regions`).
* **Propagation** follows every Local-Global block but a stage's last (Fig. 5; the last one's
  AGR tokens are dropped, so it could not change the output), with the block's stochastic depth.

Parameters against the paper (never padded to hit a figure; ``python -m minilg info salg*``):

==================  ==========  =======  ==========================================
model               paper (M)   minilg   gap
==================  ==========  =======  ==========================================
swin_super_tiny     5.6         5.50     -0.10M (Swin-T's layout at C = 48)
salg_super_tiny     6.5 (AP)    5.54     -0.96M
salg_super_tiny_msa 7.1         6.12     MSA adds 0.585M (paper: 0.6M)
salg_tiny           32.2 (AP)   28.42    -3.78M
salg_tiny_msa       42.4        37.85    MSA adds 9.43M (paper: 10.2M)
salg_small          53 (AP)     49.76    -3.24M
==================  ==========  =======  ==========================================

Over Swin, the text adds only the conv stem, the larger coverage-area position tables and the
AGR embeddings (about 0.03M at C = 48, 0.13M at C = 96): nothing described accounts for the
AP gaps. Readings of Eq. 3 tried for the MSA increment (ST / T, paper 0.6M / 10.2M): a
transformer layer (MSA + MLP) between consecutive blocks of a stage (chosen) 0.585M / 9.43M;
after every block, the last included, 1.17M / 11.76M; one per stage 0.585M / 2.33M; MSA
without its MLP between blocks 0.20M / 3.15M. Only the chosen reading fits super-tiny, and it
comes closest for tiny.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from torch import nn

from minilg.attention.base import TokenMixer
from minilg.attention.semantic_regions import SemanticRegionAttention, check_margin, check_window
from minilg.attention.window import WindowAttention
from minilg.models.backbone import HierarchicalBackbone, HierarchicalConfig
from minilg.models.blocks import ConvStem
from minilg.models.salg_stage import Propagation, SALGStages, check_propagation
from minilg.models.stages import BlockSpec
from minilg.models.swin import MINI_FRAME, SwinConfig, build_swin
from minilg.nn import layer_norm
from minilg.registry import register_model, with_overrides
from minilg.validate import one_of

Variant = Literal["base", "local_global", "seg_local", "full"]
VARIANTS: tuple[str, ...] = get_args(Variant)


@dataclass(frozen=True)
class SALGConfig(HierarchicalConfig):
    """SALG-T by default. ``margins``: ``p`` of each SALG stage (their number = SALG stages)."""

    heads: tuple[int, ...] = (3, 6, 12, 24)
    window: int = 7
    margins: tuple[int, ...] = (1, 2, 1)
    propagation: Propagation = "ap"
    variant: Variant = "full"
    stem_strides: tuple[int, ...] = (2, 2, 1)
    drop_path_rate: float = 0.2


def check_config(config: SALGConfig) -> None:
    """Fail fast, naming the field, before any block is built."""
    check_window(config.window)
    for margin in config.margins:
        check_margin(margin)
    check_propagation(config.propagation)
    one_of(config.variant, "variant", VARIANTS)  # SALG Table III's rows
    if not 0 < len(config.margins) < len(config.dims):
        raise ValueError(
            f"margins gives p for each SALG stage (1 to {len(config.dims) - 1} of them, the last "
            f"stage is a plain transformer stage), got margins={config.margins}"
        )
    if len(config.stem_strides) != 3:
        raise ValueError(f"stem_strides needs three strides (three convolutions), "
                         f"got stem_strides={config.stem_strides}")


def build_salg(config: SALGConfig) -> HierarchicalBackbone:
    """SALG (or one of its Table III ablations) from a :class:`SALGConfig`."""
    check_config(config)
    salg_stages = len(config.margins)
    regions = config.variant != "base"
    segmentation = config.variant in ("seg_local", "full")
    propagation = config.propagation if config.variant in ("local_global", "full") else "none"

    margins = config.margins if segmentation else (0,) * salg_stages

    def mixer(spec: BlockSpec) -> TokenMixer:
        if regions and spec.stage < salg_stages:
            return SemanticRegionAttention(spec.dim, spec.heads, config.window,
                                           margins[spec.stage])
        return WindowAttention(spec.dim, spec.heads, config.window)

    c = config.dims[0]
    stem = ConvStem(config.in_chans, (c // 2, c, c), config.stem_strides,
                    norm=nn.BatchNorm2d, act=nn.ReLU)
    norm = layer_norm(config.norm_eps)
    stages = SALGStages(mixer, norm=norm, window=config.window, margins=margins, regions=regions,
                        segmentation=segmentation, propagation=propagation)
    return HierarchicalBackbone(
        dims=config.dims, depths=config.depths, heads=config.heads, stage=stages,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate, stem=stem,
        norm=norm(config.dims[-1]),
    )


SUPER_TINY = SALGConfig(dims=(48, 96, 192, 384), depths=(2, 2, 2, 2), heads=(2, 3, 6, 12),
                        drop_path_rate=0.1)


@register_model("salg_super_tiny", family="salg", paper="SALG-ST")
def salg_super_tiny(**overrides: Any) -> HierarchicalBackbone:
    """SALG-ST (Table I): C = 48, depths 2-2-2-2, heads 2-3-6-12, AP propagation."""
    return build_salg(with_overrides(SUPER_TINY, overrides))


@register_model("salg_super_tiny_msa", family="salg", paper="SALG-ST-MSA")
def salg_super_tiny_msa(**overrides: Any) -> HierarchicalBackbone:
    """SALG-ST with MSA propagation (Table IV, Table III's full row)."""
    return build_salg(with_overrides(SUPER_TINY, {"propagation": "msa", **overrides}))


@register_model("salg_tiny", family="salg", paper="SALG-T")
def salg_tiny(**overrides: Any) -> HierarchicalBackbone:
    """SALG-T (Table I): C = 96, depths 2-2-6-2, heads 3-6-12-24, AP propagation."""
    return build_salg(with_overrides(SALGConfig(), overrides))


@register_model("salg_tiny_msa", family="salg", paper="SALG-T-MSA")
def salg_tiny_msa(**overrides: Any) -> HierarchicalBackbone:
    """SALG-T with MSA propagation (Table IV, Table III's full row)."""
    return build_salg(with_overrides(SALGConfig(), {"propagation": "msa", **overrides}))


@register_model("salg_small", family="salg", paper="SALG-S")
def salg_small(**overrides: Any) -> HierarchicalBackbone:
    """SALG-S (Table I): C = 96, depths 2-2-18-2, AP propagation."""
    config = SALGConfig(depths=(2, 2, 18, 2), drop_path_rate=0.3)
    return build_salg(with_overrides(config, overrides))


@register_model("swin_super_tiny", family="salg", paper="Swin-ST")
def swin_super_tiny(**overrides: Any) -> HierarchicalBackbone:
    """Swin-ST, SALG's baseline (Table I): Swin with SALG-ST's widths, depths and heads."""
    config = SwinConfig(dims=(48, 96, 192, 384), depths=(2, 2, 2, 2), heads=(2, 3, 6, 12),
                        drop_path_rate=0.1)
    return build_swin(with_overrides(config, overrides))


# The mini frame (32 px, maps 16, 8, 4, 2) with region window 2: 8x8, 4x4, 2x2 regions in the
# three SALG stages, the region counts SALG-T has at 224 px (56/7, 28/7, 14/7).
MINI = SALGConfig(**vars(MINI_FRAME), window=2, margins=(1, 1, 1), stem_strides=(2, 1, 1))


@register_model("salg_mini", family="salg", mini=True)
def salg_mini(**overrides: Any) -> HierarchicalBackbone:
    """CPU-trainable SALG on the mini frame: region window 2, margins 1-1-1, AP propagation."""
    return build_salg(with_overrides(MINI, overrides))
