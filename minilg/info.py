"""``python -m minilg info``: every registered model, our params and MACs beside the papers'."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from minilg.complexity import model_macs
from minilg.errors import MinilgError
from minilg.models.base import ModelBase
from minilg.reference import PaperRow, paper_row
from minilg.registry import create_model, list_models, model_entry

__all__ = ["ModelFigures", "add_arguments", "breakdown_notes", "info_table", "model_figures",
           "run"]


@dataclass(frozen=True)
class ModelFigures:
    name: str
    family: str
    resolution: int
    params: int
    macs: int
    paper: PaperRow | None


def model_figures(name: str) -> ModelFigures:
    """Params and closed-form MACs of a registered model (built on the meta device: no memory)."""
    entry = model_entry(name)
    with torch.device("meta"):
        model = create_model(name)
    resolution = model.img_size if isinstance(model, ModelBase) else 224
    params = sum(p.numel() for p in model.parameters())
    paper = paper_row(entry.paper) if entry.paper else None
    macs = model_macs(model, resolution)
    return ModelFigures(name, entry.family, resolution, params, macs, paper)


def _relative(ours: float, theirs: float | None) -> str:
    return f"{100 * (ours - theirs) / theirs:+.1f}%" if theirs else "-"


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def info_table(names: list[str]) -> str:
    """A markdown table: ours vs published, one row per model."""
    header = (
        "| model | res | params (M) | GMACs | paper params (M) | paper GMACs | d params | "
        "d MACs | paper top-1 | source |"
    )
    lines = [header, "|" + "---|" * 10]
    for name in names:
        fig = model_figures(name)
        paper = fig.paper
        params_m, gmacs = fig.params / 1e6, fig.macs / 1e9
        gmacs_text = f"{gmacs:.3f}" if gmacs >= 0.1 else f"{gmacs:.4f}"
        lines.append(
            f"| {name} | {fig.resolution} | {params_m:.2f} | {gmacs_text} | "
            f"{_value(paper.params_m if paper else None)} | "
            f"{_value(paper.gmacs if paper else None)} | "
            f"{_relative(params_m, paper.params_m if paper else None)} | "
            f"{_relative(gmacs, paper.gmacs if paper else None)} | "
            f"{'-' if paper is None or paper.top1 is None else f'{paper.top1:.1f}'} | "
            f"{paper.source if paper else 'minilg'} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m minilg info [PATTERN]``."""
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter on names")


def run(args: argparse.Namespace) -> int:
    """Print the table of :func:`info_table` (a pattern matching nothing is an error)."""
    names = list_models(args.pattern)
    if not names:
        raise MinilgError(
            f"no registered model matches {args.pattern!r}; try '*mini*', or 'python -m minilg "
            "list' for every name"
        )
    print("MACs = multiply-accumulates of matmuls and convolutions (norms, softmax not counted),")
    print("for one image at the model's resolution; 'd' = ours relative to published.\n")
    print(info_table(names))
    notes = breakdown_notes(names)
    if notes:
        print("\nWithout the attention matmuls (the convention HAT-Net's published FLOPs follow):")
        print("\n".join(notes))
    return 0


def breakdown_notes(names: list[str]) -> list[str]:
    """One line per model whose ``macs_breakdown`` separates the attention matmuls (HAT-Net)."""
    lines = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name)
        breakdown = getattr(model, "macs_breakdown", None)
        if breakdown is None:
            continue
        parts = breakdown(getattr(model, "img_size", 224))
        without = parts.total - parts.attention
        lines.append(f"  {name}: {parts.total / 1e9:.3f} GMACs complete, {without / 1e9:.3f} "
                     f"without attention matmuls, {(without + parts.norm_elements) / 1e9:.3f} "
                     "with one MAC per normalised element")
    return lines
