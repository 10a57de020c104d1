"""Published figures (params, GMACs, top-1) from the four papers' tables and their baselines.

The table ships inside the package (``minilg/paper_tables.csv``, read with
:mod:`importlib.resources`, so any install has it); each row names the table it comes from.
``python -m minilg info`` prints minilg's own counts beside these.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

TABLE_PATH: Traversable = files("minilg") / "paper_tables.csv"


@dataclass(frozen=True)
class PaperRow:
    paper_key: str
    minilg_model: str | None
    params_m: float | None
    gmacs: float | None
    top1: float | None
    resolution: int
    source: str
    note: str


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


def paper_rows(path: Traversable | Path = TABLE_PATH) -> list[PaperRow]:
    """All rows of the reference table."""
    if not path.is_file():
        raise FileNotFoundError(
            f"reference table not found at {path}; it ships inside the minilg package, so this "
            "install is incomplete: reinstall minilg"
        )
    return [
        PaperRow(
            paper_key=row["paper_key"],
            minilg_model=row["minilg_model"] or None,
            params_m=_number(row["params_m"]),
            gmacs=_number(row["gmacs"]),
            top1=_number(row["top1"]),
            resolution=int(row["resolution"]),
            source=row["source"],
            note=row["note"],
        )
        for row in csv.DictReader(io.StringIO(path.read_text()))
    ]


def paper_row(paper_key: str) -> PaperRow | None:
    """The row for ``paper_key`` (e.g. ``"Swin-T"``), or None."""
    return next((row for row in paper_rows() if row.paper_key == paper_key), None)


def rounding_tolerance(published: float) -> float:
    """Half a unit of the last printed digit of ``published`` (1.3 -> 0.05, 28 -> 0.5)."""
    text = repr(published)
    decimals = len(text.split(".")[1]) if "." in text and not text.endswith(".0") else 0
    return 0.5 * math.pow(10, -decimals)


def matches_published(ours: float, published: float, rel_tol: float) -> bool:
    """True when ``ours`` is within ``rel_tol`` of ``published`` or within its rounding."""
    return abs(ours - published) <= max(rel_tol * published, rounding_tolerance(published))
