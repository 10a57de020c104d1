"""Notebook tooling: figure signatures (staleness) and the rounding-level scan (portability).

Two checks keep the committed notebooks honest, because nbval compares text but not images:

* **Figure signatures.** Loaded as an IPython extension (``%load_ext minilg.notebook``, or by
  the kernel configuration that ``make notebooks`` and ``notebooks/conftest.py`` install), this
  module makes the plain-text form of every matplotlib figure a *signature*: per axes, the title,
  axis labels, legend entries and how many lines, collections, patches, images and texts it
  holds. The signature is stored beside the picture when the notebook is executed, and nbval
  compares it with the one its fresh run draws: a committed figure that the code no longer
  draws (a curve added, a label renamed) fails CI at that cell.
* **Rounding-level numbers.** :func:`rounding_level_numbers` lists every output that nbval
  compares and that prints a number at rounding level (e-notation with exponent -6 or below, or
  a float with more decimals than ``notebooks/nbval_sanitize.cfg`` keeps): such a number differs
  between CPUs, BLAS builds and thread counts. Print the claim it supports instead. A cell
  tagged ``deterministic-numbers`` (a constant such as ``eps=1e-06``, or a figure read from a
  committed file) is exempt.

``python -m minilg.notebook scan NOTEBOOK...`` prints both kinds of finding and exits 1 if any;
``python -m minilg.notebook kernel-dir PATH`` writes an ``IPYTHONDIR`` whose kernels load this.
This module imports matplotlib only inside the functions that need it, and IPython never.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTENSION = "minilg.notebook"
EXEMPT_TAG = "deterministic-numbers"
SIGNATURE_PREFIX = "<Figure signature"
KERNEL_CONFIG = f'c.InteractiveShellApp.extensions = ["{EXTENSION}"]\n'

# e-notation at 1e-6 or below, or a float with 5+ decimals (the sanitizer keeps 4).
ROUNDING_LEVEL = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?[eE]-0*(?:[6-9]|[1-9]\d+)\b|(?<![\w.])\d+\.\d{5,}\b")
_IGNORED_TAGS = {"nbval-ignore-output", "nbval-skip", "nbval-raises-exception"}
_IGNORED_MARKERS = ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP", "NBVAL_RAISES_EXCEPTION")


# --------------------------------------------------------------------------- figure signatures

def _axes_signature(index: int, ax: Any) -> str:
    legend = ax.get_legend()
    entries = [text.get_text() for text in legend.get_texts()] if legend is not None else []
    counts = (f"{len(ax.lines)} lines, {len(ax.collections)} collections, "
              f"{len(ax.patches)} patches, {len(ax.images)} images, {len(ax.texts)} texts")
    return (f"  axes {index}: title {ax.get_title()!r}, x {ax.get_xlabel()!r}, "
            f"y {ax.get_ylabel()!r}, legend {entries}, {counts}")


def figure_signature(fig: Any) -> str:
    """What a figure shows, as text: per axes its labels, legend entries and artist counts."""
    title = fig.get_suptitle()
    legends = [[text.get_text() for text in legend.get_texts()] for legend in fig.legends]
    head = f"{SIGNATURE_PREFIX}: {len(fig.axes)} axes, suptitle {title!r}, legends {legends}"
    return "\n".join([head, *(_axes_signature(i, ax) for i, ax in enumerate(fig.axes))]) + ">"


def _pretty_signature(fig: Any, printer: Any, cycle: bool) -> None:
    printer.text(figure_signature(fig))


def load_ipython_extension(ipython: Any) -> None:
    """IPython hook: a figure's plain-text form (stored beside its picture) is its signature.

    It is set as ``Figure._repr_pretty_`` rather than registered with the text formatter,
    because the inline backend removes every formatter registered for ``Figure`` when it starts.
    """
    from matplotlib.figure import Figure

    setattr(Figure, "_repr_pretty_", _pretty_signature)  # noqa: B010 (mypy: not in the stubs)


def kernel_ipython_dir(path: Path) -> Path:
    """Write an IPython directory at ``path`` whose kernels load this extension; return it.

    Point ``IPYTHONDIR`` at it before starting a kernel (nbval, nbconvert).
    """
    profile = path / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    return path


# --------------------------------------------------------------------------- scans

@dataclass(frozen=True)
class Finding:
    notebook: str
    cell: int  # index in the notebook's cells (Jupyter's [n] in the file, markdown included)
    code_cell: int  # index among code cells (nbval's "Cell n")
    text: str

    def __str__(self) -> str:
        return f"{self.notebook}: cell [{self.cell}] (nbval Cell {self.code_cell}): {self.text}"


def _compared_outputs(notebook: dict[str, Any]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(cell index, code-cell index, output) for every output strict nbval compares."""
    code_index = -1
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        code_index += 1
        source = "".join(cell.get("source", ""))
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & _IGNORED_TAGS or any(marker in source for marker in _IGNORED_MARKERS):
            continue
        for output in cell.get("outputs", []):
            yield index, code_index, output | {"tags": tags}


def _output_text(output: dict[str, Any]) -> str:
    data = output.get("data", {})
    return "".join(output.get("text", "")) + "".join(data.get("text/plain", ""))


def rounding_level_numbers(notebook: dict[str, Any], name: str) -> list[Finding]:
    """Compared outputs that print a rounding-level number (cells tagged EXEMPT_TAG excepted)."""
    findings = []
    for index, code_index, output in _compared_outputs(notebook):
        if EXEMPT_TAG in output["tags"]:
            continue
        for hit in ROUNDING_LEVEL.finditer(_output_text(output)):
            findings.append(Finding(name, index, code_index,
                                    f"prints {hit.group(0)}, a rounding-level number that "
                                    "differs between machines; print the claim it supports"))
    return findings


def unsigned_figures(notebook: dict[str, Any], name: str) -> list[Finding]:
    """Compared figure outputs stored without a signature (executed outside `make notebooks`)."""
    return [Finding(name, index, code_index,
                    "figure stored without its signature; re-execute with `make notebooks`")
            for index, code_index, output in _compared_outputs(notebook)
            if any(key.startswith("image/") for key in output.get("data", {}))
            and not _output_text(output).startswith(SIGNATURE_PREFIX)]


USAGE = ("usage: python -m minilg.notebook scan NOTEBOOK...    (findings; exit 1 if any)\n"
         "       python -m minilg.notebook kernel-dir PATH     (an IPYTHONDIR that loads this)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m minilg.notebook {scan NOTEBOOK... | kernel-dir PATH}``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "kernel-dir":
        kernel_ipython_dir(Path(args[1]))
        return 0
    if len(args) < 2 or args[0] != "scan":
        print(USAGE, file=sys.stderr)
        return 2
    findings = []
    for path in args[1:]:
        notebook = json.loads(Path(path).read_text())
        findings += rounding_level_numbers(notebook, path) + unsigned_figures(notebook, path)
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
