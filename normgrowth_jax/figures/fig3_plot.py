"""Fig. 3's plots: histograms over saturated heads, and the small LMs' training.

* :func:`plot_heads`: # positions attended and split-attention probability over heads, per
  variant (pre-/post-norm x correct/original mask), rho bars and exact-limit outlines, the
  paper's histogram (coarse bins) hatched;
* :func:`plot_training`: encoder norm, dev loss (with the unigram loss), saturation at rho and
  in the exact limit along training, and saturation per layer, the paper's values beside ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from normgrowth_jax.figures import fig3_heads, paper, plotting, small_lm_runs
from normgrowth_jax.figures.small_lm_runs import PAPER_KEY, variant_label

COLORS = {"prenorm_paper": "tab:blue", "postnorm": "tab:orange"}
STYLES = {"causal": "-", "original_leaky": "--"}


def _paper_hist(ax, bins, scale, total, x_scale=1.0):
  first = True
  for lo, hi, n in bins:
    width = max((hi - lo) * x_scale, 0.4 * scale)
    ax.bar(
        lo * x_scale,
        n / total,
        width=width,
        align="edge",
        color="none",
        edgecolor="0.35",
        hatch="////",
        linewidth=0.6,
        label="paper (PTB, its mask)" if first else None,
    )
    first = False


def plot_heads(stem: Path, cfg, results: dict) -> list[Path]:
  """Two rows (# positions attended, split probability) by one column per variant."""
  run = cfg.run
  cols = small_lm_runs.variants(run)
  fig, axes = plotting.new_figure(2, len(cols), height_per_row=1.9, squeeze=False)
  length = run.max_len
  panels = (
      ("num_attended", np.arange(0.5, np.ceil(0.6 * length) + 1.5, 1.0), "# positions attended"),
      ("split_fraction", np.linspace(0, 1, 21), "split-attention probability"),
  )
  for j, (norm, mask) in enumerate(cols):
    for i, panel in enumerate(panels):
      _heads_panel(axes[i, j], run, results, norm, mask, *panel)
      if i == 0:
        rho = fig3_heads.pooled(results, norm, mask, "rho")[panel[0]]
        axes[i, j].set_title(
            f"{variant_label(norm, mask)}\n{len(rho)} heads, "
            + ("padded length" if fig3_heads.convention(mask) == "padded" else "real tokens")
        )
      if j == 0:
        axes[i, j].set_ylabel("fraction of heads")
  axes[0, -1].legend(loc="upper right")
  scaled = (
      ""
      if length == paper.FIG3["padded_length"]
      else (f"; paper's bins rescaled from length {paper.FIG3['padded_length']} to {length}")
  )
  fig.suptitle(
      f"Saturated heads of small LMs ({run.arch.num_layers} layers x "
      f"{run.arch.num_heads} heads, {len(run.seeds)} seed(s) pooled, best dev "
      f"checkpoint, {cfg.attention_sentences} dev sentences, padded length "
      f"{length}{scaled})",
      fontsize=7.5,
      y=1.02,
  )
  fig.tight_layout()
  return plotting.save(fig, stem)


def _heads_panel(ax, run, results, norm, mask, key, bins, xlabel):
  """One histogram over heads: ours at rho (bars) and in the limit (outline), the paper's."""
  length = run.max_len
  rho = fig3_heads.pooled(results, norm, mask, "rho")[key]
  lim = fig3_heads.pooled(results, norm, mask, "limit")[key]
  weights = np.full(rho.shape, 1.0 / rho.size)
  ax.hist(
      np.clip(rho, bins[0], bins[-1]),
      bins=bins,
      weights=weights,
      color=COLORS[norm],
      alpha=0.75,
      label=f"ours, ρ = {run.rho:g}",
  )
  ax.hist(
      np.clip(lim, bins[0], bins[-1]),
      bins=bins,
      weights=weights,
      histtype="step",
      color="k",
      linewidth=0.8,
      label="ours, exact limit",
  )
  if mask == "original_leaky":
    p = paper.FIG3[PAPER_KEY[norm]]
    if key == "num_attended":
      _paper_hist(ax, p["bins"], 1.0, p["heads"], x_scale=length / paper.FIG3["padded_length"])
      ax.axvline((length - 1) / 2, color="0.5", linestyle=":", linewidth=0.8)
    else:
      _paper_hist(ax, p["split_bins"], 0.02, p["heads"])
  ax.set_xlabel(xlabel)
  ax.grid(True)


def layer_profile(row: dict, kind: str = "limit") -> list:
  """Per-layer saturation (layers 1..L) from an eval row (``saturation_<kind>/layers_<i>``)."""
  keys = sorted(
      (k for k in row if k.startswith(f"saturation_{kind}/layers_")),
      key=lambda k: int(k.rsplit("_", 1)[1]),
  )
  return [row[k] for k in keys]


def plot_training(stem: Path, cfg, results: dict, unigram: float) -> list[Path]:
  """Encoder norm, dev loss, last-layer saturation and saturation per layer along training."""
  run = cfg.run
  fig, axes = plotting.new_figure(1, 4, height_per_row=2.2)
  layers = np.arange(1, run.arch.num_layers + 1)
  for (norm, mask), runs_ in results.items():
    c, s, label = COLORS[norm], STYLES[mask], variant_label(norm, mask)
    band = lambda ax, x, ys: plotting.band(ax, x, ys, c, label, s, alpha=0.15)  # noqa: E731
    band(axes[0], runs_[0]["norm"]["step"], [r["norm"]["param_norm"] for r in runs_])
    ev_steps = np.asarray(runs_[0]["eval"]["step"])
    band(axes[1], ev_steps, [r["eval"]["loss"] for r in runs_])
    band(axes[2], ev_steps, [r["eval"]["saturation_rho"] for r in runs_])
    axes[2].plot(
        ev_steps,
        np.mean([r["eval"]["saturation_limit"] for r in runs_], 0),
        "x",
        color=c,
        ms=3.5,
        mew=0.8,
    )
    band(axes[3], layers, [layer_profile(r["best"]) for r in runs_])
    axes[3].plot(
        layers,
        np.mean([layer_profile(r["init"]) for r in runs_], 0),
        s,
        color=c,
        linewidth=0.7,
        alpha=0.6,
        marker=".",
        ms=2.5,
    )
  _training_references(axes, unigram)
  titles = (
      "encoder norm ||θ|| (paper filter)",
      "dev loss (nats / token)",
      f"saturation, last layer, ρ = {run.rho:g}",
      "saturation by layer, best ckpt",
  )
  xlabels = ("training step",) * 3 + ("layer (exact limit)",)
  for ax, t, xl in zip(axes, titles, xlabels):
    ax.set_title(t)
    ax.set_xlabel(xl)
    ax.grid(True)
  axes[3].set_xticks(layers)
  axes[0].set_ylabel("L2 norm")
  axes[2].set_ylabel("cos(f(x; θ), sf(x; θ))")
  fig.legend(*_merged_legend(axes), loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.17))
  fig.suptitle(
      f"Small LMs on {run.corpus!r} sentences: {run.arch.num_layers} layers, d_model "
      f"{run.arch.d_model}, AdamW lr {run.learning_rate:g} wd {run.weight_decay:g}; "
      f"lines: mean over {len(run.seeds)} seed(s), bands: min-max",
      fontsize=7.5,
      y=1.04,
  )
  fig.tight_layout()
  return plotting.save(fig, stem)


def _training_references(axes, unigram: float) -> None:
  """The unigram loss, the paper's saturation (trained band, init marks), legend keys."""
  axes[1].axhline(
      unigram, color="0.3", linestyle=":", linewidth=0.9, label=f"unigram model ({unigram:.2f})"
  )
  axes[2].plot([], [], "x", color="0.3", ms=3.5, label="exact limit (x)")
  axes[3].plot(
      [],
      [],
      "-",
      color="0.3",
      linewidth=0.7,
      alpha=0.6,
      marker=".",
      ms=2.5,
      label="at initialisation (thin)",
  )
  lo, hi = paper.SMALL_LM["saturation_trained"]
  for ax in axes[2:]:
    ax.axhspan(
        lo,
        hi,
        color="0.6",
        alpha=0.35,
        linewidth=0,
        label="paper, trained (PTB)" if ax is axes[2] else None,
    )
    ax.set_ylim(-0.05, 1.05)
  for key, color in (
      ("saturation_init_prenorm", COLORS["prenorm_paper"]),
      ("saturation_init_postnorm", COLORS["postnorm"]),
  ):
    ilo, ihi = paper.SMALL_LM[key]
    axes[2].errorbar(
        [0],
        [(ilo + ihi) / 2],
        yerr=[[(ihi - ilo) / 2 + 0.005]],
        fmt="s",
        ms=3,
        color=color,
        mfc="white",
        capsize=2,
        linewidth=0.8,
        label=f"paper, init ({'pre' if 'pre' in key else 'post'}-norm)",
    )


def _merged_legend(axes) -> tuple[list, list]:
  """Every panel's legend entries, each label once."""
  handles, labels = axes[0].get_legend_handles_labels()
  for ax in axes[1:]:
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in labels:
        handles.append(h)
        labels.append(l)
  return handles, labels
