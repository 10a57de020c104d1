"""The two backbones every model in minilg is an instance of.

* :class:`HierarchicalBackbone` -- a stem, four stages of blocks at strides 4, 8, 16, 32, with a
  downsampling layer between stages (Swin, GG-Transformer, Focal, HAT-Net, SALG, PVT).
* :class:`IsotropicBackbone` -- ViT/DeiT: one patch embedding, a class token, learned position
  embeddings, and a stack of blocks at a single resolution.

What differs between papers is passed in as *factories*: the token mixer of each block (the
mechanism), and optionally the stem, the downsampling layer, the MLP and the norm. The model API
follows timm: ``forward_features`` -> ``forward_head``, ``num_classes``, ``no_weight_decay()``,
plus ``macs(resolution)``: the exact closed-form MAC count (see :mod:`minilg.complexity`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from minilg.attention.base import TokenMixer
from minilg.attention.core import linear_macs
from minilg.layers import (
    Block,
    Mlp,
    NormFactory,
    PatchEmbed,
    PatchMerging,
    module_macs,
    module_out_size,
)


@dataclass(frozen=True)
class BlockSpec:
    """Where a block sits, handed to mixer and MLP factories.

    ``feature_size`` is the block's map size at the model's nominal ``img_size`` (GG's adaptive
    gaze kernel and HAT's grid sizes depend on it); the block must still accept any size.
    """

    stage: int
    index: int
    dim: int
    heads: int
    feature_size: tuple[int, int]
    mlp_ratio: float


MixerFactory = Callable[[BlockSpec], TokenMixer]
MlpFactory = Callable[[BlockSpec], nn.Module]


def default_mlp(spec: BlockSpec) -> nn.Module:
    return Mlp(spec.dim, spec.mlp_ratio)


def init_weights(module: nn.Module) -> None:
    """ViT/Swin initialisation: truncated normal (std 0.02) Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``blocks`` blocks."""
    return [rate * i / (blocks - 1) if blocks > 1 else 0.0 for i in range(blocks)]


def check_positive(name: str, values: Sequence[int | float]) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive, got {list(values)}")


class ModelBase(nn.Module):
    """Shared model API: ``forward = forward_head(forward_features(x))``."""

    num_classes: int
    img_size: int
    num_features: int
    head: nn.Module

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay (position tables and embeddings).

        Norm weights and biases (every parameter with ``ndim <= 1``) should be excluded too;
        the trainer does that by shape.
        """
        skip = ("bias_table", "pos_embed", "cls_token")
        return {name for name, _ in self.named_parameters() if name.endswith(skip)}

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def head_macs(self) -> int:
        return linear_macs(1, self.num_features, self.num_classes) if self.num_classes > 0 else 0


class HierarchicalBackbone(ModelBase):
    """Four-stage pyramid (Swin Fig. 3): ``(B, 3, H, W) -> (B, num_classes)``.

    Args:
        dims, depths, heads: per-stage width, number of blocks and attention heads.
        mixer: builds the token mixer of each block from its :class:`BlockSpec`.
        img_size: nominal input resolution (any size runs; this fixes ``feature_size``).
        stem: the stride-4 stem; defaults to Swin's ``PatchEmbed(4) + LayerNorm``.
        downsample: ``(dim_in, dim_out) -> module`` halving the map; defaults to PatchMerging.
            Stems and downsampling layers report ``out_size(H, W)`` and ``macs(H, W)``.
        mlp, norm: MLP factory and norm class of the blocks.
        drop_path_rate: stochastic depth, increased linearly from 0 over all blocks.
    """

    def __init__(
        self,
        *,
        dims: Sequence[int],
        depths: Sequence[int],
        heads: Sequence[int],
        mixer: MixerFactory,
        num_classes: int = 1000,
        img_size: int = 224,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        layer_scale: float | None = None,
        stem: nn.Module | None = None,
        downsample: Callable[[int, int], nn.Module] = PatchMerging,
        mlp: MlpFactory = default_mlp,
        norm: NormFactory = nn.LayerNorm,
        stem_stride: int = 4,
    ) -> None:
        super().__init__()
        if not len(dims) == len(depths) == len(heads) or len(dims) == 0:
            raise ValueError(
                f"dims, depths and heads need one entry per stage, got {len(dims)}, "
                f"{len(depths)}, {len(heads)}"
            )
        check_positive("dims", dims)
        check_positive("depths", depths)
        check_positive("img_size", [img_size])
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.num_classes, self.img_size, self.num_features = num_classes, img_size, dims[-1]
        self.stem: nn.Module = stem if stem is not None else PatchEmbed(in_chans, dims[0], 4)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        size = (-(-img_size // stem_stride),) * 2
        self.downsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        for stage, (dim, depth, num_heads) in enumerate(zip(dims, depths, heads, strict=True)):
            if stage > 0:
                down = downsample(dims[stage - 1], dim)
                size = module_out_size(down, *size)
                self.downsamples.append(down)
            blocks = []
            for index in range(depth):
                spec = BlockSpec(stage, index, dim, num_heads, size, mlp_ratio)
                rate = rates[sum(depths[:stage]) + index]
                blocks.append(Block(dim, mixer(spec), mlp(spec), rate, layer_scale, norm))
            self.stages.append(nn.Sequential(*blocks))
        self.norm = norm(dims[-1])
        self.reset_classifier(num_classes)
        self.apply(init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, H/32, W/32, C_last)``, normalised."""
        x = self.stem(x)
        for stage, blocks in enumerate(self.stages):
            if stage > 0:
                x = self.downsamples[stage - 1](x)
            x = blocks(x)
        out: Tensor = self.norm(x)
        return out

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """``(B, h, w, C) -> (B, num_classes)``: global average pool then the linear head."""
        pooled = reduce(features, "b h w c -> b c", "mean")
        logits: Tensor = pooled if pre_logits else self.head(pooled)
        return logits

    def macs(self, resolution: int | tuple[int, int]) -> int:
        """Exact MACs for one image of ``resolution`` (int or ``(H, W)``)."""
        size = (resolution, resolution) if isinstance(resolution, int) else resolution
        total = module_macs(self.stem, *size)
        size = module_out_size(self.stem, *size)
        for stage, blocks in enumerate(self.stages):
            if stage > 0:
                down = self.downsamples[stage - 1]
                total += module_macs(down, *size)
                size = module_out_size(down, *size)
            total += sum(module_macs(block, *size) for block in blocks.children())
        return total + self.head_macs()


class IsotropicBackbone(ModelBase):
    """ViT / DeiT (Touvron et al. 2021): patch embedding, class token, learned position
    embedding, ``depth`` blocks at one resolution, class-token head.

    With ``class_token=False`` the head averages the patch tokens instead (used when the mixer
    has no notion of extra tokens, e.g. GG-MSA's dilated partitions).
    Shapes: ``(B, 3, img_size, img_size) -> (B, num_classes)``; the input size is fixed by the
    position embedding.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        mixer: MixerFactory,
        num_classes: int = 1000,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        layer_scale: float | None = None,
        class_token: bool = True,
        mlp: MlpFactory = default_mlp,
    ) -> None:
        super().__init__()
        check_positive("dim, depth, img_size, patch_size", [dim, depth, img_size, patch_size])
        if img_size % patch_size:
            raise ValueError(
                f"img_size={img_size} must be a multiple of patch_size={patch_size} "
                "for the isotropic backbone's fixed position embedding"
            )
        self.num_classes, self.img_size, self.num_features = num_classes, img_size, dim
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size, norm=False)
        side = img_size // patch_size
        self.grid = (side, side)
        self.num_prefix = 1 if class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_prefix, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + side * side, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(dim, mixer(spec), mlp(spec), rates[i], layer_scale)
            for i in range(depth)
            for spec in [BlockSpec(0, i, dim, heads, self.grid, mlp_ratio)]
        )
        self.norm = nn.LayerNorm(dim)
        self.reset_classifier(num_classes)
        self.apply(init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, num_prefix + N, C)`` normalised tokens, class token first."""
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"{type(self).__name__} was built for img_size={self.img_size}, got an input of "
                f"{tuple(x.shape[-2:])}; create the model with img_size={x.shape[-1]}"
            )
        grid = self.patch_embed(x)
        pos_prefix = self.pos_embed[:, : self.num_prefix]
        pos_grid = self.pos_embed[:, self.num_prefix :]
        grid = grid + rearrange(pos_grid, "1 (h w) c -> 1 h w c", h=self.grid[0])
        prefix = self.cls_token.expand(x.shape[0], -1, -1) + pos_prefix
        for block in self.blocks:
            if self.num_prefix:
                assert isinstance(block, Block)
                grid, prefix = block.forward_with_prefix(grid, prefix)
            else:
                grid = block(grid)
        tokens = torch.cat([prefix, rearrange(grid, "b h w c -> b (h w) c")], dim=1)
        out: Tensor = self.norm(tokens)
        return out

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Class token (or mean of patch tokens without one) -> linear head."""
        pooled = features[:, 0] if self.num_prefix else features.mean(dim=1)
        logits: Tensor = pooled if pre_logits else self.head(pooled)
        return logits

    def macs(self, resolution: int | None = None) -> int:
        if resolution is not None and resolution != self.img_size:
            raise ValueError(f"resolution must equal img_size={self.img_size}, got {resolution}")
        h, w = self.grid
        total = self.patch_embed.macs(self.img_size, self.img_size)
        total += sum(module_macs(block, h, w, num_prefix=self.num_prefix) for block in self.blocks)
        return total + self.head_macs()


@dataclass(frozen=True)
class HierarchicalConfig:
    """Fields every four-stage model shares; a family's config adds its mechanism's fields.

    The mini defaults of each family live beside it; these defaults are Swin-T's frame.
    """

    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    num_classes: int = 1000
    img_size: int = 224
    in_chans: int = 3
    patch_size: int = 4


def build_hierarchical(config: HierarchicalConfig, mixer: MixerFactory) -> HierarchicalBackbone:
    """The Swin-style pyramid (patch-embedding stem, PatchMerging) with ``mixer`` in every block."""
    return HierarchicalBackbone(
        dims=config.dims, depths=config.depths, heads=config.heads, mixer=mixer,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate,
        stem=PatchEmbed(config.in_chans, config.dims[0], config.patch_size),
        stem_stride=config.patch_size,
    )


@dataclass(frozen=True)
class IsotropicConfig:
    """Fields every DeiT-style model shares (defaults: DeiT-T)."""

    dim: int = 192
    depth: int = 12
    heads: int = 3
    patch_size: int = 16
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    num_classes: int = 1000
    img_size: int = 224
    in_chans: int = 3


def build_isotropic(
    config: IsotropicConfig, mixer: MixerFactory, class_token: bool = True
) -> IsotropicBackbone:
    """DeiT's frame with ``mixer`` in every block."""
    return IsotropicBackbone(
        dim=config.dim, depth=config.depth, heads=config.heads, mixer=mixer,
        num_classes=config.num_classes, img_size=config.img_size,
        patch_size=config.patch_size, in_chans=config.in_chans, mlp_ratio=config.mlp_ratio,
        drop_path_rate=config.drop_path_rate, class_token=class_token,
    )
