"""fig1_ratio's plot: (a) RMS(u) over training, (b) its late distribution with the hook's r,
(c) RMS(u)^2 against scale per tensor, (d) the late scale ratio, (e) RMS(u) per tensor kind,
(f) the scale ratio over training; one colour per variant."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from normgrowth_jax.figures import plotting

if TYPE_CHECKING:
  from normgrowth_jax.figures.fig1_ratio import Fig1RatioConfig


def log_binned(steps: np.ndarray, values: np.ndarray, bins: int = 40) -> tuple:
  """(bin centres, median, 25%, 75%) of ``values`` [tensors, steps] over every tensor and step
  of each of ``bins`` log-spaced step bins (empty bins dropped).

  Example:
    >>> c, med, lo, hi = log_binned(np.arange(1, 101), np.ones((2, 100)), bins=4)
    >>> len(c), float(med[0])
    (4, 1.0)
  """
  edges = np.geomspace(max(steps[0], 1), steps[-1] + 1, bins + 1)
  idx = np.searchsorted(edges, np.maximum(steps, 1), side="right") - 1
  out = [
      (np.sqrt(edges[b] * edges[b + 1]), *np.quantile(values[:, idx == b], (0.5, 0.25, 0.75)))
      for b in range(bins)
      if np.any(idx == b)
  ]
  return tuple(np.asarray(a) for a in zip(*out))


def _late_boxes(ax, cfg, measures, field, colors, marks=None):
  """Horizontal boxes (5-95%) of ``field`` over every tensor and late record, one per variant."""
  data = [np.concatenate([x[field] for x in m["tensors"].values()]) for m in measures]
  pos = np.arange(len(data))[::-1]
  box = ax.boxplot(
      [np.maximum(d, 1e-6) for d in data],
      positions=pos,
      vert=False,
      whis=(5, 95),
      showfliers=False,
      widths=0.6,
      patch_artist=True,
      medianprops={"color": "k", "linewidth": 0.8},
  )
  for patch, c in zip(box["boxes"], colors):
    patch.set(facecolor=c, alpha=0.45, linewidth=0.5)
  if marks is not None:
    ax.scatter(marks, pos, marker="D", s=10, color="k", zorder=3)
  ax.set_xscale("log")
  ax.set_yticks(pos, [v.label.split(" (")[0] for v in cfg.variants])
  ax.axvline(1.0, **plotting.PAPER_STYLE)
  ax.grid(axis="x", alpha=0.3, linewidth=0.5)


def _binned_over_training(ax, cfg, measures, field, colors, legend):
  """Per variant, the median of ``field`` over its tensors in log-spaced step bins; the 25-75%
  band for the reference and the clipped run."""
  for k, (v, m, col) in enumerate(zip(cfg.variants, measures, colors)):
    centre, med, lo, hi = log_binned(m["steps"], m[field])
    ax.plot(
        centre / v.run.warmup_steps,
        med,
        color=col,
        linewidth=0.9,
        label=v.label if legend else None,
    )
    if k in (0, 3 if len(measures) > 3 else 0):  # the reference and the clipped run
      ax.fill_between(
          centre / v.run.warmup_steps,
          lo,
          hi,
          color=col,
          alpha=0.15,
          linewidth=0,
          label="25-75% of tensor-steps" if (legend and k == 0) else None,
      )


def _training_axes(ax, cfg):
  ax.set(xscale="log", yscale="log", xlabel="step t / W")
  ax.axvline(cfg.late, color="0.6", linewidth=0.5, linestyle=":")
  ax.grid(True)


def _rms_panel(ax, cfg, measures, colors):
  """(a) RMS(u) over training."""
  _binned_over_training(ax, cfg, measures, "rms_u_all", colors, legend=True)
  ax.axhline(1.0, **plotting.PAPER_STYLE, label="clipping binds above (paper: r = 1)")
  _training_axes(ax, cfg)
  ax.set(ylabel="RMS(u), median of tensor-steps", title="(a) RMS(u) over training")


def _scale_panel(ax, cfg, measures, colors):
  """(f) the scale ratio over training."""
  _binned_over_training(ax, cfg, measures, "scale_all", colors, legend=False)
  _training_axes(ax, cfg)
  ax.axhline(1.0, **plotting.PAPER_STYLE)
  ax.set(
      ylabel="scale, median of tensor-steps", title="(f) scale = mean g² / mean v̂ over training"
  )


def _per_tensor_panel(ax, measures, colors):
  """(c) per tensor, the late medians of RMS(u)² against scale."""
  for m, col in zip(measures, colors):
    xs = [np.median(x["scale"]) for x in m["tensors"].values()]
    ys = [np.median(np.square(x["rms_u"])) for x in m["tensors"].values()]
    ax.scatter(xs, ys, s=4, color=col, alpha=0.7, linewidths=0)
  lo = min(min(np.median(x["scale"]) for x in m["tensors"].values()) for m in measures)
  span = np.geomspace(max(lo, 1e-6), 10, 10)
  ax.plot(span, span, **plotting.PAPER_STYLE, label="RMS(u)² = scale (shape 1)")
  ax.set(
      xscale="log",
      yscale="log",
      xlabel="scale, median past 4 W (per tensor)",
      ylabel="RMS(u)², median past 4 W",
      title="(c) per tensor: scale sets RMS(u)",
  )
  ax.legend(loc="upper left", fontsize=5.5)
  ax.grid(True)


def _kind_panel(ax, cfg, measures, colors, kinds):
  """(e) the late median RMS(u) per tensor kind, one dot per variant."""
  offsets = np.linspace(-0.3, 0.3, len(measures))
  for m, col, off in zip(measures, colors, offsets):
    meds = [
        np.median(
            np.concatenate(
                [x["rms_u"] for x in m["tensors"].values() if x["kind"] == k]
                or [np.full(1, np.nan)]
            )
        )
        for k in kinds
    ]
    ax.scatter(meds, np.arange(len(kinds))[::-1] + off, s=7, color=col, linewidths=0)
  ax.set_yticks(np.arange(len(kinds))[::-1], kinds)
  ax.axvline(1.0, **plotting.PAPER_STYLE)
  ax.set(xscale="log", xlabel=f"RMS(u), median past {cfg.late:g} W", title="(e) by tensor kind")
  ax.grid(axis="x", alpha=0.3, linewidth=0.5)


def plot(stem, cfg: Fig1RatioConfig, measures: list[dict], kinds: tuple) -> list:
  """The six panels; ``kinds`` orders panel (e)'s tensor kinds."""
  fig, axes = plotting.new_figure(2, 3, height_per_row=2.3)
  (a, b, c), (d, e, f) = axes
  colors = plotting.colors(len(cfg.variants))
  _rms_panel(a, cfg, measures, colors)
  _late_boxes(b, cfg, measures, "rms_u", colors, marks=[m["r_hook"] for m in measures])
  b.set(
      xlabel=f"RMS(u) of a tensor-step past {cfg.late:g} W",
      title="(b) RMS(u) (boxes 5-95%; ◆ the hook's r)",
  )
  _per_tensor_panel(c, measures, colors)
  _late_boxes(d, cfg, measures, "scale", colors)
  d.set(
      xlabel=f"scale of a tensor-step past {cfg.late:g} W",
      title="(d) scale: g² now / Adafactor's v̂",
  )
  _kind_panel(e, cfg, measures, colors, kinds)
  _scale_panel(f, cfg, measures, colors)
  handles, labels = a.get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.0))
  run = cfg.variants[0].run
  fig.suptitle(
      f"T5's Adafactor, per tensor: u = g / sqrt(v̂), clipped at RMS 1 (r = min(RMS(u), "
      f"1)); T5.1.1 from emb {run.emb_dim}, {run.num_encoder_layers}+"
      f"{run.num_decoder_layers} layers, batch {run.batch_size}, W = "
      f"{run.warmup_steps}, T = 52.4 W; one factor changed per variant; seed "
      f"{run.seeds[0]}",
      fontsize=7,
      y=1.01,
  )
  fig.tight_layout()
  return plotting.save(fig, stem)
