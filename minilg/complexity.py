"""Exact complexity: measured MACs and the closed forms the papers state.

Convention (as the papers' "FLOPs" columns): we report **MACs**, multiply-accumulates of matmul
and convolution ops. Norms, softmax, pooling, activations, bias and residual adds are not
counted. :func:`count_macs` measures with :class:`torch.utils.flop_counter.FlopCounterMode`
(which counts ``2 x MACs`` for mm/bmm/addmm/conv) under the math SDPA backend: the fused CPU
kernels are invisible to the counter, the math backend is two bmm it counts exactly.

Closed forms, one per mechanism, live beside the mechanism (``minilg.attention.*``) and are
re-exported here:

* ``msa_macs``: Omega(MSA) = 4NC^2 + 2N^2C (GG Eq. 4);
* ``window_msa_macs``: Omega(W-MSA) = 4NC^2 + 2M^2NC (GG Eq. 12, Swin Eq. 2);
* ``sra_macs``: PVT spatial-reduction attention;
* ``gg_msa_macs``: Omega(GG-MSA) = 4NC^2 + 2M^2NC + k^2NC (GG Eq. 14);
* ``focal_macs``: focal attention, O((L + sum_l (s_r^l)^2) MNd) (Focal Sec. 3.2.2), exactly.
* ``h_mhsa_macs``: Omega(H-MHSA) = 5NC^2 + 2G1^2 N C + 2PC(C + N) (HAT-Net Eq. 15 + W_2^q).
* ``salg_attention_macs``: SALG Eq. 1 + Eq. 2, ``n_R K C + 4(N + n_R)C^2 + 2 n_R (1 + K)^2 C``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from minilg.attention.focal import focal_macs
from minilg.attention.full import msa_macs
from minilg.attention.glance_gaze import gg_msa_macs
from minilg.attention.hierarchical import h_mhsa_macs
from minilg.attention.semantic_regions import salg_attention_macs
from minilg.attention.spatial_reduction import sra_macs
from minilg.attention.window import window_msa_macs

__all__ = [
    "count_macs",
    "focal_macs",
    "format_macs",
    "gg_msa_macs",
    "h_mhsa_macs",
    "measured_model_macs",
    "model_macs",
    "msa_macs",
    "salg_attention_macs",
    "sra_macs",
    "window_msa_macs",
]


def count_macs(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Measured MACs of ``module(*inputs, **kwargs)``: FlopCounterMode's FLOPs divided by 2.

    Runs under ``torch.no_grad()`` and the math SDPA backend. Multiply the result by nothing:
    it is already MACs (one multiply-add counted once).
    """
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    flops = int(counter.get_total_flops())
    if flops % 2:
        raise RuntimeError(f"FlopCounterMode returned an odd FLOP count {flops}")
    return flops // 2


def model_macs(model: nn.Module, resolution: int | None = None) -> int:
    """Closed-form MACs of a minilg model for one ``resolution x resolution`` RGB image.

    Every minilg model implements ``macs(resolution)`` from the closed forms of its parts; tests
    check it against :func:`count_macs` exactly. ``resolution`` defaults to ``model.img_size``.
    """
    macs_fn = getattr(model, "macs", None)
    if macs_fn is None:
        raise ValueError(
            f"{type(model).__name__} has no closed-form macs(resolution); use count_macs(model, x)"
        )
    return int(macs_fn(resolution if resolution is not None else _img_size(model)))


def measured_model_macs(model: nn.Module, resolution: int | None = None) -> int:
    """Measured MACs of ``model`` on one ``(1, 3, resolution, resolution)`` zero image."""
    if resolution is None:
        resolution = _img_size(model)
    param = next(model.parameters())
    x: Tensor = torch.zeros(1, 3, resolution, resolution, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        return count_macs(model, x)
    finally:
        model.train(was_training)


def format_macs(macs: int) -> str:
    """``4_490_000_000 -> '4.49 GMACs'``."""
    return f"{macs / 1e9:.2f} GMACs" if macs >= 1e8 else f"{macs / 1e6:.1f} MMACs"


def _img_size(model: nn.Module) -> int:
    size = getattr(model, "img_size", None)
    if not isinstance(size, int):
        raise ValueError(f"{type(model).__name__} has no img_size: pass resolution explicitly")
    return size
