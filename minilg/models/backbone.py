"""The two backbones every model in minilg is an instance of.

* :class:`HierarchicalBackbone` -- a stem, then stages at strides 4, 8, 16, 32, each opening with
  its own downsampling (Swin, GG-Transformer, Focal, HAT-Net, SALG, PVT), then a norm.
* :class:`IsotropicBackbone` -- ViT/DeiT: one patch embedding, a class token, learned position
  embeddings, and a stack of blocks at a single resolution.

What differs between papers is passed in as *factories*: the stage factory of a hierarchical
backbone (:class:`~minilg.models.stages.BlockStages` builds the usual stages from the token mixer
of each block, the mechanism, and optionally the MLP, the norm and the downsampling layer), the
mixer of an isotropic one, and the stem. The model API follows timm (:class:`ModelBase`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from minilg.models.base import (
    ModelBase,
    check_model_args,
    check_positive,
    drop_path_rates,
    init_weights,
    stage_indices,
)
from minilg.models.blocks import Block, PatchEmbed, PatchMerging, module_macs, module_out_size
from minilg.models.stages import (
    BlockSpec,
    BlockStages,
    MixerFactory,
    MlpFactory,
    StageFactory,
    StageSpec,
    default_mlp,
)
from minilg.nn import NormFactory, layer_norm

# patch tokens (B, h, w, C) -> each output format of forward_intermediates
TOKEN_FORMATS = {"NCHW": "b h w c -> b c h w", "NHWC": "b h w c -> b h w c",
                 "NLC": "b h w c -> b (h w) c"}


class HierarchicalBackbone(ModelBase):
    """Four-stage pyramid (Swin Fig. 3): ``(B, 3, H, W) -> (B, num_classes)``.

    ``forward_features`` is ``stem -> stages -> norm``; each stage opens with its own
    downsampling (none in stage 0).

    Args:
        dims, depths, heads: per-stage width, number of blocks and attention heads.
        stage: the stage factory, ``StageSpec -> Stage`` (e.g.
            ``BlockStages(mixer)``: Swin's patch merging and pre-norm blocks around ``mixer``).
        img_size: nominal input resolution (any size runs; this fixes each stage's nominal
            ``in_size``).
        stem: the stem; defaults to Swin's ``PatchEmbed(4) + LayerNorm``. Stems report
            ``out_size(H, W)`` and ``macs(H, W)`` and return channels-last maps.
        norm: the final norm (default ``LayerNorm(dims[-1])``; HAT-Net has none: ``Identity``).
        drop_path_rate: stochastic depth, increased linearly from 0 over all blocks.
        init_convs: initialise convolutions like Linears (HAT-Net's official init).

    Features for detection and segmentation: :meth:`forward_intermediates` and
    :attr:`feature_info` (timm's convention: each stage's output before the next downsampling).
    """

    def __init__(
        self,
        *,
        dims: Sequence[int],
        depths: Sequence[int],
        heads: Sequence[int],
        stage: StageFactory,
        num_classes: int = 1000,
        img_size: int = 224,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        stem: nn.Module | None = None,
        norm: nn.Module | None = None,
        init_convs: bool = False,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, img_size, drop_path_rate)
        _check_stages(dims, depths, heads, img_size, drop_path_rate)
        self.num_classes, self.img_size, self.num_features = num_classes, img_size, dims[-1]
        self.in_chans = in_chans
        self.stem: nn.Module = stem if stem is not None else PatchEmbed(in_chans, dims[0], 4)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        size = module_out_size(self.stem, img_size, img_size)
        self.stages = nn.ModuleList()
        self.feature_info: list[dict[str, int | str]] = []
        for index, (dim, depth, num_heads) in enumerate(zip(dims, depths, heads, strict=True)):
            start = sum(depths[:index])
            spec = StageSpec(index, dims[index - 1] if index else dims[0], dim, depth, num_heads,
                             size, mlp_ratio, tuple(rates[start : start + depth]))
            self.stages.append(stage(spec))
            size = module_out_size(self.stages[-1], *size)
            self.feature_info.append({"num_chs": dim, "reduction": img_size // size[0],
                                      "module": f"stages.{index}"})
        self.norm = norm if norm is not None else nn.LayerNorm(dims[-1])
        self.reset_classifier(num_classes)
        downsampling = [getattr(s, "downsample", nn.Identity()) for s in self.stages]
        init_weights(self, convs=init_convs, first=[self.stem, *downsampling])

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs for dense tasks (timm's API and semantics).

        Args:
            indices: stages to return (``None``: all; an int ``n``: the last ``n``; a sequence:
                those stages, negative from the end), always in stage order.
            norm: apply the final norm to the last stage's output.
            stop_early: run no stage after the last one asked for (with
                ``intermediates_only=True``; the final features need every stage).
            output_fmt: ``"NCHW"`` (timm's default) or ``"NHWC"`` (minilg's channels-last).
            intermediates_only: return only the list.

        Returns:
            ``[stage_i (B, C_i, H_i, W_i)]`` (each stage's output before the next downsampling),
            and unless ``intermediates_only`` the final normalised features first.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        wanted = stage_indices(indices, len(self.stages))
        last = max(wanted) if stop_early else len(self.stages) - 1
        if last < len(self.stages) - 1 and not intermediates_only:
            raise ValueError(f"stop_early=True stops after stage {last}, before the final "
                             "features: use intermediates_only=True, got intermediates_only=False")
        self.check_images(x)
        x = self.stem(x)
        out: list[Tensor] = []
        for index, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if index in wanted:
                y = self.norm(x) if norm and index == len(self.stages) - 1 else x
                out.append(rearrange(y, "b h w c -> b c h w") if output_fmt == "NCHW" else y)
        if intermediates_only:
            return out
        return self.norm(x), out

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Keep only the stages up to the last of ``indices`` (timm's API and semantics).

        ``prune_norm`` replaces the final norm by the identity, ``prune_head`` removes the
        classifier (``num_classes = 0``). Returns the stage indices taken, as
        :meth:`forward_intermediates` reads ``indices`` (sorted).
        """
        taken = sorted(stage_indices(indices, len(self.stages)))
        keep = taken[-1] + 1
        self.stages = self.stages[:keep]
        self.feature_info = self.feature_info[:keep]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return taken

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, H/32, W/32, C_last)``: stem, stages, norm."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
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
        check_positive("resolution", size)
        total = module_macs(self.stem, *size)
        size = module_out_size(self.stem, *size)
        for stage in self.stages:
            total += module_macs(stage, *size)
            size = module_out_size(stage, *size)
        return total + self.head_macs()


def _check_stages(
    dims: Sequence[int], depths: Sequence[int], heads: Sequence[int], img_size: int,
    drop_path_rate: float,
) -> None:
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
        norm: NormFactory = nn.LayerNorm,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, img_size, drop_path_rate)
        check_positive("dim, depth, img_size, patch_size", [dim, depth, img_size, patch_size])
        if img_size % patch_size:
            raise ValueError(
                f"img_size={img_size} must be a multiple of patch_size={patch_size} "
                "for the isotropic backbone's fixed position embedding"
            )
        self.num_classes, self.img_size, self.num_features = num_classes, img_size, dim
        self.in_chans = in_chans
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
            Block(dim, mixer(spec), mlp(spec), rates[i], layer_scale, norm)
            for i in range(depth)
            for spec in [BlockSpec(0, i, dim, heads, self.grid, mlp_ratio)]
        )
        self.norm = norm(dim)
        self.reset_classifier(num_classes)
        init_weights(self)

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, H, W) -> (grid (B, h, w, C), prefix (B, num_prefix, C))``: patch tokens
        and the class token, position embeddings added."""
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"{type(self).__name__} was built for img_size={self.img_size}, got an input of "
                f"{tuple(x.shape[-2:])}; create the model with img_size={x.shape[-1]}"
            )
        grid = self.patch_embed(x)
        pos_prefix = self.pos_embed[:, : self.num_prefix]
        pos_grid = self.pos_embed[:, self.num_prefix :]
        grid = grid + rearrange(pos_grid, "1 (h w) c -> 1 h w c", h=self.grid[0])
        return grid, self.cls_token.expand(x.shape[0], -1, -1) + pos_prefix

    def run_block(self, block: nn.Module, grid: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor]:
        """One block on the patch tokens and the prefix tokens."""
        if self.num_prefix:
            assert isinstance(block, Block)
            return block.forward_with_extra(grid, prefix)
        return block(grid), prefix

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, num_prefix + N, C)`` normalised tokens, class token first."""
        grid, prefix = self.embed(x)
        for block in self.blocks:
            grid, prefix = self.run_block(block, grid, prefix)
        tokens = torch.cat([prefix, rearrange(grid, "b h w c -> b (h w) c")], dim=1)
        out: Tensor = self.norm(tokens)
        return out

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Any] | tuple[Tensor, list[Any]]:
        """Block outputs (timm's ViT API and semantics): ``indices`` of blocks as
        :meth:`HierarchicalBackbone.forward_intermediates`; ``norm`` applies the final norm to
        each; patch tokens as ``"NCHW"`` ``(B, C, h, w)``, ``"NHWC"`` or ``"NLC"`` ``(B, N, C)``;
        ``return_prefix_tokens`` pairs each with its ``(B, num_prefix, C)`` class token."""
        if output_fmt not in TOKEN_FORMATS:
            raise ValueError(f"output_fmt must be 'NCHW', 'NHWC' or 'NLC', got {output_fmt!r}")
        wanted = stage_indices(indices, len(self.blocks))
        last = max(wanted) if stop_early else len(self.blocks) - 1
        if last < len(self.blocks) - 1 and not intermediates_only:
            raise ValueError(f"stop_early=True stops after block {last}, before the final "
                             "features: use intermediates_only=True, got intermediates_only=False")
        grid, prefix = self.embed(x)
        out: list[Any] = []
        for index, block in enumerate(self.blocks[: last + 1]):
            grid, prefix = self.run_block(block, grid, prefix)
            if index in wanted:
                y, p = (self.norm(grid), self.norm(prefix)) if norm else (grid, prefix)
                y = rearrange(y, TOKEN_FORMATS[output_fmt])
                out.append((y, p) if return_prefix_tokens else y)
        if intermediates_only:
            return out
        tokens = torch.cat([prefix, rearrange(grid, "b h w c -> b (h w) c")], dim=1)
        return self.norm(tokens), out

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Keep only the blocks up to the last of ``indices`` (timm's ViT semantics); see
        :meth:`HierarchicalBackbone.prune_intermediate_layers`."""
        taken = sorted(stage_indices(indices, len(self.blocks)))
        self.blocks = self.blocks[: taken[-1] + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return taken

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
        extra = self.num_prefix
        total += sum(module_macs(block, h, w, extra_tokens=extra) for block in self.blocks)
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
    norm_eps: float = 1e-5  # LayerNorm eps: Swin and Focal 1e-5, PVT 1e-6


def build_hierarchical(config: HierarchicalConfig, mixer: MixerFactory) -> HierarchicalBackbone:
    """The Swin-style pyramid (patch-embedding stem, PatchMerging) with ``mixer`` in every block."""
    norm = layer_norm(config.norm_eps)
    stages = BlockStages(mixer, norm=norm,
                         downsample=functools.partial(PatchMerging, eps=config.norm_eps))
    return HierarchicalBackbone(
        dims=config.dims, depths=config.depths, heads=config.heads, stage=stages,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate,
        stem=PatchEmbed(config.in_chans, config.dims[0], config.patch_size, eps=config.norm_eps),
        norm=norm(config.dims[-1]),
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
    norm_eps: float = 1e-6  # LayerNorm eps of the DeiT reference code


def build_isotropic(
    config: IsotropicConfig, mixer: MixerFactory, class_token: bool = True
) -> IsotropicBackbone:
    """DeiT's frame with ``mixer`` in every block."""
    return IsotropicBackbone(
        dim=config.dim, depth=config.depth, heads=config.heads, mixer=mixer,
        num_classes=config.num_classes, img_size=config.img_size,
        patch_size=config.patch_size, in_chans=config.in_chans, mlp_ratio=config.mlp_ratio,
        drop_path_rate=config.drop_path_rate, class_token=class_token,
        norm=layer_norm(config.norm_eps),
    )
