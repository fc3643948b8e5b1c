"""PNG figures for the analyses (matplotlib, Agg backend: no display needed).

Matplotlib is imported inside the functions so that importing :mod:`rocket_vla.analysis`
needs only torch; plotting needs the ``[analysis]`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rocket_vla.errors import RocketError

Matrix = Sequence[Sequence[float | None]]


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - part of the [analysis] extra
        raise RocketError(
            "plots need matplotlib; install it with `pip install rocket-vla[analysis]`."
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _array(matrix: Matrix):
    import numpy as np

    return np.array([[np.nan if v is None else float(v) for v in row] for row in matrix])


def _heatmap(ax, data, row_labels, col_labels, vmin, vmax, cmap, annotate: bool,
             origin: str = "lower"):
    """Layer maps grow upward (origin lower); square pair matrices read like matrices."""
    image = ax.imshow(data, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto", origin=origin)
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels], fontsize=7)
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels], fontsize=7)
    if annotate:
        finite = data[data == data]
        # a flat map would print one repeated number: show a digit more when it is flat
        digits = 3 if finite.size and float(finite.max() - finite.min()) < 0.05 else 2
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if data[i, j] == data[i, j]:
                    ax.text(j, i, f"{data[i, j]:.{digits}f}", ha="center", va="center",
                            fontsize=6)
    return image


def plot_matrix(
    matrix: Matrix,
    path: str | Path,
    *,
    row_labels: Sequence[object],
    col_labels: Sequence[object],
    title: str,
    xlabel: str,
    ylabel: str,
    pairs: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    annotate: bool | None = None,
) -> Path:
    """One heatmap; ``pairs`` marks cells ``(row, col)`` per named pairing (e.g. Hungarian)."""
    plt = _pyplot()
    data = _array(matrix)
    annotate = data.size <= 144 if annotate is None else annotate
    fig, ax = plt.subplots(figsize=(1.2 + 0.32 * data.shape[1], 1.0 + 0.3 * data.shape[0]))
    image = _heatmap(ax, data, row_labels, col_labels, vmin, vmax, cmap, annotate)
    markers = ("o", "x", "s", "+")
    for (name, cells), marker in zip((pairs or {}).items(), markers, strict=False):
        if cells:
            rows, cols = zip(*cells, strict=True)
            style = (dict(facecolors="none", edgecolors="red") if marker in "os"
                     else dict(color="red"))
            ax.scatter(cols, rows, marker=marker, s=60, linewidths=1.4, label=name, **style)
    if pairs:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(pairs), fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, plt, path)


def plot_matrices(
    matrices: Mapping[str, Matrix],
    path: str | Path,
    *,
    labels: Sequence[object],
    title: str,
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "RdBu_r",
) -> Path:
    """Side-by-side square heatmaps sharing one colour scale (e.g. naive vs shared vs ROCKET)."""
    plt = _pyplot()
    n = len(matrices)
    if n == 0:
        raise RocketError("nothing to plot; give at least one matrix.")
    size = 1.5 + 0.35 * len(labels)
    fig, axes = plt.subplots(1, n, figsize=(size * n + 1.0, size), squeeze=False)
    image = None
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        data = _array(matrix)
        image = _heatmap(ax, data, labels, labels, vmin, vmax, cmap, data.size <= 144, "upper")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.046 / n * 2)
    return _save(fig, plt, path)


def plot_curves(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """Line plot of named series over a shared x axis (None = gap)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for name, ys in series.items():
        ax.plot(list(x), [float("nan") if v is None else v for v in ys], marker="o", ms=3,
                label=name)
    xs = list(x)
    if xs and all(float(v).is_integer() for v in xs) and len(xs) <= 40:
        ax.set_xticks(xs)  # layer indices and steps are integers: no 0.5 ticks
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
