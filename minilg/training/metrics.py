"""Metric files written during training: ``metrics.csv``, ``metrics.json`` and ``curves.png``."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from minilg.io import atomic_write_bytes, atomic_write_text, write_json

METRIC_FIELDS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "epoch_time_s",
    "train_images_per_s",
)


def write_metrics(
    run_dir: str | Path, history: Sequence[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """One CSV row per epoch plus a JSON file with the same rows and ``extra`` (config, sizes)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_FIELDS})
    d = Path(run_dir)
    atomic_write_text(d / "metrics.csv", buf.getvalue())
    write_json(d / "metrics.json", {**extra, "history": list(history)})


def plot_curves(
    history: Sequence[dict[str, Any]],
    path: str | Path | None = None,
    title: str = "",
    fig: Figure | None = None,
    chance: float | None = None,
) -> Figure:
    """Loss and top-1 per epoch (train and validation); saves a PNG if ``path`` is given.

    Without ``fig`` the figure is built without pyplot (no GUI backend, safe in any process);
    in a notebook pass ``fig=plt.figure(figsize=(9, 3.4))`` and finish with ``plt.show()``.
    ``chance`` (top-1 in %, e.g. ``100 / num_classes``) adds a dashed reference line.
    """
    if fig is None:
        fig = Figure(figsize=(9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [r["train_top1"] for r in history], "o-", label="train")
    val = [r for r in history if r.get("val_loss") is not None]
    if val:
        ax_loss.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], "s-", label="val")
        ax_acc.plot([r["epoch"] for r in val], [r["val_top1"] for r in val], "s-", label="val")
    if chance is not None:
        ax_acc.axhline(chance, ls="--", c="gray", lw=1, label="chance")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic_write_bytes(path, buf.getvalue())
    return fig
