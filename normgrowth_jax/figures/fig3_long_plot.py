"""fig3_long's plot: saturation, parameter and logit norms along the 5 epochs, saturation against
each norm, per layer, and what the saturated heads attend to; one colour per variant."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from normgrowth_jax.figures import paper, plotting, small_lm_runs

if TYPE_CHECKING:
  from normgrowth_jax.figures.fig3_long import Fig3LongConfig

COLORS = {
    ("prenorm_paper", "causal"): "C0",
    ("postnorm", "causal"): "C1",
    ("prenorm_paper", "original_leaky"): "C2",
    ("postnorm", "original_leaky"): "C3",
}


def _epochs(r, steps_per_epoch):
  return np.asarray(r["step"]) / steps_per_epoch


def _lines(ax, results, x_of, y_of, style="-", log_x=False, legend=True):
  for k, runs in results.items():
    for i, r in enumerate(runs):
      ax.plot(
          x_of(r),
          y_of(r),
          style,
          color=COLORS[k],
          linewidth=0.9,
          alpha=1.0 - 0.45 * i,
          marker="." if style == "-" else None,
          markersize=2.5,
          label=small_lm_runs.variant_label(*k) if (i == 0 and legend) else None,
      )
  if log_x:
    _log_x(ax)
  ax.grid(True)


def _log_x(ax):
  """A log x axis where the plotted data span more than a decade (else linear: labels of a
  narrow log axis overlap); minor ticks unlabelled."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  lo, hi = ax.dataLim.intervalx
  if lo > 0 and hi / lo > 10:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _last(key):
  """``r -> r[key]`` of the last layer, per checkpoint."""
  return lambda r: np.asarray(r[key])[:, -1]


def _relative_norm(r):
  return np.asarray(r["param_norm"]) / r["param_norm"][0]


def _saturation_panel(ax, results, ep):
  """(a) last-layer saturation over training, at rho and in the limit, beside the paper's."""
  lo, hi = paper.SMALL_LM["saturation_trained"]
  _lines(ax, results, ep, _last("saturation_rho"))
  _lines(ax, results, ep, _last("saturation_limit"), ":", legend=False)
  ax.axhspan(lo, hi, color="0.8", alpha=0.6, label=f"paper, 5 epochs ({lo}-{hi})")
  ax.set(
      xlabel="epoch",
      ylabel="saturation, last layer",
      ylim=(0, 1.02),
      title="(a) saturation (ρ = 1000; dotted: limit)",
  )


def _norms_panel(ax, results, ep):
  """(b) the encoder norm and the mean ||W_Q|| ||W_K||, relative to initialisation."""
  _lines(ax, results, ep, _relative_norm)
  _lines(
      ax,
      results,
      ep,
      lambda r: (np.asarray(r["qk_norm"]).mean(1) / np.asarray(r["qk_norm"])[0].mean()),
      "--",
      legend=False,
  )
  ax.set(
      xlabel="epoch",
      ylabel="relative to initialisation",
      title="(b) ||θ|| (solid), ||W_Q|| ||W_K|| (dashed)",
  )


def _against_norm_panel(ax, results):
  """(c) saturation against the norm."""
  _lines(ax, results, _relative_norm, _last("saturation_rho"), legend=False)
  ax.set(
      xlabel="||θ_t|| / ||θ_0|| (encoder)",
      ylabel="saturation, last layer",
      ylim=(0, 1.02),
      title="(c) saturation against the norm",
  )


def _against_margin_panel(ax, results):
  """(d) saturation against the last layer's logit margin."""
  _lines(ax, results, _last("margin"), _last("saturation_rho"), log_x=True, legend=False)
  ax.set(
      xlabel="logit margin, last layer (top-1 − top-2 score)",
      ylabel="saturation, last layer",
      ylim=(0, 1.02),
      title="(d) saturation against the logit scale",
  )


def _per_layer_panel(ax, results, num_layers):
  """(e) per layer and checkpoint of seed 0, saturation against the logit margin."""
  markers = "osd^v<>p"
  for k, runs in results.items():
    for r in runs[:1]:
      m, s = np.asarray(r["margin"]), np.asarray(r["saturation_rho"])
      for layer in range(m.shape[1]):
        ax.scatter(
            m[:, layer],
            s[:, layer],
            s=5,
            color=COLORS[k],
            marker=markers[layer % 8],
            alpha=0.7,
            linewidths=0,
        )
  for layer in range(num_layers):  # the legend's markers in grey: shape = layer
    ax.scatter([], [], s=5, color="0.4", marker=markers[layer % 8], label=f"layer {layer}")
  _log_x(ax)
  ax.set(
      xlabel="logit margin of the layer",
      ylabel="saturation of the layer",
      ylim=(0, 1.02),
      title="(e) per layer and checkpoint, seed 0",
  )
  ax.grid(True)
  ax.legend(loc="center", fontsize=5, markerscale=1.5, handletextpad=0.1)


def _targets_panel(ax, results, ep, targets):
  """(f) what the correct-mask models' last layer attends to (seed 0), with each saturation
  peak marked."""
  styles = {"first": "-", "previous": "--", "self": ":"}
  for k, runs in results.items():
    if k[1] != "causal":
      continue
    r = runs[0]
    for t, st in styles.items():
      ax.plot(
          ep(r),
          np.asarray(r["targets"][t])[:, -1],
          st,
          color=COLORS[k],
          linewidth=0.9,
          label=targets[t] if k == ("prenorm_paper", "causal") else None,
      )
    peak = int(np.argmax(_last("saturation_rho")(r)))
    ax.axvline(ep(r)[peak], color=COLORS[k], linewidth=0.6, alpha=0.5)
  ax.set(
      xlabel="epoch",
      ylabel="attention weight, last layer",
      ylim=(0, 1),
      title="(f) heads' targets (correct mask, seed 0)",
  )
  ax.legend(loc="upper right", fontsize=5.5, title="weight on", title_fontsize=5.5)
  ax.grid(True)


def plot(stem, cfg: Fig3LongConfig, results: dict, steps_per_epoch: float, targets: dict):
  """The six panels; ``targets`` names panel (f)'s attention targets."""
  fig, axes = plotting.new_figure(2, 3, height_per_row=2.2)
  (a, b, c), (d, e, f) = axes
  ep = lambda r: _epochs(r, steps_per_epoch)  # noqa: E731
  _saturation_panel(a, results, ep)
  _norms_panel(b, results, ep)
  _against_norm_panel(c, results)
  _against_margin_panel(d, results)
  _per_layer_panel(e, results, cfg.run.arch.num_layers)
  _targets_panel(f, results, ep, targets)
  handles, labels = a.get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=5, bbox_to_anchor=(0.5, 0.0))
  run = cfg.run
  epochs = max(r["step"][-1] for v in results.values() for r in v) / steps_per_epoch
  seeds = (
      f"seeds {', '.join(map(str, run.seeds))} (faded: all but seed {run.seeds[0]})"
      if len(run.seeds) > 1
      else f"seed {run.seeds[0]}"
  )
  fig.suptitle(
      f"SmallLM {run.arch.num_layers} x {run.arch.d_model} (FF {run.arch.d_ff}, {run.arch.num_heads} heads) "
      f"on {run.corpus!r} sentences, AdamW lr {run.learning_rate:g} wd "
      f"{run.weight_decay:g}, {epochs:.2g} epochs\n{seeds}; vertical lines in (f): each "
      "run's saturation peak",
      fontsize=7,
      y=1.02,
  )
  fig.tight_layout()
  return plotting.save(fig, stem)
