"""What every minilg model shares: timm's model API (:class:`ModelBase`) and the
initialisation (:func:`init_weights`).

The model API follows timm: ``forward_features`` -> ``forward_head``, ``num_classes``,
``no_weight_decay()``, ``reset_classifier``, plus ``macs(resolution)``: the exact closed-form
MAC count (see :mod:`minilg.complexity`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from minilg.attention.core import linear_macs
from minilg.validate import positive_int, whole_number


def trunc_normal_init(module: nn.Module, convs: bool = False) -> None:
    """ViT/Swin initialisation of one module: truncated normal (std 0.02) Linear weights, zero
    biases; norms to identity. ``convs=True`` treats convolutions like Linears (HAT-Net's
    official init)."""
    if isinstance(module, (nn.Linear, nn.Conv2d) if convs else nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_weights(model: nn.Module, convs: bool = False, first: Iterable[nn.Module] = ()) -> None:
    """A backbone's initialisation: :func:`trunc_normal_init` on every module, then each
    module's own ``init_weights()`` where it has one (e.g. learned pooling that starts as the
    mean), so no model re-initialises anything after construction.

    ``first``: parts initialised before the rest, in that order (it fixes which random numbers
    each weight draws: a hierarchical backbone visits its stem and downsampling layers first, the
    order minilg has always used, so seeded initialisations stay the same).
    """
    seen: set[int] = set()
    for part in (*first, model):
        for module in part.modules():
            if id(module) not in seen:
                seen.add(id(module))
                trunc_normal_init(module, convs)
    for module in model.modules():
        own = getattr(module, "init_weights", None)
        if module is not model and callable(own):
            own()


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``blocks`` blocks."""
    return [rate * i / (blocks - 1) if blocks > 1 else 0.0 for i in range(blocks)]


def check_model_args(num_classes: object, img_size: object, drop_path_rate: object) -> None:
    """The arguments every backbone shares, checked first (minilg.validate's message shape):
    ``num_classes`` an integer >= 0 (0: no head, features out), ``img_size`` a positive integer,
    ``drop_path_rate`` a number in [0, 1) (reported as passed, before it is spread over blocks).
    """
    whole_number(num_classes, "num_classes")
    positive_int(img_size, "img_size")
    if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) or not (
        0.0 <= drop_path_rate < 1.0
    ):
        raise ValueError(
            f"drop_path_rate must be a number in [0, 1), got drop_path_rate={drop_path_rate!r}"
        )


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
        weights = next(self.parameters(), None)
        if (weights is not None and x.dtype != weights.dtype
                and not torch.is_autocast_enabled(x.device.type)):
            raise ValueError(
                f"{name} has {weights.dtype} weights but got {x.dtype} images; convert them "
                f"with x.to({weights.dtype}) (or the model with model.to({x.dtype}))"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_images(x)
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay (position tables, embeddings and
        learned tokens: the class token, SALG's AGR embeddings).

        Norm weights and biases (every parameter with ``ndim <= 1``) should be excluded too;
        the trainer does that by shape.
        """
        skip = ("bias_table", "pos_embed", "cls_token", "agr_token")
        return {name for name, _ in self.named_parameters() if name.endswith(skip)}

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def head_macs(self) -> int:
        return linear_macs(1, self.num_features, self.num_classes) if self.num_classes > 0 else 0


def stage_indices(indices: int | Sequence[int] | None, stages: int) -> set[int]:
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
