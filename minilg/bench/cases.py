"""The cases: one mixer of one model's stage, found through the model registry's public functions.

For each family, its *canonical* model: the smallest full-size model named in timm's convention
(``<family>_<size>``, sizes in :data:`SIZE_WORDS`; otherwise its first full-size model by name).
A family with only mini models gets its first mini model rebuilt in Swin-T's frame
(:data:`FRAME_OVERRIDES`: C = 96, 3 heads, 224 px) when its config allows it, so that its mixer
runs at the same channels as the others. Every distinct mixer of each chosen stage is a case
(Swin's W-MSA *and* SW-MSA: block 0 and block 1), so a new mechanism appears without touching
the benchmark.

With ``extras``, mixers built alone at Swin-T's stage-1 width (C = 96, 3 heads) join them
(:func:`extra_cases`): full MSA (so that every mechanism can be compared at one width) and
SALG's intra-region attention at margins p = 1 and p = 2 (segmentation included), which the
targets compare with W-MSA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import minilg.models  # noqa: F401  (registers every family)
from minilg.attention.base import TokenMixer
from minilg.attention.full import FullAttention
from minilg.attention.semantic_regions import SemanticRegionAttention
from minilg.attention.window import WindowAttention
from minilg.bench.settings import BenchError
from minilg.registry import create_model, list_models, model_entry

__all__ = ["FRAME_OVERRIDES", "SIZE_WORDS", "Case", "build_model", "canonical_models",
           "discover_cases", "extra_cases", "mixer_label", "stage_blocks"]

FRAME_OVERRIDES: dict[str, Any] = {  # Swin-T's frame, for families without a full-size model
    "dims": (96, 192, 384, 768), "depths": (2, 2, 6, 2), "heads": (3, 6, 12, 24),
    "img_size": 224, "patch_size": 4, "num_classes": 1000,
}
#: The size words of model names, smallest first.
SIZE_WORDS = ("super_tiny", "tiny", "small", "base", "medium", "large")
#: The order in which families are shown (the notebooks' and the stored results'); families not
#: listed follow, by name.
FAMILY_ORDER = ("deit", "swin", "focal", "gg", "hat_net", "pvt", "salg")


@dataclass
class Case:
    """One mixer to benchmark: ``mixer`` is the module itself, with the model's weights."""

    name: str  # "swin_tiny s1.b1 SW-MSA"
    family: str
    model: str
    stage: int  # 1-based, as in the papers
    block: int  # 0-based index inside the stage
    mixer_name: str
    dim: int
    mixer: TokenMixer = field(repr=False, compare=False)
    block_module: nn.Module | None = field(default=None, repr=False, compare=False)
    variant: str = ""  # what sets an extra case apart: "C=96", "p=1", "p=2"


def mixer_label(mixer: nn.Module) -> str:
    """A short name: the papers' for the known mixers, the class name otherwise."""
    names = {"FullAttention": "MSA", "SpatialReductionAttention": "SRA",
             "GlanceGazeAttention": "GG-MSA"}
    if isinstance(mixer, WindowAttention):
        return "SW-MSA" if any(mixer.shift) else "W-MSA"
    return names.get(type(mixer).__name__, type(mixer).__name__)


def _families() -> dict[str, list[str]]:
    """``family -> registered names`` (sorted), families in :data:`FAMILY_ORDER` first."""
    members: dict[str, list[str]] = {}
    for name in list_models():
        members.setdefault(model_entry(name).family, []).append(name)
    rank = {family: index for index, family in enumerate(FAMILY_ORDER)}
    return {f: members[f] for f in sorted(members, key=lambda f: (rank.get(f, len(rank)), f))}


def canonical_models() -> dict[str, tuple[str, dict[str, Any]]]:
    """``family -> (model name, overrides)``: the smallest full-size model of each family
    (``<family>_<size word>``, else the first by name), or its first mini model with
    :data:`FRAME_OVERRIDES` when the family has no full-size model."""
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for family, names in _families().items():
        full = [name for name in names if not model_entry(name).mini]
        if not full:
            chosen[family] = (names[0], dict(FRAME_OVERRIDES))
            continue
        rank = {f"{family}_{word}": index for index, word in enumerate(SIZE_WORDS)}
        chosen[family] = (min(full, key=lambda n: (rank.get(n, len(rank)), n)), {})
    return chosen


def build_model(name: str, overrides: dict[str, Any]) -> tuple[nn.Module, str]:
    """The registered model (seeded) and its display name: ``name*`` when rebuilt in Swin-T's
    frame (the frame is dropped if the model's config refuses it)."""
    torch.manual_seed(0)
    if overrides:
        try:
            return create_model(name, **overrides), f"{name}*"
        except (TypeError, ValueError):
            pass
    return create_model(name), name


def stage_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """Blocks per stage: ``model.stages[i]`` (hierarchical) or ``[model.blocks]`` (isotropic)."""
    if hasattr(model, "stages"):
        return [list(stage.blocks) for stage in model.stages]  # type: ignore[union-attr]
    if hasattr(model, "blocks"):
        return [list(model.blocks)]  # type: ignore[arg-type]
    return []


def _stage_cases(
    name: str, family: str, stage: int, blocks: Sequence[nn.Module], keys: set[str] | None
) -> list[Case]:
    """The distinct mixers of one stage's blocks whose name is in ``keys`` (all if ``None``)."""
    cases: list[Case] = []
    seen: set[str] = set()
    for index, block in enumerate(blocks):
        mixer = getattr(block, "mixer", None)
        if not isinstance(mixer, TokenMixer) or repr(mixer) in seen:
            continue
        seen.add(repr(mixer))
        label = mixer_label(mixer)
        if keys is not None and not {label.lower(), type(mixer).__name__.lower()} & keys:
            continue
        cases.append(Case(f"{name} s{stage}.b{index} {label}", family, name, stage, index,
                          label, mixer.dim, mixer, block))
    return cases


def extra_cases(families: Sequence[str], keys: set[str] | None) -> list[Case]:
    """Mixers alone at C = 96, 3 heads (seeded, default init): ``C96 MSA`` for ``deit``, ``C96
    SALG p=1`` and ``p=2`` (window 7) for ``salg``, when ``keys`` (lower-case names) allow."""
    built: list[tuple[str, str, str, TokenMixer]] = []
    if "deit" in families:
        torch.manual_seed(0)
        built.append(("deit", "C96 MSA", "C=96", FullAttention(96, 3)))
    if "salg" in families:
        for margin in (1, 2):
            torch.manual_seed(0)
            built.append(("salg", f"C96 SALG p={margin}", f"p={margin}",
                          SemanticRegionAttention(96, 3, window=7, margin=margin)))
    cases = []
    for family, name, variant, mixer in built:
        label = mixer_label(mixer)
        if keys is not None and not {label.lower(), type(mixer).__name__.lower()} & keys:
            continue
        cases.append(Case(name, family, "(mixer alone)", 1, 0, label, 96, mixer.eval(),
                          None, variant))
    return cases


def discover_cases(
    families: Sequence[str] | None = None,
    mixers: Sequence[str] | None = None,
    stages: Sequence[int] = (1,),
    extras: bool = False,
) -> list[Case]:
    """Cases for the chosen families (all by default), stages (1-based) and mixer names, and
    with ``extras`` the :func:`extra_cases` of those families (stage 1 only).

    ``mixers`` matches the short name (``W-MSA``, ``SW-MSA``, ``GG-MSA``, ...) or the class name,
    case-insensitively. Unknown families are a :class:`BenchError` naming the known ones.
    """
    canonical = canonical_models()
    wanted = list(families) if families else list(canonical)
    unknown = [f for f in wanted if f not in canonical]
    if unknown:
        raise BenchError(f"unknown --families {unknown}; registered: {sorted(canonical)}")
    keys = {m.lower() for m in mixers} if mixers else None
    cases: list[Case] = []
    for family in wanted:
        model, name = build_model(*canonical[family])
        model.eval()
        for stage, blocks in enumerate(stage_blocks(model), start=1):
            if stage in stages:
                cases.extend(_stage_cases(name, family, stage, blocks, keys))
    if extras and 1 in stages:
        cases.extend(extra_cases(wanted, keys))
    return cases
