"""The isotropic backbone (ViT / DeiT): one patch embedding, optional class token, learned
position embeddings and a stack of blocks at a single resolution; the mixer of its blocks is a
factory, as in :class:`~minilg.models.backbone.HierarchicalBackbone`. timm's ViT API
(:class:`~minilg.models.base.ModelBase`, ``forward_intermediates``, ``prune_intermediate_layers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from minilg.models.base import (
    TOKEN_FORMATS,
    ModelBase,
    check_model_args,
    check_positive,
    drop_path_rates,
    init_weights,
    stage_indices,
)
from minilg.models.blocks import Block, PatchEmbed, module_macs
from minilg.models.stages import BlockSpec, MixerFactory, MlpFactory, default_mlp
from minilg.nn import NormFactory, layer_norm

__all__ = ["IsotropicBackbone", "IsotropicConfig", "build_isotropic"]


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
