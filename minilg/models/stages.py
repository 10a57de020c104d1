"""Stages: what a hierarchical backbone stacks between its stem and its final norm.

A stage owns its downsampling (as timm's Swin stage): ``downsample`` (patch merging, a strided
conv, or :class:`~minilg.models.blocks.NoDownsample` in the first stage, whose stride the stem
set), then its blocks. A backbone builds each stage with a *stage factory*, ``StageSpec ->
Stage``: :class:`BlockStages` is the usual one (a token mixer and an MLP per block, from their
own factories); a model whose stages do more (SALG's segmentation and inter-region propagation)
passes its own factory. Every stage reports ``out_size(H, W)`` and ``macs(H, W)`` for an input
of ``H x W``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from minilg.attention.base import TokenMixer
from minilg.models.blocks import Block, NoDownsample, PatchMerging, module_macs, module_out_size
from minilg.nn import Mlp, NormFactory


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


@dataclass(frozen=True)
class StageSpec:
    """Where a stage sits, handed to stage factories.

    ``in_dim`` and ``in_size`` are the channels and nominal map size entering the stage (the
    stem's, for stage 0); ``drop_path`` holds the stochastic-depth rate of each of its blocks.
    """

    index: int
    in_dim: int
    dim: int
    depth: int
    heads: int
    in_size: tuple[int, int]
    mlp_ratio: float
    drop_path: tuple[float, ...]


MixerFactory = Callable[[BlockSpec], TokenMixer]
MlpFactory = Callable[[BlockSpec], nn.Module]
DownsampleFactory = Callable[[int, int], nn.Module]
ExtraFactory = Callable[[int, int], "nn.Module | None"]


def default_mlp(spec: BlockSpec) -> nn.Module:
    return Mlp(spec.dim, spec.mlp_ratio)


class Stage(nn.Module):
    """Downsampling, then blocks, plus optional extra tokens that travel with the map.

    ``(B, H, W, C_in) -> (B, H', W', C)``. ``extra`` (if any) maps the downsampled map
    ``(B, H', W', C)`` to extra tokens ``(B, T, C)`` and reports ``num_tokens(H', W')`` and
    ``macs(H', W')``; every block then updates map and extra tokens together, and the tokens are
    dropped at the stage's end. ``stage[i]`` is block ``i``.
    """

    def __init__(self, downsample: nn.Module, blocks: Sequence[Block],
                 extra: nn.Module | None = None) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.extra = extra

    def __getitem__(self, index: int) -> Block:
        block: Block = self.blocks[index]  # type: ignore[assignment]
        return block

    def __len__(self) -> int:
        return len(self.blocks)

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return module_out_size(self.downsample, height, width)

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.extra is None:
            for block in self.blocks:
                x = block(x)
            return x
        extra: Tensor = self.extra(x)
        for index in range(len(self)):
            x, extra = self[index].forward_with_extra(x, extra)
        return x

    def macs(self, height: int, width: int) -> int:
        """Downsampling on the ``H x W`` input, then the blocks (and extra tokens) after it."""
        total = module_macs(self.downsample, height, width)
        height, width = self.out_size(height, width)
        if self.extra is None:
            return total + sum(module_macs(block, height, width) for block in self.blocks)
        num_tokens = getattr(self.extra, "num_tokens")  # noqa: B009  (a method of the module)
        tokens = int(num_tokens(height, width))
        total += module_macs(self.extra, height, width)
        return total + sum(
            module_macs(block, height, width, extra_tokens=tokens) for block in self.blocks
        )


@dataclass(frozen=True)
class BlockStages:
    """The usual stage factory: ``downsample`` (none in stage 0), then pre-norm blocks.

    Args:
        mixer: builds the token mixer of each block from its :class:`BlockSpec`.
        mlp, norm: MLP factory and norm factory of the blocks.
        downsample: ``(dim_in, dim_out) -> module`` opening stages 1, 2, ... (PatchMerging, or a
            :class:`~minilg.models.blocks.ConvDownsample`); it reports ``out_size(H, W)`` and
            ``macs(H, W)`` and works on channels-last maps.
        layer_scale: initial LayerScale of both branches (``None``: no LayerScale).
        extra: ``(stage, dim) -> module or None``: extra tokens that travel through a stage.
    """

    mixer: MixerFactory
    mlp: MlpFactory = default_mlp
    norm: NormFactory = nn.LayerNorm
    downsample: DownsampleFactory = PatchMerging
    layer_scale: float | None = None
    extra: ExtraFactory | None = None

    def downsampling(self, spec: StageSpec) -> nn.Module:
        """The stage's downsampling layer: none in stage 0 (the stem's job)."""
        return self.downsample(spec.in_dim, spec.dim) if spec.index else NoDownsample()

    def blocks(self, spec: StageSpec, size: tuple[int, int]) -> list[Block]:
        """The stage's blocks on its (downsampled, nominal) ``size`` map."""
        blocks = []
        for index, rate in enumerate(spec.drop_path):
            block = BlockSpec(spec.index, index, spec.dim, spec.heads, size, spec.mlp_ratio)
            blocks.append(Block(spec.dim, self.mixer(block), self.mlp(block), rate,
                                self.layer_scale, self.norm))
        return blocks

    def __call__(self, spec: StageSpec) -> Stage:
        down = self.downsampling(spec)
        blocks = self.blocks(spec, module_out_size(down, *spec.in_size))
        extra = self.extra(spec.index, spec.dim) if self.extra is not None else None
        return Stage(down, blocks, extra)


StageFactory = Callable[[StageSpec], Stage]
