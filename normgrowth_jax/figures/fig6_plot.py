"""Fig. 6's plot: one row of panels per setting (ours first, then the original's).

Per row: heat maps of ||theta_T|| - ||theta_0|| and of ||theta_T|| / ||theta_0|| over the
lr x wd grid on log axes, with the zero contour, a triangle at PyTorch's defaults, the
per-lr threshold and the paper's 1e-3..1e-2; then ||theta_t|| / ||theta_0|| along training at
lr 1e-3 for every weight decay (the hook's per-cell traces).
"""

from __future__ import annotations

import math

import numpy as np

from normgrowth_jax import grid
from normgrowth_jax.figures import paper, plotting
from normgrowth_jax.figures.grid_runs import (
    DEFAULT_LR,
    DEFAULT_WD,
    NORM_NAMES,
    describe,
    lrs,
    wds,
)


def _edges(values: np.ndarray) -> np.ndarray:
  """Cell edges on a log axis: geometric midpoints, extended by half a step at the ends."""
  x = np.log10(values)
  step = np.diff(x).mean() if len(x) > 1 else 1.0
  mids = (x[1:] + x[:-1]) / 2
  return 10.0 ** np.concatenate([[x[0] - step / 2], mids, [x[-1] + step / 2]])


def _color_norm(z, kind):
  """Symmetric colour scales around "no change": symlog for the difference, log for the ratio."""
  from matplotlib import colors  # pylint: disable=g-import-not-at-top

  finite = z[np.isfinite(z)]
  if kind == "delta":
    m = float(np.max(np.abs(finite))) if finite.size else 1.0
    m = m or 1.0
    lin = max(m * 1e-3, float(np.min(np.abs(finite[finite != 0]))) if np.any(finite) else m)
    return colors.SymLogNorm(linthresh=min(lin, m / 10), vmin=-m, vmax=m, base=10)
  lo = float(np.min(finite)) if finite.size else 0.5
  hi = float(np.max(finite)) if finite.size else 2.0
  r = max(abs(math.log10(lo)), abs(math.log10(hi)), 1e-4)
  return colors.LogNorm(vmin=10**-r, vmax=10**r)


def _heat(ax, fig, x, y, z, diverged, kind, ths, label):
  """One heat map over the grid: the cells, the zero contour, diverged cells, the paper's
  threshold band, the per-lr thresholds and PyTorch's default cell."""
  norm = _color_norm(z, kind)
  mesh = ax.pcolormesh(
      _edges(x), _edges(y), np.ma.masked_invalid(z), cmap="RdBu_r", norm=norm, shading="flat"
  )
  bar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.03)
  bar.set_label(label)
  bar.ax.tick_params(labelsize=5.5)
  if np.any(diverged):
    gx, gy = np.meshgrid(x, y)
    ax.plot(gx[diverged], gy[diverged], "x", color="0.3", markersize=4, label="diverged (NaN)")
  sign = np.where(np.isfinite(z), np.sign(z if kind == "delta" else np.log(z)), np.nan)
  if len(x) > 1 and len(y) > 1 and np.nanmin(sign) < 0 < np.nanmax(sign):
    ax.contour(
        x,
        y,
        np.ma.masked_invalid(z if kind == "delta" else np.log(z)),
        levels=[0.0],
        colors="k",
        linewidths=1.0,
    )
  ax.plot([], [], "k-", linewidth=1.0, label="zero contour (growth | shrinkage)")
  _thresholds(ax, ths)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("learning rate η")
  ax.set_ylabel("weight decay λ")


def _thresholds(ax, ths):
  """The paper's threshold band, ours per learning rate, and PyTorch's default cell."""
  lo, hi = paper.FIG6["wd_threshold"]
  for k, level in enumerate((lo, hi)):
    ax.axhline(
        level,
        color="0.15",
        linestyle=(0, (4, 2)),
        linewidth=0.8,
        label=f"paper's threshold lies between {lo:g} and {hi:g}" if k == 0 else None,
    )
  tx = [t.lr for t in ths if t.kind == "crossing"]
  ty = [t.wd for t in ths if t.kind == "crossing"]
  ax.plot(
      tx,
      ty,
      "o",
      markerfacecolor="w",
      markeredgecolor="k",
      markersize=3.5,
      label="threshold per lr (interpolated)",
  )
  ax.plot(
      [DEFAULT_LR],
      [DEFAULT_WD],
      "^",
      color="gold",
      markeredgecolor="k",
      markersize=6,
      label="PyTorch defaults (1e-3, 1e-2)",
  )


def _plot_row(fig, axes, st):
  """One setting's three panels: delta and ratio heat maps, trajectories at lr 1e-3."""
  cfg, result, mats, ths = st["cfg"], st["result"], st["mats"], st["ths"]
  x, y = lrs(cfg), wds(cfg)
  head = f"{st['label']} ({st['verdict']}): " if st["label"] else ""
  _heat(axes[0], fig, x, y, mats["delta"], mats["diverged"], "delta", ths, "||θ_T|| − ||θ_0||")
  axes[0].set_title(head + "change of the encoder norm")
  _heat(
      axes[1],
      fig,
      x,
      y,
      mats["ratio"],
      mats["diverged"],
      "ratio",
      ths,
      "||θ_T|| / ||θ_0|| (log scale)",
  )
  axes[1].set_title("ratio ||θ_T|| / ||θ_0||")
  ax = axes[2]
  from matplotlib import cm, colors  # pylint: disable=g-import-not-at-top

  cnorm = colors.LogNorm(vmin=min(y), vmax=max(y))
  for b in y:
    k = grid.find_cell(result.lr, result.wd, DEFAULT_LR, b)
    if k is None:
      continue
    tr = result.traces[k]
    ax.plot(
        np.concatenate([[0], tr["step"]]),
        np.concatenate([[1.0], tr["param_norm"] / result.norm_init[k]]),
        color=cm.viridis(cnorm(b)),
        linewidth=0.8,
    )
  k = grid.find_cell(result.lr, result.wd, DEFAULT_LR, DEFAULT_WD)
  tr = result.traces[k]
  ax.plot(
      np.concatenate([[0], tr["step"]]),
      np.concatenate([[1.0], tr["param_norm"] / result.norm_init[k]]),
      "k--",
      linewidth=1.2,
      label="PyTorch defaults (wd 1e-2)",
  )
  ax.axhline(1.0, color="0.5", linewidth=0.6)
  sm = cm.ScalarMappable(norm=cnorm, cmap="viridis")
  bar = fig.colorbar(sm, ax=ax, fraction=0.05, pad=0.03)
  bar.set_label("weight decay λ")
  bar.ax.tick_params(labelsize=5.5)
  ax.set_xlabel("training step")
  ax.set_ylabel("||θ_t|| / ||θ_0||")
  ax.set_title(f"trajectories at lr {DEFAULT_LR:g} (hook, per cell)")


def plot(stem, settings) -> list:
  """One row of panels per setting (ours first)."""
  fig, axes = plotting.new_figure(len(settings), 3, height_per_row=2.3)
  axes = np.asarray(axes).reshape(len(settings), 3)
  for row, st in zip(axes, settings):
    _plot_row(fig, row, st)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  more, more_labels = axes[0, 2].get_legend_handles_labels()
  fig.legend(
      handles + more,
      labels + [f"right: {m}" for m in more_labels],
      loc="upper center",
      ncol=3,
      bbox_to_anchor=(0.5, -0.01),
  )
  cfg, info = settings[0]["cfg"], settings[0]["info"]
  rows = (
      ""
      if len(settings) == 1
      else "\n" + "\n".join(f"{st['label']}: {describe(st['cfg'])}" for st in settings)
  )
  fig.suptitle(
      f"{NORM_NAMES[cfg.norm]} small LM ({cfg.arch.num_layers} layers, d_model {cfg.arch.d_model}) on "
      f"{info['corpus']}, AdamW, {info['steps']} steps of {cfg.batch_size} sentences "
      f"({info['steps'] / info['epoch_steps']:.2g} epoch); {len(lrs(cfg))} x {len(wds(cfg))} "
      "grid, one compiled program" + rows,
      fontsize=7,
      y=1.03,
  )
  fig.tight_layout()
  return plotting.save(fig, stem)
