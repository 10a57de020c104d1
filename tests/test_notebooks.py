"""The committed notebooks' outputs hold on any machine, and their figures are the ones drawn.

nbval compares the committed outputs with a fresh run on the user's machine. Two things it cannot
see are checked here: numbers at rounding level (they differ between CPUs, BLAS builds and
thread counts, so a user's run fails with nothing wrong) and figures stored without the
signature that lets nbval compare what a figure shows (minilg.notebook).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

from minilg.notebook import (
    EXEMPT_TAG,
    SIGNATURE_PREFIX,
    figure_signature,
    rounding_level_numbers,
    unsigned_figures,
)

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def load(path: Path) -> dict[str, Any]:
    notebook: dict[str, Any] = json.loads(path.read_text())
    return notebook


def code_cell(source: str, text: str, tags: list[str] | None = None) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": 1, "source": source,
            "metadata": {"tags": tags or []},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}


def figure_cell(text: str) -> dict[str, Any]:
    data = {"image/png": "iVBORw0KGgo=", "text/plain": text}
    return {"cell_type": "code", "execution_count": 2, "source": "plt.show()", "metadata": {},
            "outputs": [{"output_type": "display_data", "data": data, "metadata": {}}]}


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_print_no_rounding_level_number(path: Path) -> None:
    findings = rounding_level_numbers(load(path), path.name)
    assert not findings, "\n".join(map(str, findings))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_figures_carry_their_signature(path: Path) -> None:
    findings = unsigned_figures(load(path), path.name)
    assert not findings, "\n".join(map(str, findings))


def test_scan_names_notebook_and_cell_of_a_rounding_level_number() -> None:
    notebook = {"cells": [
        {"cell_type": "markdown", "source": "error 1e-16", "metadata": {}},
        code_cell("print(error)", "224 px: max |ours - official| = 2.4e-16\n"),
        code_cell("print(loss)", "loss 0.693147\n"),
        code_cell("print(ok)", "max |ours - official| < 10^-10: True\nloss 0.6931\n"),
    ]}
    findings = rounding_level_numbers(notebook, "04.ipynb")
    assert [(f.notebook, f.cell, f.code_cell) for f in findings] == [
        ("04.ipynb", 1, 0), ("04.ipynb", 2, 1)]
    assert "2.4e-16" in str(findings[0]) and "0.693147" in str(findings[1])
    assert "cell [1] (nbval Cell 0)" in str(findings[0])


@pytest.mark.parametrize("text", ["1e-06", "3.0E-7", "2.2e-16", "1e-100", "12.345678"])
def test_scan_catches(text: str) -> None:
    notebook = {"cells": [code_cell("print(x)", f"x = {text}\n")]}
    assert len(rounding_level_numbers(notebook, "nb")) == 1


@pytest.mark.parametrize("text", ["1e-05", "0.1234", "1e-5", "v1.2.3", "2026-11-30", "12345"])
def test_scan_leaves_alone(text: str) -> None:
    notebook = {"cells": [code_cell("print(x)", f"x = {text}\n")]}
    assert rounding_level_numbers(notebook, "nb") == []


def test_scan_skips_outputs_nbval_does_not_compare_and_tagged_constants() -> None:
    text = "eps=1e-06\n"
    notebook = {"cells": [
        code_cell("# NBVAL_IGNORE_OUTPUT\nprint(t)", text),
        code_cell("print(t)", text, tags=["nbval-ignore-output"]),
        code_cell("print(t)", text, tags=["nbval-skip"]),
        code_cell("print(model)", text, tags=[EXEMPT_TAG]),
    ]}
    assert rounding_level_numbers(notebook, "nb") == []


def test_a_figure_without_signature_is_named() -> None:
    notebook = {"cells": [figure_cell("<Figure size 560x360 with 1 Axes>"),
                          figure_cell(f"{SIGNATURE_PREFIX}: 1 axes ...>")]}
    findings = unsigned_figures(notebook, "04.ipynb")
    assert [(f.cell, f.code_cell) for f in findings] == [(0, 0)]


def curves(names: list[str]) -> str:
    fig, ax = plt.subplots()
    for i, name in enumerate(names):
        ax.loglog([1, 2, 3], [i + 1, i + 2, i + 4], marker="o", label=name)
    ax.set_xlabel("map side h")
    ax.set_title("Cost against resolution")
    ax.legend()
    signature = figure_signature(fig)
    plt.close(fig)
    return signature


def test_signature_sees_an_added_curve() -> None:
    """04 [13] on a6bbf9e: four curves stored, five drawn; the PNG alone cannot tell nbval."""
    four = ["full MSA", "W-MSA, M = 7", "H-MHSA, G1 = 8, G2 = 8", "H-MHSA, pooled 7x7"]
    stored, drawn = curves(four), curves([*four, "Focal, s_p = 7, 2 levels"])
    assert stored != drawn
    assert "4 lines" in stored and "5 lines" in drawn and "'Focal, s_p = 7, 2 levels'" in drawn
    assert stored == curves(four)  # and is the same for the same figure
    assert stored.startswith(SIGNATURE_PREFIX) and "title 'Cost against resolution'" in stored


def test_signature_sees_labels_and_axes() -> None:
    fig, (left, right) = plt.subplots(1, 2)
    left.imshow([[0.0, 1.0]])
    right.bar(["a", "b"], [1, 2])
    right.set_ylabel("ms")
    fig.suptitle("two panels")
    signature = figure_signature(fig)
    plt.close(fig)
    assert "2 axes, suptitle 'two panels'" in signature
    assert "1 images" in signature and "2 patches" in signature and "y 'ms'" in signature
