"""PNG plots shared by every project (matplotlib, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Render to files; training machines have no display.

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from shared.saving import atomic_path  # noqa: E402

# Logged per epoch for the record, but not learning curves.
_NOT_CURVES = {
    "epoch",
    "epoch_seconds",
    "validation_seconds",
    "examples_per_second",
    "learning_rate",
}


def save_figure(figure: plt.Figure, path: str | os.PathLike, tight: bool = True) -> Path:
    """Save ``figure`` as a PNG, atomically (temporary file + rename), and close it.

    Args:
        figure: The figure.
        path: Destination ``.png``.
        tight: Fit the subplots with a tight layout, unless the figure has its own
            layout engine; False when the axes were placed by hand.

    Returns:
        The path written.
    """
    path = Path(path)
    if tight and figure.get_layout_engine() is None:
        figure.tight_layout()
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=120, format="png")
    finally:
        plt.close(figure)
    return path


def plot_history(history_csv: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Plot every metric in ``history.csv`` against epochs, training beside validation.

    Args:
        history_csv: The run's ``history.csv``.
        path: Destination ``.png``.

    Returns:
        The path written.
    """
    frame = pd.read_csv(history_csv)
    names = [
        column
        for column in frame.columns
        if column not in _NOT_CURVES and not column.startswith("val_")
    ]
    columns = max(len(names), 1)
    figure, axes = plt.subplots(1, columns, figsize=(4.5 * columns, 3.5), squeeze=False)
    epochs = frame["epoch"] + 1
    # Markers, so that a run of one epoch still shows its point.
    style = {"marker": "o", "markersize": 4 if len(frame) <= 30 else 0}
    for axis, name in zip(axes[0], names, strict=False):  # no names: one empty panel
        axis.plot(epochs, frame[name], label="train", **style)
        validation = f"val_{name}"
        if validation in frame and pd.to_numeric(frame[validation], errors="coerce").notna().any():
            axis.plot(
                epochs,
                pd.to_numeric(frame[validation], errors="coerce"),
                label="validation",
                **style,
            )
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    return save_figure(figure, path)
