"""Fig. 5's plot: (a) alignment cos(delta, theta) between checkpoints and (b) per step, (c) the
step size ||delta|| between checkpoints and (d) per step, (e) the terms of the paper's eq. 2, and
Assumption 1's ratio; the paper's curves drawn for comparison."""

from __future__ import annotations

import numpy as np

from normgrowth_jax.figures import paper, plotting, t5_runs


def _grid_panel(ax, trs, key, color="black"):
  ends = trs[0].grid["step"][1:].astype(np.float64)
  v = t5_runs.stack([tr.grid[key] for tr in trs])
  x = ends[: v.shape[1]]
  ax.plot(
      x,
      t5_runs.nanmean0(v),
      color=color,
      marker=".",
      markersize=2,
      linewidth=0.9,
      label=f"ours, between checkpoints ({len(trs)} run{'s' if len(trs) > 1 else ''})",
  )
  if len(v) > 1:
    ax.fill_between(x, np.nanmin(v, 0), np.nanmax(v, 0), color=color, alpha=0.2, linewidth=0)


def _step_panel(ax, trs, values, label):
  for tr, c in zip(trs, plotting.colors(len(trs))):
    v = values(tr)
    if v is None:
      continue
    x, mu, lo, hi = t5_runs.smooth(tr.step, v)
    ax.plot(x, mu, color=c, linewidth=0.8, label=f"{tr.label}: {label}")
    ax.fill_between(x, lo, hi, color=c, alpha=0.15, linewidth=0)


def _eq2_panel(ax, trs, m):
  """(f) eq. 2: ||theta_t||^2 - ||theta_0||^2 split into its misaligned and aligned parts."""
  e0 = t5_runs.eq2_terms(trs[0])
  if e0 is not None:
    terms = [t5_runs.eq2_terms(tr) for tr in trs]
    n = min(len(t["step"]) for t in terms)
    x = e0["step"][:n]
    for key, color, label in (
        ("measured", "black", "measured ‖θ_t‖² − ‖θ_0‖²"),
        ("misaligned", "tab:blue", "misaligned part Σ‖δ_i‖²"),
        ("aligned", "tab:red", "aligned part 2Σ θ_i·δ_i"),
    ):
      v = np.asarray([t[key][:n] for t in terms])
      ax.plot(x, v.mean(0), color=color, linewidth=1.0, label=label)
      if len(v) > 1:
        ax.fill_between(x, v.min(0), v.max(0), color=color, alpha=0.15, linewidth=0)
    s = m["eq2"][0]
    ax.set_title("(f) eq. 2: where ‖θ‖² grows from")
    ax.set_ylabel("cumulative, squared norm units")
    ax.legend(
        loc="upper left",
        fontsize=4.6,
        title_fontsize=4.8,
        title=(
            f"misaligned part alone → ‖θ_T‖ ≈ "
            f"{np.mean([q['norm_misaligned_only'] for q in m['eq2']]):.1f}; measured "
            f"{np.mean([q['norm_T'] for q in m['eq2']]):.1f}" + ("" if s["exact"] else " (est.)")
        ),
    )
    ax.axhline(0.0, color="0.6", linewidth=0.5)
  else:
    ax.set_title("(f) eq. 2: ‖θ_0‖ unknown")


def _alignment_grid_panel(ax, trs):
  """(a) alignment between checkpoints, raw and its moving average, against the paper's."""
  grid = trs[0].grid["step"]
  interval = int(grid[1] - grid[0]) if len(grid) > 1 else 0
  if np.isfinite(trs[0].grid["alignment"]).any():
    _grid_panel(ax, trs, "alignment")
    sm = t5_runs.stack([t5_runs.moving_average(tr.grid["alignment"]) for tr in trs])
    ax.plot(
        grid[1 : sm.shape[1] + 1],
        t5_runs.nanmean0(sm),
        color="tab:red",
        linewidth=1.1,
        label=f"ours, {t5_runs.SMOOTH}-checkpoint moving average",
    )
  ax.axhline(
      paper.FIG5["alignment_peak"], **plotting.PAPER_STYLE, label="paper: peak ≈ 0.15, then ≈ 0"
  )
  ax.axhline(0.0, color="0.6", linewidth=0.5)
  lo, hi = ax.get_ylim()
  ax.set_ylim(lo, max(hi, 0.3))
  ax.legend(loc="upper center", fontsize=4.6)
  ax.set_title(f"(a) alignment between checkpoints ({interval} steps)")
  ax.set_ylabel("cos(θ_b − θ_a, θ_a)")


def _alignment_step_panel(ax, trs):
  """(b) alignment per step."""
  _step_panel(ax, trs, lambda tr: tr.alignment, "binned mean, 10-90%")
  ax.axhline(0.0, color="0.6", linewidth=0.5)
  ax.set_title("(b) alignment per step")
  ax.set_ylabel("cos(δ_t, θ_t)")


def _step_size_grid_panel(ax, trs):
  """(c) step size between checkpoints."""
  if np.isfinite(trs[0].grid["alignment"]).any():
    _grid_panel(ax, trs, "update_norm")
  ax.set_title("(c) step size between checkpoints")
  ax.set_ylabel("‖θ_b − θ_a‖")
  ax.plot(
      [],
      [],
      " ",
      label=f"paper: grows by < {paper.FIG5['step_size_growth_below']:g} " "(220M params)",
  )


def _step_size_step_panel(ax, trs):
  """(d) step size per step."""
  _step_panel(ax, trs, lambda tr: tr.update_norm, "binned mean, 10-90%")
  ax.set_title("(d) step size per step")
  ax.set_ylabel("‖δ_t‖")


def _assumption1_panel(ax, trs):
  """(e) Assumption 1: ||delta_t|| / (lr_t ||theta_t||), constant if it holds."""
  _step_panel(ax, trs, t5_runs.assumption1_ratio, "binned mean, 10-90%")
  ax.axhline(1.0, **plotting.PAPER_STYLE, label="constant (= 1: clipping active)")
  ax.set_ylim(0, 1.45)
  ax.legend(loc="upper center", fontsize=4.6, ncol=2)
  ax.set_title("(e) Assumption 1: ‖δ_t‖ ∝ lr_t ‖θ_t‖ ?")
  ax.set_ylabel("‖δ_t‖ / (lr_t ‖θ_t‖)")


def plot(stem, cfg, trs, m):
  fig, axes = plotting.new_figure(2, 3, height_per_row=2.3)
  ax = axes.ravel()
  for panel, a in zip(
      (
          _alignment_grid_panel,
          _alignment_step_panel,
          _step_size_grid_panel,
          _step_size_step_panel,
          _assumption1_panel,
      ),
      ax,
  ):
    panel(a, trs)
  _eq2_panel(ax[5], trs, m)
  tr0 = trs[0]
  for a in ax:
    a.set_xlabel("step t")
    a.grid(True)
    if a.get_legend_handles_labels()[0] and a.get_legend() is None:
      a.legend(loc="best", fontsize=4.6)
    if tr0.warmup_steps:
      a.axvline(tr0.warmup_steps, color="0.6", linewidth=0.6, linestyle=":")
  sub = (
      f"{cfg.run.describe()}\nbands: min-max over {len(trs)} seeds"
      if tr0.label.startswith("seed")
      else f"{tr0.label}: checkpoints from {tr0.grid_source}"
  )
  fig.suptitle(sub + ("; dotted line: t = W" if tr0.warmup_steps else ""), fontsize=6.5, y=1.0)
  fig.tight_layout()
  return plotting.save(fig, stem)
