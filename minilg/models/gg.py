"""GG-Transformer (Yu et al. 2021): Swin's pyramid with every W-MSA/SW-MSA pair replaced by GG-MSA.

GG Sec. 3.4: GG-T and GG-S keep Swin-T / Swin-S depths, widths and heads (C=96, depths
(2, 2, 6, 2) / (2, 2, 18, 2), heads (3, 6, 12, 24)), patch 4, MLP ratio 4, and set the partition
size ``M = 7`` (Swin's window), with Adaptive Gazing: kernels 9, 5, 3, 3 at 224 input. GG-MSA is
standalone, so no block shifts (see :mod:`minilg.attention.glance_gaze`).

Ablation switches on :class:`GGConfig` express every row of GG Table 4b (and Table 4a):

* ``branches="glance+gaze"`` -- GG-MSA in every block (Glance + Gaze (Conv), GG-T);
* ``branches="glance"`` / ``"gaze"`` -- one branch alone;
* ``branches="glance+window"`` -- Glance + Gaze (Attn): even blocks Glance only, odd blocks
  Swin's W-MSA (no shift) as the local "Gaze attention" (two consecutive blocks, same size/cost);
* ``branches="window"`` -- Swin's W-MSA / SW-MSA pair (the baseline row);
* ``msa_stages=(2, 3)`` -- full MSA in those stages (0-based: the paper's "stages 3 and 4");
  with ``branches="window"`` this is Table 4b's "MSA in stages 3-4" row;
* ``gaze_kernel`` -- ``"adaptive"``, one odd int for all stages (Table 4a "Fixed-(3,3,3,3)"), or
  one odd int per stage.

GG-DeiT (Table 4c) replaces MSA by GG-MSA in DeiT-T / DeiT-S. The class token has no place in a
dilated partition (it is not on the grid, and joining every partition would make it a shared key
the paper never describes), so GG-DeiT has *no class token*: ``IsotropicBackbone(class_token=
False)`` averages the patch tokens for the head, as the hierarchical models do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from minilg.attention.base import TokenMixer
from minilg.attention.full import FullAttention
from minilg.attention.glance_gaze import (
    GlanceGazeAttention,
    adaptive_gaze_kernel,
    check_gaze_kernel,
    check_partition,
)
from minilg.attention.window import WindowAttention
from minilg.models.backbone import (
    HierarchicalBackbone,
    HierarchicalConfig,
    IsotropicBackbone,
    IsotropicConfig,
    build_hierarchical,
    build_isotropic,
)
from minilg.models.stages import BlockSpec
from minilg.models.swin import MINI_FRAME
from minilg.registry import register_model, with_overrides

ModelBranches = Literal["glance+gaze", "glance", "gaze", "glance+window", "window"]
MODEL_BRANCHES: tuple[str, ...] = get_args(ModelBranches)
GazeKernel = int | tuple[int, ...] | Literal["adaptive"]


@dataclass(frozen=True)
class GGConfig(HierarchicalConfig):
    partition: int = 7
    gaze_kernel: GazeKernel = "adaptive"
    branches: ModelBranches = "glance+gaze"
    msa_stages: tuple[int, ...] = ()
    position_bias: bool = True


def gaze_kernel_for(
    gaze_kernel: GazeKernel, spec: BlockSpec, partition: int, num_stages: int
) -> tuple[int, int]:
    """The Gaze kernel of the block ``spec``: adaptive, one for all stages, or one per stage."""
    if gaze_kernel == "adaptive":
        return adaptive_gaze_kernel(spec.feature_size, partition)
    if isinstance(gaze_kernel, list):  # JSON (``--model-kwargs``) gives lists
        gaze_kernel = tuple(gaze_kernel)
    if isinstance(gaze_kernel, tuple):
        if len(gaze_kernel) != num_stages:
            raise ValueError(
                f"gaze_kernel given per stage needs {num_stages} entries, got {gaze_kernel!r}"
            )
        return check_gaze_kernel(gaze_kernel[spec.stage])
    if isinstance(gaze_kernel, int):
        return check_gaze_kernel(gaze_kernel)
    raise ValueError(
        f"gaze_kernel must be 'adaptive', an odd int or a tuple of odd ints (one per stage), "
        f"got gaze_kernel={gaze_kernel!r}"
    )


def check_config(
    branches: str, partition: int, gaze_kernel: GazeKernel, num_stages: int,
    msa_stages: tuple[int, ...] = (),
) -> None:
    """Fail fast, naming the field, before any block is built."""
    if branches not in MODEL_BRANCHES:
        raise ValueError(f"branches must be one of {MODEL_BRANCHES}, got branches={branches!r}")
    check_partition(partition)
    if gaze_kernel != "adaptive" and not isinstance(gaze_kernel, (tuple, list)):
        check_gaze_kernel(gaze_kernel)
    if not isinstance(msa_stages, (tuple, list)):
        raise ValueError(f"msa_stages must be a list of stage indices, got {msa_stages!r}")
    bad = [s for s in msa_stages if isinstance(s, bool) or not isinstance(s, int)
           or not 0 <= s < num_stages]
    if bad:
        raise ValueError(
            f"msa_stages are 0-based stage indices in [0, {num_stages}), got {msa_stages}"
        )


def build_gg(config: GGConfig) -> HierarchicalBackbone:
    """GG-Transformer (or one of its Table 4b ablations) from a :class:`GGConfig`."""
    num_stages = len(config.dims)
    check_config(config.branches, config.partition, config.gaze_kernel, num_stages,
                 config.msa_stages)
    m = config.partition

    def mixer(spec: BlockSpec) -> TokenMixer:
        odd = spec.index % 2 == 1
        if spec.stage in config.msa_stages:
            # With Swin's relative position bias over the whole map (at the nominal size), so
            # "MSA in stages 3-4" keeps the position information the window rows have there.
            bias = spec.feature_size if config.position_bias else None
            return FullAttention(spec.dim, spec.heads, position_bias=bias)
        if config.branches == "window" or (config.branches == "glance+window" and odd):
            shift = m // 2 if config.branches == "window" and odd else 0
            return WindowAttention(spec.dim, spec.heads, m, shift=shift,
                                   position_bias=config.position_bias)
        branches = "glance" if config.branches == "glance+window" else config.branches
        return GlanceGazeAttention(
            spec.dim, spec.heads, partition=m,
            gaze_kernel=gaze_kernel_for(config.gaze_kernel, spec, m, num_stages),
            branches=branches,
            position_bias=config.position_bias,
        )

    return build_hierarchical(config, mixer)


@dataclass(frozen=True)
class GGDeiTConfig(IsotropicConfig):
    partition: int = 7
    gaze_kernel: GazeKernel = "adaptive"
    branches: Literal["glance+gaze", "glance", "gaze"] = "glance+gaze"
    position_bias: bool = True


def build_gg_deit(config: GGDeiTConfig) -> IsotropicBackbone:
    """DeiT with GG-MSA in every block (GG Table 4c); no class token, mean-pooled head."""
    check_config(config.branches, config.partition, config.gaze_kernel, 1)

    def mixer(spec: BlockSpec) -> GlanceGazeAttention:
        return GlanceGazeAttention(
            spec.dim, spec.heads, partition=config.partition,
            gaze_kernel=gaze_kernel_for(config.gaze_kernel, spec, config.partition, 1),
            branches=config.branches, position_bias=config.position_bias,
        )

    return build_isotropic(config, mixer, class_token=False)


@register_model("gg_tiny", family="gg", paper="GG-T")
def gg_tiny(**overrides: Any) -> HierarchicalBackbone:
    return build_gg(with_overrides(GGConfig(), overrides))


@register_model("gg_small", family="gg", paper="GG-S")
def gg_small(**overrides: Any) -> HierarchicalBackbone:
    config = GGConfig(depths=(2, 2, 18, 2), drop_path_rate=0.3)
    return build_gg(with_overrides(config, overrides))


@register_model("gg_deit_tiny", family="gg", paper="GG-DeiT-T")
def gg_deit_tiny(**overrides: Any) -> IsotropicBackbone:
    return build_gg_deit(with_overrides(GGDeiTConfig(), overrides))


@register_model("gg_deit_small", family="gg", paper="GG-DeiT-S")
def gg_deit_small(**overrides: Any) -> IsotropicBackbone:
    return build_gg_deit(with_overrides(GGDeiTConfig(dim=384, heads=6), overrides))


# Same dims, depths, heads, patch and window as ``swin_mini`` (32 px, patch 2, M = 4): feature maps
# 16, 8, 4, 2, adaptive gaze kernels 5, 3, 3, 3.
MINI = GGConfig(**vars(MINI_FRAME), partition=4)


@register_model("gg_mini", family="gg", mini=True)
def gg_mini(**overrides: Any) -> HierarchicalBackbone:
    """CPU-trainable GG-T analogue of ``swin_mini``: GG-MSA (Glance + adaptive Gaze) everywhere."""
    return build_gg(with_overrides(MINI, overrides))


@register_model("gg_mini_glance", family="gg", mini=True)
def gg_mini_glance(**overrides: Any) -> HierarchicalBackbone:
    """Table 4b "Glance only": dilated-partition attention, no Gaze convolution."""
    return build_gg(with_overrides(MINI, {"branches": "glance", **overrides}))


@register_model("gg_mini_gaze", family="gg", mini=True)
def gg_mini_gaze(**overrides: Any) -> HierarchicalBackbone:
    """Table 4b "Gaze only": ``proj(DWConv(V))``, no attention (no query/key projections)."""
    return build_gg(with_overrides(MINI, {"branches": "gaze", **overrides}))


@register_model("gg_mini_glance_window", family="gg", mini=True)
def gg_mini_glance_window(**overrides: Any) -> HierarchicalBackbone:
    """Table 4b "Glance + Gaze (Attn)": Glance-only blocks alternating with W-MSA blocks."""
    return build_gg(with_overrides(MINI, {"branches": "glance+window", **overrides}))
