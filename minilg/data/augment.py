"""Batched augmentation on tensors, on whatever device the batch lives (CPU or GPU).

Every random function takes a ``torch.Generator``; random numbers are drawn on the
generator's device and moved to the batch's device, so a CPU generator drives a GPU batch and
the result is reproducible either way. No torchvision: crops use ``F.affine_grid`` +
``F.grid_sample``.

Shapes: ``B`` batch, ``C`` channels (3), ``H x W`` input size, ``S`` output side, ``K``
classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchAugment",
    "horizontal_flip",
    "mixup_cutmix",
    "normalize",
    "random_resized_crop",
    "smooth_targets",
    "to_float",
]

IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)


def _uniform(
    n: int, generator: torch.Generator, device: torch.device, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """(n,) float32 uniform in [low, high), drawn on the generator's device."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(device=device, dtype=torch.float32)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    return rearrange(images, "b h w c -> b c h w").to(torch.float32).div_(255.0)


def normalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """(x - mean) / std per channel. x: float (B, C, H, W) in [0, 1] -> same shape."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random box per sample and resize it to ``size x size`` (bilinear).

    Each box covers a fraction ``s ~ U(scale)`` of the image area with aspect ratio
    ``r ~ logU(ratio)``; its sides are clamped to the image, and its position is uniform.

    Args:
        x: float (B, C, H, W).
        size: output side S.
        generator: drives the box sampling.

    Returns:
        float (B, C, S, S).
    """
    b = x.shape[0]
    area = _uniform(b, generator, x.device, *scale)
    log_r = _uniform(b, generator, x.device, math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # box width as a fraction of the image
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * _uniform(b, generator, x.device) + w / 2  # box centre in [0, 1]
    cy = (1 - h) * _uniform(b, generator, x.device) + h / 2
    zero = torch.zeros_like(w)
    theta = torch.stack(
        [torch.stack([w, zero, 2 * cx - 1], -1), torch.stack([zero, h, 2 * cy - 1], -1)], 1
    )  # (B, 2, 3): output [-1, 1] coords -> input coords
    grid = F.affine_grid(theta.to(x.dtype), [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def horizontal_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``. x: (B, C, H, W) -> same shape."""
    flip = _uniform(x.shape[0], generator, x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def smooth_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing: ``1 - smoothing + smoothing/K`` on the true class,
    ``smoothing/K`` elsewhere (rows sum to 1). labels: int (B,) -> float32 (B, K)."""
    off = smoothing / num_classes
    t = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    t.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)
    return t


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, seeded from ``generator`` (torch's Beta takes none)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup_cutmix(
    x: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    switch_prob: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix of each sample ``i`` with sample ``B - 1 - i`` (the flipped batch).

    One ``lam ~ Beta(alpha, alpha)`` per batch. Mixup: ``lam * x[i] + (1 - lam) * x[j]``.
    CutMix: a box of area ``1 - lam`` (clipped to the image) is pasted from ``x[j]`` into
    ``x[i]`` and ``lam`` becomes the exact kept fraction. Targets mix with the same ``lam``.
    With both alphas > 0, CutMix is chosen with probability ``switch_prob``.

    Args:
        x: float (B, C, H, W).
        targets: float (B, K), e.g. from :func:`smooth_targets`.

    Returns:
        mixed images (B, C, H, W) and mixed targets (B, K) (rows still sum to 1).
    """
    use_mix, use_cut = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mix or use_cut):
        return x, targets
    if use_mix and use_cut:
        use_cut = bool(_uniform(1, generator, torch.device("cpu"))[0] < switch_prob)
    x_other, t_other = x.flip(0), targets.flip(0)
    if use_cut:
        lam = _beta(cutmix_alpha, generator)
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = round(h * cut), round(w * cut)
        u = _uniform(2, generator, torch.device("cpu"))
        cy, cx = int(u[0] * h), int(u[1] * w)
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        mixed = x.clone()
        mixed[..., y0:y1, x0:x1] = x_other[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = _beta(mixup_alpha, generator)
        mixed = x * lam + x_other * (1.0 - lam)
    return mixed, targets * lam + t_other * (1.0 - lam)


class BatchAugment:
    """The whole per-batch pipeline: uint8 HWC images + int labels -> model inputs + targets.

    Train: random resized crop to ``resolution`` (skipped if ``scale`` is None), horizontal
    flip, normalisation, smoothed one-hot targets, then mixup/CutMix. Eval: resize to
    ``resolution`` if needed (antialiased bilinear), normalisation, one-hot targets.

    Args:
        resolution: output side S.
        scale: area range of the random crop, or None for no crop (e.g. for ``synthetic``,
            where a crop can cut a glyph out of the picture).
        hflip: random horizontal flip (p = 0.5).
        mixup_alpha, cutmix_alpha: Beta parameters, 0 disables.
        label_smoothing: see :func:`smooth_targets`.
        mean, std: per-channel normalisation on the [0, 1] scale
            (``ImageArrayDataset.channel_stats()`` gives per-dataset values).
    """

    def __init__(
        self,
        resolution: int,
        scale: tuple[float, float] | None = (0.35, 1.0),
        hflip: bool = True,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.resolution = resolution
        self.scale = scale
        self.ratio = ratio
        self.hflip = hflip
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.label_smoothing = label_smoothing
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        generator: torch.Generator | None = None,
        train: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: images uint8 (B, H, W, 3); labels int (B,). A generator is required when
        ``train``. Returns: float32 (B, 3, S, S) normalised, float32 targets (B, K)."""
        x = to_float(images)
        s = self.resolution
        if not train:
            if x.shape[-2:] != (s, s):
                x = F.interpolate(
                    x, size=(s, s), mode="bilinear", antialias=True, align_corners=False
                )
            return normalize(x, self.mean, self.std), smooth_targets(labels, num_classes, 0.0)
        if generator is None:
            raise ValueError("BatchAugment(train=True) needs a torch.Generator")
        if self.scale is not None:
            x = random_resized_crop(x, s, generator, self.scale, self.ratio)
        elif x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        if self.hflip:
            x = horizontal_flip(x, generator)
        x = normalize(x, self.mean, self.std)
        targets = smooth_targets(labels, num_classes, self.label_smoothing)
        return mixup_cutmix(x, targets, generator, self.mixup_alpha, self.cutmix_alpha)

    def __repr__(self) -> str:
        return (
            f"BatchAugment(resolution={self.resolution}, scale={self.scale}, hflip={self.hflip}, "
            f"mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
            f"label_smoothing={self.label_smoothing})"
        )
