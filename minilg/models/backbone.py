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

import functools
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
    layer_norm,
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


def init_weights(module: nn.Module, convs: bool = False) -> None:
    """ViT/Swin initialisation: truncated normal (std 0.02) Linear weights, zero biases; norms
    to identity. ``convs=True`` treats convolutions like Linears (HAT-Net's official init)."""
    if isinstance(module, (nn.Linear, nn.Conv2d) if convs else nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``blocks`` blocks."""
    return [rate * i / (blocks - 1) if blocks > 1 else 0.0 for i in range(blocks)]


def check_positive(name: str, values: Sequence[int | float]) -> None:
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values):
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

    in_chans: int = 3

    def check_images(self, x: Tensor) -> None:
        """One clear ValueError unless ``x`` is a non-empty float ``(B, in_chans, H, W)`` batch."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} expects a torch.Tensor of images, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{name} expects images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{name} expects floating-point images (float16, bfloat16, float32 or float64), "
                f"got dtype {x.dtype}; convert with x.float() (and scale uint8 to [0, 1])"
            )
        if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"{name} got an empty batch of shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_images(x)
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


ExtraFactory = Callable[[int, int], "nn.Module | None"]


class Stage(nn.Module):
    """The blocks of one stage, plus optional extra tokens that travel with the map.

    ``extra`` (if any) maps the stage's input ``(B, H, W, C)`` to extra tokens ``(B, T, C)``
    (SALG's aggregation tokens) and reports ``num_tokens(H, W)`` and ``macs(H, W)``; every block
    then updates map and extra tokens together, and the tokens are dropped at the stage's end.
    ``stage[i]`` is block ``i``.
    """

    def __init__(self, blocks: Sequence[Block], extra: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.extra = extra

    def __getitem__(self, index: int) -> Block:
        block: Block = self.blocks[index]  # type: ignore[assignment]
        return block

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        if self.extra is None:
            for block in self.blocks:
                x = block(x)
            return x
        extra: Tensor = self.extra(x)
        for index in range(len(self)):
            x, extra = self[index].forward_with_extra(x, extra)
        return x

    def macs(self, height: int, width: int) -> int:
        if self.extra is None:
            return sum(module_macs(block, height, width) for block in self.blocks)
        num_tokens = getattr(self.extra, "num_tokens")  # noqa: B009  (a method of the module)
        tokens = int(num_tokens(height, width))
        total = module_macs(self.extra, height, width)
        return total + sum(
            module_macs(block, height, width, extra_tokens=tokens) for block in self.blocks
        )


class HierarchicalBackbone(ModelBase):
    """Four-stage pyramid (Swin Fig. 3): ``(B, 3, H, W) -> (B, num_classes)``.

    Args:
        dims, depths, heads: per-stage width, number of blocks and attention heads.
        mixer: builds the token mixer of each block from its :class:`BlockSpec`.
        img_size: nominal input resolution (any size runs; this fixes ``feature_size``).
        stem: the stem; defaults to Swin's ``PatchEmbed(4) + LayerNorm``. Stage sizes are derived
            from its ``out_size(H, W)``.
        downsample: ``(dim_in, dim_out) -> module`` between stages (PatchMerging, or a
            :class:`~minilg.layers.ConvDownsample`). Stems and downsampling layers report
            ``out_size(H, W)`` and ``macs(H, W)`` and work on channels-last maps.
        mlp, norm: MLP factory and norm factory of the blocks (``norm`` also builds the final
            norm unless ``final_norm`` is given).
        extra: ``(stage, dim) -> module or None``: extra tokens that travel through a stage.
        drop_path_rate: stochastic depth, increased linearly from 0 over all blocks.

    Features for detection and segmentation: :meth:`forward_intermediates` and
    :attr:`feature_info` (timm's convention: each stage's output before the next downsampling).
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
        final_norm: nn.Module | None = None,
        extra: ExtraFactory | None = None,
    ) -> None:
        super().__init__()
        _check_stages(dims, depths, heads, img_size, drop_path_rate)
        self.num_classes, self.img_size, self.num_features = num_classes, img_size, dims[-1]
        self.in_chans = in_chans
        self.stem: nn.Module = stem if stem is not None else PatchEmbed(in_chans, dims[0], 4)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        size = module_out_size(self.stem, img_size, img_size)
        self.downsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.feature_info: list[dict[str, int | str]] = []
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
            self.stages.append(Stage(blocks, extra(stage, dim) if extra is not None else None))
            self.feature_info.append({"num_chs": dim, "reduction": img_size // size[0],
                                      "module": f"stages.{stage}"})
        self.norm = final_norm if final_norm is not None else norm(dims[-1])
        self.reset_classifier(num_classes)
        self.apply(init_weights)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs for dense tasks (timm's API).

        Args:
            indices: stages to return (``None``: all; an int ``n``: the last ``n``).
            norm: apply the final norm to the last stage's output.
            output_fmt: ``"NCHW"`` (timm's default) or ``"NHWC"`` (minilg's channels-last).
            intermediates_only: return only the list.

        Returns:
            ``[stage_i (B, C_i, H_i, W_i)]`` (each stage's output before the next downsampling),
            and unless ``intermediates_only`` the final normalised features first.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        wanted = _stage_indices(indices, len(self.stages))
        self.check_images(x)
        x = self.stem(x)
        out: list[Tensor] = []
        for stage, blocks in enumerate(self.stages):
            if stage > 0:
                x = self.downsamples[stage - 1](x)
            x = blocks(x)
            if stage in wanted:
                y = self.norm(x) if norm and stage == len(self.stages) - 1 else x
                out.append(rearrange(y, "b h w c -> b c h w") if output_fmt == "NCHW" else y)
        if intermediates_only:
            return out
        return self.norm(x), out

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
        check_positive("resolution", size)
        total = module_macs(self.stem, *size)
        size = module_out_size(self.stem, *size)
        for stage, blocks in enumerate(self.stages):
            if stage > 0:
                down = self.downsamples[stage - 1]
                total += module_macs(down, *size)
                size = module_out_size(down, *size)
            total += module_macs(blocks, *size)
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


def _stage_indices(indices: int | Sequence[int] | None, stages: int) -> set[int]:
    """timm's ``indices``: ``None`` all stages, ``n`` the last ``n``, or explicit indices."""
    if indices is None:
        return set(range(stages))
    if isinstance(indices, int):
        if not 0 < indices <= stages:
            raise ValueError(f"indices must be in 1..{stages}, got {indices}")
        return set(range(stages - indices, stages))
    chosen = {i % stages for i in indices}
    if any(not -stages <= i < stages for i in indices):
        raise ValueError(f"stage indices must be in -{stages}..{stages - 1}, got {list(indices)}")
    return chosen


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
                grid, prefix = block.forward_with_extra(grid, prefix)
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
    return HierarchicalBackbone(
        dims=config.dims, depths=config.depths, heads=config.heads, mixer=mixer,
        num_classes=config.num_classes, img_size=config.img_size, in_chans=config.in_chans,
        mlp_ratio=config.mlp_ratio, drop_path_rate=config.drop_path_rate,
        stem=PatchEmbed(config.in_chans, config.dims[0], config.patch_size, eps=config.norm_eps),
        downsample=functools.partial(PatchMerging, eps=config.norm_eps),
        norm=layer_norm(config.norm_eps),
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
