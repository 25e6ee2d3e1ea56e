"""One look for every figure: column-width sizes, readable fonts, PNG + PDF side by side.

Example:
  >>> import tempfile, pathlib
  >>> fig, ax = new_figure(1, 1)
  >>> _ = ax.plot([0, 1], [0, 1], label="ours")
  >>> [p.suffix for p in save(fig, pathlib.Path(tempfile.mkdtemp()) / "demo")]
  ['.png', '.pdf']
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

COLUMN_WIDTH_IN = 3.4  # one column of a two-column paper (EMNLP: 3.3 in)
PAGE_WIDTH_IN = 7.0
PAPER_STYLE = {"linestyle": "--", "color": "0.35", "linewidth": 1.0}  # the paper's curves

_RC = {
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "legend.fontsize": 6,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "lines.linewidth": 1.1,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "legend.frameon": False,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,  # ax.grid(True): a light grid
}


def new_figure(
    rows: int, cols: int, width: float | None = None, height_per_row: float = 1.9, **kwargs
):
  """(fig, axes) at column width for one column of panels, page width for two or more."""
  plt.rcParams.update(_RC)
  if width is None:
    width = COLUMN_WIDTH_IN if cols == 1 else PAGE_WIDTH_IN
  return plt.subplots(rows, cols, figsize=(width, height_per_row * rows), **kwargs)


def colors(n: int, cmap: str = "tab10") -> list:
  """``n`` colours: tab10 cycled, or evenly spaced along a sequential map (e.g. "viridis")."""
  cm = matplotlib.colormaps[cmap]
  if cmap == "tab10":
    return [cm(i % 10) for i in range(n)]
  return [cm(v) for v in np.linspace(0.05, 0.85, max(n, 1))][:n]


def save(fig, stem: Path) -> list[Path]:
  """Writes ``stem.png`` (200 dpi) and ``stem.pdf``; closes the figure."""
  stem = Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
  fig.savefig(paths[0], dpi=200)
  fig.savefig(paths[1])
  plt.close(fig)
  return paths


def band(ax, x, ys, color, label=None, fmt: str = "-", alpha: float = 0.2, **kwargs):
  """Several runs' curves as their mean (a line) and min-max (a band), cut to the shortest
  run; missing values (NaN) are left out of both."""
  n = min(len(y) for y in ys)
  a = np.asarray([np.asarray(y, np.float64)[:n] for y in ys])
  x = np.asarray(x)[:n]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a point missing in every run
    ax.plot(x, np.nanmean(a, 0), fmt, color=color, label=label, **kwargs)
    if len(ys) > 1:
      ax.fill_between(x, np.nanmin(a, 0), np.nanmax(a, 0), color=color, alpha=alpha, linewidth=0)
