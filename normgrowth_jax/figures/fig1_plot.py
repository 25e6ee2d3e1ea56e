"""Fig. 1's plot: one column of panels per configuration's growth, then their comparison.

(a) ||theta_t|| / ||theta_0|| with the a sqrt(t) + b fit, on the paper-equivalent step; (b)
the exponent p per seed and pooled beside r^2 / 2; (c) the update ratio r_t; (d) the measured
late exponent against r^2 / 2 per run; (e) cosines between consecutive checkpoints; (f) growth
per encoder layer.
"""

from __future__ import annotations

import numpy as np

from normgrowth_jax.figures import fig1_growth, plotting, t5_runs

PART_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple")


def _paper_steps(tr) -> float:
  """Step -> paper-equivalent step (t 2^19 / T): runs of different T share one axis."""
  return t5_runs.PAPER_T / tr.train_steps


def _kilo(ax):
  import matplotlib.ticker as mticker  # pylint: disable=g-import-not-at-top

  ax.xaxis.set_major_locator(mticker.FixedLocator([0, 1e5, 2e5, 3e5, 4e5, 5e5]))
  ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v / 1e3:.0f}k"))
  ax.set_xlabel("paper-equivalent step t · 2¹⁹ / T")


def plot(stem, cfg, parts) -> list:
  fig, axes = plotting.new_figure(2, 3, height_per_row=2.4)
  ax = axes.ravel()
  for part, color in zip(parts, PART_COLORS):
    _plot_part(ax, part, color, len(parts) > 1)
  _plot_exponents(ax[1], parts)
  _plot_mechanism(ax[3], parts, cfg)
  _plot_layers(ax[5], parts)
  ax[0].set_title("(a) encoder norm and the a√t + b fit (t ≥ 0)")
  ax[0].set_ylabel("‖θ_t‖ / ‖θ_0‖ (paper filter)")
  _legend(ax[0], loc="upper left", fontsize=4.6)
  ax[2].axhline(1.0, **plotting.PAPER_STYLE, label="r = 1: clipping binds, p = 1/2")
  ax[2].set_ylim(0, 1.45)
  ax[2].set_title("(c) Adafactor ratio r_t")
  ax[2].set_ylabel("‖δ_t‖ / (lr_t ‖θ_t‖), binned")
  _legend(ax[2], loc="lower right", fontsize=4.6)
  cos = np.concatenate([np.ravel(tr.grid["direction_cos"]) for p in parts for tr in p.trs])
  if np.isfinite(cos).any():  # the lowest 5% (the first checkpoints) may fall off the panel
    ax[4].set_ylim(max(np.nanpercentile(cos, 5) - 0.002, -1), 1.0005)
  ax[4].set_title("(e) cos(θ_a, θ_b) between grid checkpoints")
  ax[4].set_ylabel("cosine")
  _legend(ax[4], loc="lower right", fontsize=4.6)
  for a in (ax[0], ax[2], ax[4]):
    _kilo(a)
    a.grid(True)
  ax[1].grid(True, axis="x")
  fig.suptitle(_subtitle(parts), fontsize=6.5, y=1.0)
  fig.tight_layout()
  return plotting.save(fig, stem)


def _legend(ax, **kw):
  """A legend where the panel has labelled artists (a run without angles draws none in (e))."""
  if ax.get_legend_handles_labels()[0]:
    ax.legend(**kw)


def _plot_part(ax, part, color, several):
  """Panels (a), (c), (e) for one configuration, in its colour."""
  trs, m = part.trs, part.m
  tr0, g0 = trs[0], m["per_run"][0]
  tag = f"{part.label}: " if several else ""
  runs = f"{tag}{len(trs)} run{'s' if len(trs) > 1 else ''}"
  scale = _paper_steps(tr0)
  gs = tr0.grid["step"].astype(np.float64)
  norm0 = [tr.grid["param_norm"][0] for tr in trs]
  plotting.band(
      ax[0],
      gs * scale,
      [tr.grid["param_norm"] / n0 for tr, n0 in zip(trs, norm0)],
      color,
      runs,
      marker=".",
      markersize=1.5,
      linewidth=0.8,
  )
  if g0["laws"] is not None:  # run 0's fit from t = 0, on the points of norm_series
    ax[0].plot(
        gs * scale,
        g0["sqrt_all"](gs) / norm0[0],
        color=color,
        linestyle="--",
        linewidth=0.8,
        label=f"a√t + b, {tr0.label}: r² = {g0['sqrt_all'].r2:.4f} " f"(paper 1.00)",
    )
  # (c): r_t per run
  for tr in trs:
    r = t5_runs.assumption1_ratio(tr)
    if r is not None:
      x, mu, _, _ = t5_runs.smooth(tr.step, r)
      ax[2].plot(
          x * scale, mu, color=color, linewidth=0.7, alpha=0.8, label=runs if tr is tr0 else None
      )
  # (e): direction convergence between grid checkpoints
  cos = t5_runs.stack([tr.grid["direction_cos"] for tr in trs])
  if np.isfinite(cos).any():
    plotting.band(ax[4], gs[1:] * scale, list(cos), color, f"{tag}encoder", linewidth=0.9)


def _plot_exponents(ax, parts):
  """(b): the free exponent per run and pooled, one block of rows per configuration, with
  each configuration's predicted r^2 / 2."""
  labels = []
  for part, color in zip(parts, PART_COLORS):
    m = part.m
    tag = f"{part.label}: " if len(parts) > 1 else ""
    fitted = [(tr.label, g["exponent"]) for tr, g in zip(part.trs, m["per_run"]) if g["exponent"]]
    if m["pooled"] is not None:
      fitted.append(("pooled", m["pooled"]))
    if fitted:
      y = len(labels) + np.arange(len(fitted))
      ps, los, his = (np.asarray([getattr(e, k) for _, e in fitted]) for k in ("p", "lo", "hi"))
      ax.errorbar(
          ps,
          y,
          xerr=[ps - los, his - ps],
          fmt="o",
          color=color,
          markersize=3,
          capsize=2,
          linewidth=0.9,
          label=f"{tag}p per run and pooled",
      )
      labels += [name for name, _ in fitted]
    if m["ratio_late"] is not None:
      ax.axvline(
          m["ratio_late"] ** 2 / 2,
          color=color,
          linewidth=0.8,
          linestyle=":",
          label=f"{tag}r²/2 = {m['ratio_late'] ** 2 / 2:.3f} (r past 4W)",
      )
  ax.axvline(0.5, **plotting.PAPER_STYLE, label="paper: sqrt(t), p = 0.5")
  ax.set_yticks(np.arange(len(labels)))
  ax.set_yticklabels(labels)
  ax.set_ylim(-0.7, len(labels) + 0.4 + 0.6 * (1 + 2 * len(parts)))
  ax.set_xlabel("exponent p (pooled: seeds and blocks resampled)")
  ax.set_title(
      "(b) p of a·t^p + b (t ≥ W), 95% CI"
      + ("" if labels else f": not comparable, < {fig1_growth.MIN_POINTS} points")
  )
  ax.legend(loc="upper left", fontsize=4.4)


def _plot_mechanism(ax, parts, cfg):
  """(d): the measured late local exponent against r^2 / 2, per run of every configuration."""
  runs = fig1_growth.mechanism_runs(parts)
  top = max([0.55] + [max(r["predicted"], r["local_exponent_ci"][1]) for r in runs]) * 1.05
  x = np.linspace(0, top, 2)
  ax.plot(x, x, **plotting.PAPER_STYLE, label="p = r²/2 (the paper's derivation)")
  ax.fill_between(
      x,
      x - cfg.mechanism_tolerance,
      x + cfg.mechanism_tolerance,
      color="0.85",
      linewidth=0,
      label=f"± {cfg.mechanism_tolerance} (criterion)",
  )
  for part, color in zip(parts, PART_COLORS):
    mine = [r for r in runs if r["configuration"] == part.label]
    if mine:
      p = np.array([r["local_exponent"] for r in mine])
      ci = np.array([r["local_exponent_ci"] for r in mine])
      ax.errorbar(
          [r["predicted"] for r in mine],
          p,
          yerr=[p - ci[:, 0], ci[:, 1] - p],
          fmt="o",
          color=color,
          markersize=3,
          capsize=2,
          linewidth=0.8,
          label=part.label if len(parts) > 1 else "runs",
      )
  ax.set_xlim(0, top)
  ax.set_ylim(min(0, *(r["local_exponent_ci"][0] for r in runs)) if runs else 0, top * 1.35)
  ax.set_xlabel("r²/2, r = late Adafactor ratio (t > 4W)")
  ax.set_ylabel("late d log‖θ‖ / d log t")
  ax.set_title(
      "(d) mechanism: late exponent vs r²/2" + ("" if runs else ": no learning rate recorded")
  )
  ax.legend(loc="upper left", fontsize=4.6)  # above the diagonal's top: room left by ylim
  ax.grid(True)


def _plot_layers(ax, parts):
  """(f): growth factor ||theta_T|| / ||theta_0|| per encoder layer, configurations side by side."""
  drawn = [(p, c) for p, c in zip(parts, PART_COLORS) if p.m["layer_names"]]
  width = 0.8 / max(1, len(drawn))
  lows, highs = [1.0], [1.0]
  for k, (part, color) in enumerate(drawn):
    runs_f = np.asarray(part.m["layer_factors_runs"])
    x = np.arange(1, runs_f.shape[1] + 1) + (k - (len(drawn) - 1) / 2) * width
    mean = runs_f.mean(0)
    sd = runs_f.std(0, ddof=1) if len(runs_f) > 1 else np.zeros_like(mean)
    ax.bar(
        x,
        mean - 1,
        bottom=1,
        color=color,
        width=width * 0.9,
        alpha=0.75,
        label=f"{part.label}: Spearman ρ = {part.m['layer_spearman']:.2f}",
    )
    if len(runs_f) > 1:
      ax.errorbar(x, mean, yerr=sd, fmt="none", color="black", capsize=1.5, linewidth=0.7)
    lows.append((mean - sd).min())
    highs.append((mean + sd).max())
  if drawn:
    n = max(len(p.m["layer_names"]) for p, _ in drawn)
    ax.set_xticks(np.arange(1, n + 1))
    ax.set_ylim(min(lows) - 0.02, 1 + (max(highs) - 1) * 1.3 + 0.02)
    ax.legend(
        loc="upper left", fontsize=4.6, title="paper: later layers grow faster", title_fontsize=4.6
    )
  ax.set_xlabel("encoder layer")
  ax.set_ylabel("‖θ_T‖ / ‖θ_0‖ (± seed SD)")
  ax.set_title("(f) growth by layer")


def _subtitle(parts):
  tr0 = parts[0].trs[0]
  if parts[0].run is None:
    return f"{tr0.label}: per step from {tr0.source}\ncheckpoints from {tr0.grid_source}"
  return "\n".join(
      f"{p.run.describe()}; seeds {', '.join(map(str, p.run.seeds))}"
      + (" (bands: min-max)" if len(p.run.seeds) > 1 else "")
      for p in parts
  )
