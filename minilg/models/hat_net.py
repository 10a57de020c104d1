"""HAT-Net (Liu et al., "Vision Transformers with Hierarchical Attention", Sec. 3.3, Table 1).

A convolutional stem (two 3x3 stride-2 convs, ``3 -> 16 -> C_1``, GroupNorm and SiLU between
them), four stages of ``x + H-MHSA(x)``, ``x + IRB(x)`` blocks at strides 4, 8, 16, 32, a 3x3
stride-2 conv + GroupNorm between stages, global average pooling and a linear head (dropout 0.2
before it). Every norm is GroupNorm(1, C, eps=1e-6), and every norm sits *inside* a branch:
the blocks have no norm of their own (``Block(norm=nn.Identity)``) and the model no final norm.
The MLP is the inverted residual block (:class:`~minilg.nn.ConvMlp`: GN, 1x1, SiLU, k x k
depthwise, SiLU, 1x1, GN).

=================  =================  ==============  =============  ===============
variant            dims               depths          head dim       DW kernels
=================  =================  ==============  =============  ===============
HAT-Net-Tiny       48, 96, 240, 384   2, 2, 6, 3      48             3, 3, 3, 3
HAT-Net-Small      64, 128, 320, 512  2, 3, 8, 3      64             3, 3, 3, 3
HAT-Net-Medium     64, 128, 320, 512  3, 6, 18, 3     64             5, 3, 5, 3
HAT-Net-Large      64, 128, 320, 640  3, 8, 27, 3     64             3, 3, 3, 3
=================  =================  ==============  =============  ===============

All: MLP expansions 8, 8, 4, 4; ``G1 = 8, 7, 7, 1`` and ``G2 = 8, 4, 2, 1`` (Sec. 4.1; at 224
every pooled map of stages 0-2 is 7 x 7; ``G1 = 1``: plain MHSA in the last stage).
``set_grid_sizes`` changes ``G1``/``G2`` on the same weights (Sec. 4.2-4.3 use ``G1 = 8, 8, 8``,
``G2 = 16, 8, 4`` at 512 px and more).

**Parameters.** With ``follow="official"`` (the default) the layers are the official ones, less
the never-used ``attn.proj_norm`` (``2 C`` per block): 12,650,152 / 25,738,568 / 42,925,960 /
63,108,936 against the official 12,655,912 / 25,747,784 / 42,942,472 / 63,132,488 (-0.05% at
most). ``follow="paper"`` has no ``grid_norm``/``ds_norm`` (``4 C`` per H-MHSA block; the four
attention GroupNorms of the official code hold 18,432 parameters in HAT-Net-T, 6,912 of them in
``grid_norm``/``ds_norm``).

**MACs.** :meth:`HATNet.macs` is our complete exact count (convs and matmuls, attention
included); :meth:`HATNet.macs_breakdown` also gives the attention matmuls and the elements the
norms normalise. The published 2.0 / 4.3 / 8.3 / 11.5 G (Table 2) match the count *without*
the attention matmuls, 1.970 / 4.293 / 8.295 / 11.440 G at 224 (11.44 rounds to 11.4, not 11.5;
adding one MAC per element the GroupNorms normalise, 1.973 / 4.298 / 8.305 / 11.454 G, rounds to
all four published figures); the complete count is 2.128 / 4.548 / 8.777 / 12.075 G
(``python -m minilg info 'hat_net*'`` lists the complete count).

**Table 5 switches** (the paper numbers the stem "stage 1", so its stages 2-5 are minilg's
0-based stages 0-3): ``window_stages=(0, 1, 2)`` is design 1 (window attention everywhere but the
MHSA stage), ``(1, 2)`` design 2 (H-MHSA in the paper's stage 2), ``(2,)`` design 3, ``()``
design 4 (HAT-Net). Window attention there is Swin's W-MSA / SW-MSA in alternate blocks, window
``G1`` of that stage, with a pre-norm GroupNorm as the branch's norm. ``depthwise=False`` is the
"pure transformer" version (the IRB without its depthwise conv), ``act="gelu"`` the GELU row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from torch import Tensor, nn

from minilg.attention.base import TokenMixer
from minilg.attention.core import linear_macs
from minilg.attention.grouping import padded_size
from minilg.attention.hierarchical import (
    Follow,
    HierarchicalAttention,
    check_follow,
    check_sizes,
    effective_sizes,
)
from minilg.attention.window import WindowAttention, window_msa_macs
from minilg.models.backbone import HierarchicalBackbone, HierarchicalConfig
from minilg.models.blocks import Block, ConvDownsample, ConvStem, module_out_size
from minilg.models.stages import BlockSpec, BlockStages, Stage
from minilg.models.swin import MINI_FRAME
from minilg.nn import GELU, ChannelsLastGroupNorm, ConvMlp, group_norm
from minilg.registry import register_model, with_overrides
from minilg.validate import Pair

Activation = Literal["silu", "gelu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "gelu": GELU}


@dataclass(frozen=True)
class HATConfig(HierarchicalConfig):
    """HAT-Net-Tiny by default. ``heads`` empty: ``dims[i] // head_dim`` (the official rule).

    Per stage: ``mlp_ratios`` (IRB expansions), ``kernel_sizes`` (depthwise), ``grid_sizes``
    (``G1``; 1 = plain MHSA), ``pool_sizes`` (``G2``). ``stem_width``/``stem_strides``: the two
    stem convs (``(2, 2)``; the minis use ``(1, 2)``). ``drop_rate``: dropout before the head.
    """

    dims: tuple[int, ...] = (48, 96, 240, 384)
    depths: tuple[int, ...] = (2, 2, 6, 3)
    heads: tuple[int, ...] = ()
    head_dim: int = 48
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3)
    grid_sizes: tuple[int, ...] = (8, 7, 7, 1)
    pool_sizes: tuple[int, ...] = (8, 4, 2, 1)
    follow: Follow = "official"
    window_stages: tuple[int, ...] = ()
    depthwise: bool = True
    act: Activation = "silu"
    stem_width: int = 16
    stem_strides: tuple[int, ...] = (2, 2)
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6


class MacsBreakdown(NamedTuple):
    """``total``: every conv and matmul; ``attention``: the ``QK^T`` and ``AV`` part of it;
    ``norm_elements``: elements normalised by GroupNorms (not MACs; some counters add them)."""

    total: int
    attention: int
    norm_elements: int

    @property
    def without_attention(self) -> int:
        return self.total - self.attention


class PointwiseMlp(ConvMlp):
    """The IRB without its depthwise conv (Table 5's "pure transformer" HAT-Net):
    ``GN -> 1x1 -> act -> 1x1 -> GN``. MACs ``2 r H W C^2``."""

    def __init__(self, dim: int, ratio: float, act: type[nn.Module], eps: float) -> None:
        super().__init__(dim, ratio, 1, group_norm(1, eps), act)
        self.conv2 = nn.Sequential()  # no depthwise conv, no second activation
        self.kernel = 0


class NormedWindowAttention(WindowAttention):
    """Swin's W-MSA / SW-MSA with a GroupNorm before it (Table 5's window-attention stages:
    HAT-Net blocks carry their norms inside the branches)."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, eps: float) -> None:
        super().__init__(dim, heads, window, shift)
        self.norm = ChannelsLastGroupNorm(1, dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.norm(x))

    def attention_macs(self, height: int, width: int) -> int:
        return window_msa_macs(height, width, self.dim, self.window) - 4 * linear_macs(
            height * width, self.dim, self.dim)


class HATNet(HierarchicalBackbone):
    """HAT-Net: :class:`HierarchicalBackbone` with head dropout, ``G1``/``G2`` control and a
    MACs breakdown. Same API (``forward_intermediates`` gives each stage before downsampling)."""

    def __init__(self, config: HATConfig, **kwargs: Any) -> None:
        super().__init__(init_convs=True, **kwargs)  # the official init: convs like Linears
        self.config = config
        self.head_drop = nn.Dropout(config.drop_rate)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = features.mean(dim=(1, 2))
        logits: Tensor = pooled if pre_logits else self.head(self.head_drop(pooled))
        return logits

    def hierarchical_mixers(self) -> list[list[HierarchicalAttention]]:
        """The H-MHSA mixers of each stage (window stages give an empty list)."""
        return [[m for m in stage.modules() if isinstance(m, HierarchicalAttention)]
                for stage in self.stages]

    def set_grid_sizes(
        self, grid_sizes: tuple[int, ...] | None = None, pool_sizes: tuple[int, ...] | None = None
    ) -> None:
        """``G1`` and/or ``G2`` per stage on the same weights (parameter-free, Sec. 3.2).

        A stage built with ``G1 = 1`` (plain MHSA) must keep ``G1 = 1``; the others need
        ``G1 > 1``. ValueErrors name ``grid_sizes``/``pool_sizes``.
        """
        mixers = self.hierarchical_mixers()
        for name, sizes in (("grid_sizes", grid_sizes), ("pool_sizes", pool_sizes)):
            if sizes is not None and len(sizes) != len(mixers):
                raise ValueError(f"{name} needs one entry per stage ({len(mixers)}), got {sizes}")
        for stage, stage_mixers in enumerate(mixers):
            for mixer in stage_mixers:
                mixer.set_sizes(None if grid_sizes is None else grid_sizes[stage],
                                None if pool_sizes is None else pool_sizes[stage])

    def macs_breakdown(self, resolution: int | Pair) -> MacsBreakdown:
        """Complete MACs, their attention-matmul part, and the elements GroupNorms normalise."""
        size = (resolution, resolution) if isinstance(resolution, int) else resolution
        total = self.macs(size)
        stem = self.stem
        assert isinstance(stem, ConvStem)
        conv = stem.convs()[0]  # 3x3, padding 1: the stem's GroupNorm follows it
        stride = int(conv.stride[0])
        norm_elements = conv.out_channels * ((size[0] - 1) // stride + 1) * (
            (size[1] - 1) // stride + 1)
        attention = 0
        size = module_out_size(stem, *size)
        for stage in self.stages:
            assert isinstance(stage, Stage)
            size = stage.out_size(*size)
            if isinstance(stage.downsample, ConvDownsample):
                norm_elements += size[0] * size[1] * stage.downsample.out_dim
            for block in stage.blocks:
                assert isinstance(block, Block)
                attention += _mixer_attention_macs(block.mixer, size)
                norm_elements += _block_norm_elements(block, size)
        return MacsBreakdown(total, attention, norm_elements)


def _mixer_attention_macs(mixer: nn.Module, size: Pair) -> int:
    if isinstance(mixer, (HierarchicalAttention, NormedWindowAttention)):
        return mixer.attention_macs(*size)
    raise TypeError(f"no attention MACs for {type(mixer).__name__}")


def _block_norm_elements(block: Block, size: Pair) -> int:
    """Elements normalised by the GroupNorms of one block on an ``H x W`` map."""
    tokens, total = size[0] * size[1], 0
    ds_norm = getattr(block.mixer, "ds_norm", None)
    for module in block.modules():
        if not isinstance(module, nn.GroupNorm):
            continue
        if module is ds_norm and isinstance(block.mixer, HierarchicalAttention):
            (_, (ph, pw)) = effective_sizes(*size, block.mixer.grid, block.mixer.pool)
            total += padded_size(size[0], ph) // ph * (padded_size(size[1], pw) // pw) \
                * module.num_channels
        else:
            total += tokens * module.num_channels
    return total


def check_config(config: HATConfig) -> tuple[int, ...]:
    """Fail fast, naming the field; returns the heads per stage."""
    stages = len(config.dims)
    for name in ("mlp_ratios", "kernel_sizes", "grid_sizes", "pool_sizes"):
        if len(getattr(config, name)) != stages:
            raise ValueError(f"{name} needs one entry per stage ({stages}), got "
                             f"{name}={getattr(config, name)!r}")
    for grid, pool in zip(config.grid_sizes, config.pool_sizes, strict=True):
        check_sizes(grid, pool)
    check_follow(config.follow)
    if config.act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {tuple(ACTIVATIONS)}, got act={config.act!r}")
    bad = [s for s in config.window_stages if isinstance(s, bool) or not isinstance(s, int)
           or not 0 <= s < stages or config.grid_sizes[s] == 1]
    if bad:
        raise ValueError(f"window_stages are 0-based indices of H-MHSA stages (G1 > 1), in "
                         f"[0, {stages}), got window_stages={config.window_stages!r}")
    if config.heads:
        if len(config.heads) != stages:
            raise ValueError(f"heads needs one entry per stage, got heads={config.heads!r}")
        return config.heads
    if config.head_dim < 1 or any(d % config.head_dim for d in config.dims):
        raise ValueError(f"head_dim must divide every entry of dims={config.dims}, "
                         f"got head_dim={config.head_dim!r}")
    return tuple(d // config.head_dim for d in config.dims)


def build_hat_net(config: HATConfig) -> HATNet:
    """HAT-Net (or a Table 5 ablation) from a :class:`HATConfig`."""
    heads = check_config(config)
    eps, act = config.norm_eps, ACTIVATIONS[config.act]

    def mixer(spec: BlockSpec) -> TokenMixer:
        grid = config.grid_sizes[spec.stage]
        if spec.stage in config.window_stages:
            shift = grid // 2 if spec.index % 2 else 0
            return NormedWindowAttention(spec.dim, spec.heads, grid, shift, eps)
        return HierarchicalAttention(spec.dim, spec.heads, grid, config.pool_sizes[spec.stage],
                                     follow=config.follow, eps=eps)

    def mlp(spec: BlockSpec) -> nn.Module:
        ratio = config.mlp_ratios[spec.stage]
        if not config.depthwise:
            return PointwiseMlp(spec.dim, ratio, act, eps)
        return ConvMlp(spec.dim, ratio, config.kernel_sizes[spec.stage], group_norm(1, eps), act)

    widths = (config.stem_width, config.dims[0])
    stem = ConvStem(config.in_chans, widths, config.stem_strides,
                    norm=lambda c: nn.GroupNorm(1, c, eps=eps), act=act)
    stages = BlockStages(
        mixer, mlp=mlp, norm=nn.Identity,
        downsample=lambda i, o: ConvDownsample(i, o, 3, 2, 1, norm=group_norm(1, eps)))
    return HATNet(
        config, dims=config.dims, depths=config.depths, heads=heads, stage=stages,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        drop_path_rate=config.drop_path_rate, stem=stem, norm=nn.Identity(),
    )


TINY = HATConfig()
SMALL = replace(TINY, dims=(64, 128, 320, 512), depths=(2, 3, 8, 3), head_dim=64)
MEDIUM = replace(SMALL, depths=(3, 6, 18, 3), kernel_sizes=(5, 3, 5, 3))
LARGE = replace(SMALL, dims=(64, 128, 320, 640), depths=(3, 8, 27, 3))


@register_model("hat_net_tiny", family="hat_net", paper="HAT-Net-Tiny")
def hat_net_tiny(**overrides: Any) -> HATNet:
    return build_hat_net(with_overrides(TINY, overrides))


@register_model("hat_net_small", family="hat_net", paper="HAT-Net-Small")
def hat_net_small(**overrides: Any) -> HATNet:
    return build_hat_net(with_overrides(SMALL, overrides))


@register_model("hat_net_medium", family="hat_net", paper="HAT-Net-Medium")
def hat_net_medium(**overrides: Any) -> HATNet:
    return build_hat_net(with_overrides(MEDIUM, overrides))


@register_model("hat_net_large", family="hat_net", paper="HAT-Net-Large")
def hat_net_large(**overrides: Any) -> HATNet:
    return build_hat_net(with_overrides(LARGE, overrides))


# The shared mini frame (32 px, maps 16, 8, 4, 2, dims 32-256, depths 2-2-2-2, heads 1-2-4-8,
# 10 classes) with HAT-Net's parts: a stem of total stride 2 (3x3 s2 to 16 channels, GN, SiLU,
# 3x3 s1 to 32), 3x3 s2 conv downsampling, IRB MLPs, G1 = 4, 4, 2, 1 and G2 = 4, 2, 1, 1 (grids
# of 4x4, 2x2, 2x2 tokens; every pooled map is 4 x 4, as every one is 7 x 7 at 224). The IRB
# expansion is 2 (not 8, 8, 4, 4, nor the other minis' MLP ratio 4): the IRB holds three hidden
# maps (1x1, depthwise, two SiLUs) and two GroupNorms, and at ratio 2 the mini's MACs (26.9 M)
# and training step time are close to ``swin_mini``'s (27.8 M; about 1.2x its step time).
MINI = HATConfig(
    dims=MINI_FRAME.dims, depths=MINI_FRAME.depths, head_dim=32, mlp_ratios=(2, 2, 2, 2),
    grid_sizes=(4, 4, 2, 1), pool_sizes=(4, 2, 1, 1), stem_strides=(2, 1), img_size=32,
    num_classes=10, drop_rate=0.0, patch_size=2,
)


@register_model("hat_net_mini", family="hat_net", mini=True)
def hat_net_mini(**overrides: Any) -> HATNet:
    """CPU-trainable HAT-Net on the shared mini frame (official data flow; see ``MINI``)."""
    return build_hat_net(with_overrides(MINI, overrides))


__all__ = [
    "HATConfig", "HATNet", "MacsBreakdown", "NormedWindowAttention", "PointwiseMlp",
    "build_hat_net", "hat_net_large", "hat_net_medium", "hat_net_mini", "hat_net_small",
    "hat_net_tiny",
]
