"""Fig. 1: the encoder's parameter norm grows like sqrt(t) while its direction converges.

From our own T5.1.1 pretraining (T5's Adafactor, rsqrt schedule, the paper's T / W; see
:mod:`~normgrowth_jax.figures.t5_runs`), or from any run directory given with ``--model_dir``:

* ||theta_t|| (paper filter) against t with the a sqrt(t) + b fit from t = 0 (the paper's
  r^2 = 1.00 over its 104 checkpoints), mean and band over seeds;
* the growth law measured, not assumed: r^2 of sqrt(t), linear, t^(1/4) and log t fits past
  warm-up, and the free exponent p of a t^p + b with a 95% interval, per seed (moving-block
  bootstrap of its residuals) and pooled (one p shared by the seeds; seeds resampled as well
  as blocks, so the interval covers seed-to-seed variation). All are fitted on the per-step norms when
  the run recorded them (:func:`norm_series`), else on its checkpoints, and are `not
  comparable` with fewer than MIN_POINTS points (two checkpoints fit any two-parameter law
  with r^2 = 1);
* Adafactor's update-clipping ratio r_t = ||delta_t|| / (lr_t ||theta_t||), the mechanism the
  sqrt(t) law needs (p = r^2 / 2 for misaligned updates under rsqrt, the paper's derivation), beside the
  measured late local exponent d log||theta|| / d log t past 4 W (:func:`late_exponent`);
* per-layer norms and growth factors (the paper: later layers grow faster);
* cos(theta_a, theta_b) between consecutive grid checkpoints, global and per layer.

It also offers Fig. 2 the trained T5 (its last checkpoint, encoder, byte tokens) against its
own initialisation (:func:`saturation_subjects`).

Example:
  >>> rows = {"sqrt": 0.999, "linear": 0.97, "quarter": 0.98, "log": 0.95}
  >>> best_law(rows)
  'sqrt'
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from normgrowth_jax.analysis import fits
from normgrowth_jax.figures import core, paper, plotting, t5_runs
from normgrowth_jax.figures.verdict import check

NAME = "fig1"
TITLE = "T5 pretraining: sqrt(t) norm growth and direction convergence"


@dataclasses.dataclass(frozen=True)
class Fig1Config:
  run: t5_runs.T5RunConfig
  n_boot: int = 400
  r2_threshold: float = 0.995        # "r^2 = 1.00" to two decimals
  cos_threshold: float = 0.99        # late checkpoint-to-checkpoint cosine


CONFIGS = {
    "smoke": Fig1Config(t5_runs.PROFILES["smoke"], n_boot=20),
    "quick": Fig1Config(t5_runs.PROFILES["quick"]),
    "full": Fig1Config(t5_runs.PROFILES["full"], n_boot=1000),
}


def work(cfg: Fig1Config) -> int:
  return cfg.run.train_steps * len(cfg.run.seeds)


# ----------------------------------------------------------------------------- measurements


def best_law(r2: dict) -> str:
  """The law with the highest r^2."""
  return max(r2, key=r2.get)


MIN_POINTS = 20          # fewer points than this: a fit's r^2 or exponent is not comparable
EXPONENT_POINTS = 2000   # the exponent (and its bootstrap) refits at most this many points


def norm_series(tr: t5_runs.Trajectory) -> tuple[np.ndarray, np.ndarray, str]:
  """(t, ||theta_t||, source): the points the growth laws and the exponent are fitted on.

  The per-step rows (norms.jsonl, TensorBoard, the checkpoint trace; with t = 0 when
  ||theta_0|| is known) when there are at least MIN_POINTS of them covering 90% of the run;
  else the checkpoint grid. Checkpoints only serve checkpoint-to-checkpoint quantities when
  the run recorded its steps.
  """
  if len(tr.step) >= MIN_POINTS and tr.step[-1] - tr.step[0] >= 0.9 * tr.step[-1]:
    t, y = tr.step.astype(np.float64), tr.param_norm
    if tr.norm0 is not None and tr.step[0] > 0:
      t, y = np.concatenate([[0.0], t]), np.concatenate([[tr.norm0], y])
    return t, y, f"per step ({tr.source})"
  return (tr.grid["step"].astype(np.float64), tr.grid["param_norm"],
          f"checkpoint grid ({tr.grid_source})")


def fit_window(t: np.ndarray, tr: t5_runs.Trajectory) -> np.ndarray:
  """Points past warm-up (t >= W, when W is known; else t > 0): where the laws are compared."""
  return t >= (tr.warmup_steps if tr.warmup_steps else 1)


def _thin(t: np.ndarray, y: np.ndarray, n: int = EXPONENT_POINTS):
  """At most ``n`` evenly spaced points of a series (all of them when it is shorter)."""
  idx = np.unique(np.linspace(0, len(t) - 1, min(n, len(t))).round().astype(int))
  return t[idx], y[idx]


def growth_law(tr: t5_runs.Trajectory, n_boot: int, seed: int = 0) -> dict:
  """The growth-law numbers of one run; fits with fewer than MIN_POINTS points are None, with
  the reason in ``note``."""
  t, y, source = norm_series(tr)
  ok = np.isfinite(y)
  t, y = t[ok], y[ok]
  w = fit_window(t, tr)
  out = {"source": source, "n_all": int(t.size), "n_fit": int(w.sum()),
         "fit_from": int(t[w][0]) if w.any() else None, "sqrt_all": None, "laws": None,
         "exponent": None, "note": None}
  if t.size < MIN_POINTS or w.sum() < MIN_POINTS:
    out["note"] = (f"{tr.label}: {int(w.sum())} points past warm-up ({t.size} in all) from the "
                   f"{source}; at least {MIN_POINTS} needed for a growth-law fit")
    return out
  out["sqrt_all"] = fits.fit_sqrt(t, y)            # the paper's fit: every point from t = 0
  out["laws"] = {k: fits.fit_law(t[w], y[w], k) for k in fits.LAWS}
  out["exponent"] = fits.bootstrap_exponent(*_thin(t[w], y[w]), n_boot=n_boot, seed=seed)
  return out


def pooled_exponent(trs, n_boot: int) -> Optional[fits.ExponentCI]:
  """One exponent shared by the runs, with a run-level bootstrap interval (runs resampled,
  then blocks within each: :func:`fits.bootstrap_exponent_runs`), so that it covers
  seed-to-seed variation; None for one run, or when one has too few points."""
  if len(trs) < 2:
    return None
  ts, ys = [], []
  for tr in trs:
    t, y, _ = norm_series(tr)
    w = fit_window(t, tr) & np.isfinite(y)
    if w.sum() < MIN_POINTS:
      return None
    t, y = _thin(t[w], y[w])
    ts.append(t)
    ys.append(y)
  return fits.bootstrap_exponent_runs(ts, ys, n_boot=n_boot, seed=1)


def late_start(tr: t5_runs.Trajectory) -> int:
  """4 W, or half the run when W is unknown: "late" is t > this."""
  return 4 * tr.warmup_steps if tr.warmup_steps else tr.train_steps // 2


def late_ratio(tr: t5_runs.Trajectory) -> Optional[float]:
  """RMS of r_t past 4 W (or over the second half when W is unknown)."""
  r = t5_runs.assumption1_ratio(tr)
  if r is None:
    return None
  v = r[(tr.step > late_start(tr)) & np.isfinite(r)]
  return float(np.sqrt(np.mean(v ** 2))) if v.size else None


def late_exponent(tr: t5_runs.Trajectory, n_boot: int,
                  seed: int = 0) -> Optional[fits.LocalExponent]:
  """The local exponent d log||theta|| / d log t past 4 W (:func:`fits.local_exponent`: the
  log-log slope with a block-bootstrap interval of this run's residuals), on the points of
  :func:`norm_series`; None with fewer than MIN_POINTS of them. The mechanism's prediction
  for it is r^2 / 2 with r from :func:`late_ratio`."""
  t, y, _ = norm_series(tr)
  late = (t > late_start(tr)) & np.isfinite(y) & (y > 0)
  if late.sum() < MIN_POINTS:
    return None
  return fits.local_exponent(t[late], y[late], n_boot=n_boot, seed=seed)


def spearman(x, y) -> float:
  """Spearman rank correlation (no ties expected)."""
  rx = np.argsort(np.argsort(x)).astype(float)
  ry = np.argsort(np.argsort(y)).astype(float)
  if rx.std() == 0 or ry.std() == 0:
    return 0.0
  return float(np.corrcoef(rx, ry)[0, 1])


def quarter_means(values: np.ndarray) -> tuple[float, float]:
  """Means of the first and last quarter of a grid series (NaN-free part)."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return float("nan"), float("nan")
  q = max(1, v.size // 4)
  return float(v[:q].mean()), float(v[-q:].mean())


def criteria(m: dict, cfg: Fig1Config) -> list:
  """Fig. 1's verdict criteria from the measured numbers ``m`` (see :func:`measure`)."""
  laws = [f"a sqrt(t) + b from t = 0: r^2 rounds to 1.00 (>= {cfg.r2_threshold})",
          "sqrt(t) fits better than linear, t^(1/4) and log t past warm-up (highest r^2)",
          "free exponent of a t^p + b: 0.5 inside the 95% interval"]
  if m["exponent"] is None:
    out = [check(text, None, ours=f"not comparable: {m['fit_note']}") for text in laws]
  else:
    p, lo, hi = m["exponent"]
    out = [check(laws[0], m["sqrt_r2"] >= cfg.r2_threshold, ours=m["sqrt_r2"],
                 paper=paper.FIG1["sqrt_fit_r2"]),
           check(laws[1], m["best_law"] == "sqrt", ours=f"best: {m['best_law']}",
                 paper="sqrt (r^2 = 1.00)"),
           check(laws[2], lo <= 0.5 <= hi, ours=f"{p:.3f} [{lo:.3f}, {hi:.3f}]",
                 paper="0.5 (sqrt)")]
  if m["layer_factors"]:
    f = m["layer_factors"]
    passed = m["layer_spearman"] > 0 and f[-1] > f[0]
    out.append(check("later layers grow faster (growth factor rises with depth: Spearman > 0 "
                     "and last > first)", passed,
                     ours=f"rho {m['layer_spearman']:.2f}; x{f[0]:.3f} -> x{f[-1]:.3f}",
                     paper="later layers faster"))
  else:
    out.append(check("later layers grow faster", None, ours="no per-layer norms"))
  if m["cos_late"] is None:
    out.append(check("cos(theta_t, theta_t+1) between checkpoints -> 1", None,
                     ours="no checkpoint-to-checkpoint angles in this run"))
  else:
    passed = (m["cos_late"] >= cfg.cos_threshold and m["angle_late"] < m["angle_early"]
              and (m["layer_cos_late_min"] is None
                   or m["layer_cos_late_min"] >= cfg.cos_threshold))
    out.append(check(f"cos(theta_t, theta_t+1) between checkpoints -> 1 (last quarter >= "
                     f"{cfg.cos_threshold}, every layer too, and rising)", passed,
                     ours=(f"{m['cos_early']:.4f} -> {m['cos_late']:.5f}"
                           + (f" (layers >= {m['layer_cos_late_min']:.5f})"
                              if m["layer_cos_late_min"] is not None else "")),
                     paper="-> 1"))
  return out


def measure(trs, cfg: Fig1Config) -> dict:
  """Every number of the figure and its criteria, from the runs' trajectories."""
  per = [growth_law(tr, cfg.n_boot, seed=i) for i, tr in enumerate(trs)]
  fitted = all(g["laws"] is not None for g in per)
  pooled = pooled_exponent(trs, cfg.n_boot)
  law_r2 = ({k: float(np.mean([g["laws"][k].r2 for g in per])) for k in fits.LAWS}
            if fitted else None)
  exp = (pooled or per[0]["exponent"]) if fitted else None
  factors = [t5_runs.growth_factors(tr) for tr in trs]
  names = sorted(factors[0], key=t5_runs.layer_index) if factors[0] else []
  mean_f = [float(np.mean([f[g] for f in factors])) for g in names]
  cos = t5_runs.nanmean0(t5_runs.stack([tr.grid["direction_cos"] for tr in trs]))
  ang = np.arccos(np.clip(cos, -1, 1))
  has_cos = np.isfinite(cos).any()
  layer_late = []
  for tr in trs:
    for g, v in tr.grid["layer_cos"].items():
      if np.isfinite(v).any():
        layer_late.append(quarter_means(v)[1])
  ratios = [late_ratio(tr) for tr in trs]
  ratios = [r for r in ratios if r is not None]
  local = [late_exponent(tr, cfg.n_boot, seed=i) for i, tr in enumerate(trs)]
  return {
      "per_run": per, "pooled": pooled, "local_late": local,
      "local_late_mean": (float(np.mean([e.p for e in local]))
                          if all(e is not None for e in local) else None),
      "fit_note": "; ".join(g["note"] for g in per if g["note"]) or None,
      "sqrt_r2": float(np.mean([g["sqrt_all"].r2 for g in per])) if fitted else None,
      "sqrt_r2_runs": [g["sqrt_all"].r2 for g in per] if fitted else None,
      "law_r2": law_r2, "best_law": best_law(law_r2) if fitted else None,
      "exponent": (exp.p, exp.lo, exp.hi) if fitted else None,
      "layer_names": names, "layer_factors": mean_f,
      "layer_factors_runs": [[f[g] for g in names] for f in factors],
      "layer_spearman": spearman(np.arange(len(mean_f)), mean_f) if mean_f else 0.0,
      "cos_early": quarter_means(cos)[0] if has_cos else None,
      "cos_late": quarter_means(cos)[1] if has_cos else None,
      "angle_early": quarter_means(ang)[0] if has_cos else None,
      "angle_late": quarter_means(ang)[1] if has_cos else None,
      "layer_cos_late_min": float(min(layer_late)) if layer_late else None,
      "ratio_late": float(np.mean(ratios)) if ratios else None,
  }


# ----------------------------------------------------------------------------- plot


def _band(ax, x, ys, color, label, **kw):
  ys = t5_runs.stack(ys)
  ax.plot(x[:ys.shape[1]], t5_runs.nanmean0(ys), color=color, label=label, **kw)
  if len(ys) > 1:
    ax.fill_between(x[:ys.shape[1]], np.nanmin(ys, 0), np.nanmax(ys, 0), color=color,
                    alpha=0.2, linewidth=0)


def _paper_axis(ax, T):
  """A top axis in the paper's steps (t scaled by 2^19 / T)."""
  scale = t5_runs.PAPER_T / T
  top = ax.secondary_xaxis("top", functions=(lambda t: t * scale, lambda t: t / scale))
  top.set_xlabel("paper-equivalent step (t · 2¹⁹ / T)", fontsize=5.5)
  top.tick_params(labelsize=5)
  import matplotlib.ticker as mticker  # pylint: disable=g-import-not-at-top
  top.xaxis.set_major_locator(mticker.FixedLocator([0, 2.5e5, 5e5]))
  top.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v / 1e3:.0f}k"))


def _plot(ctx, cfg, trs, m):
  fig, axes = plotting.new_figure(2, 3, height_per_row=2.3)
  ax = axes.ravel()
  tr0 = trs[0]
  gs = tr0.grid["step"].astype(np.float64)
  T = tr0.train_steps
  # (a) the norm and the four laws
  _band(ax[0], gs, [tr.grid["param_norm"] for tr in trs], "black",
        f"ours ({len(trs)} run{'s' if len(trs) > 1 else ''}, 104-point grid)", marker=".",
        markersize=2, linewidth=0.8)
  g0 = m["per_run"][0]
  if g0["laws"] is not None:   # run 0's fits, on the points named in the legend's title
    ax[0].plot(gs, g0["sqrt_all"](gs), color="tab:red", linewidth=1.0,
               label=f"a√t + b from t = 0: r² = {g0['sqrt_all'].r2:.4f} (paper 1.00)")
    w = fit_window(gs, tr0)
    styles = {"linear": ("tab:blue", ":"), "quarter": ("tab:green", ":"),
              "log": ("tab:purple", ":")}
    for law, (color, ls) in styles.items():
      f = g0["laws"][law]
      ax[0].plot(gs[w], f(gs[w]), color=color, linestyle=ls, linewidth=0.9,
                 label=f"{fits.LAW_LABELS[law]} (t ≥ {g0['fit_from']}): r² = {f.r2:.4f}")
  ax[0].set_title("(a) encoder norm and growth-law fits")
  ax[0].set_ylabel("‖θ_t‖ (paper filter)")
  ax[0].legend(loc="upper left", fontsize=4.6,
               title=f"fits: {g0['n_all']} points, {g0['source'].split(' (')[0]}",
               title_fontsize=4.6)
  _paper_axis(ax[0], T)
  # (b) the free exponent per run and pooled
  fitted = [(tr.label, g["exponent"]) for tr, g in zip(trs, m["per_run"]) if g["exponent"]]
  if m["pooled"] is not None:
    fitted.append(("pooled", m["pooled"]))
  labels = [name for name, _ in fitted]
  ps, los, his = (np.asarray([getattr(e, k) for _, e in fitted], np.float64)
                  for k in ("p", "lo", "hi"))
  y = np.arange(len(ps))
  if fitted:
    ax[1].errorbar(ps, y, xerr=[ps - los, his - ps], fmt="o", color="black", markersize=3,
                   capsize=2, linewidth=0.9, label="ours: p of a t^p + b, 95% CI\n(pooled: runs and blocks resampled)")
  ax[1].axvline(0.5, **plotting.PAPER_STYLE, label="paper: sqrt(t), p = 0.5")
  if m["ratio_late"] is not None:
    ax[1].axvline(m["ratio_late"] ** 2 / 2, color="tab:orange", linewidth=0.9,
                  label=f"r²/2 from the measured r (t > 4W): {m['ratio_late'] ** 2 / 2:.3f}")
  if m["local_late_mean"] is not None:
    ax[1].axvline(m["local_late_mean"], color="tab:green", linewidth=0.9, linestyle="--",
                  label=f"measured d log‖θ‖ / d log t (t > 4W): {m['local_late_mean']:.3f}")
  ax[1].set_yticks(y)
  ax[1].set_yticklabels(labels)
  ax[1].set_ylim(-0.7, len(ps) + 1.8)
  ax[1].set_xlabel("exponent p")
  ax[1].set_title("(b) exponent p of a·t^p + b (t ≥ W)"
                  + ("" if fitted else f": not comparable, < {MIN_POINTS} points"))
  ax[1].legend(loc="upper left", fontsize=4.6, title=(
      f"95% CI: blocks of {g0['exponent'].block} points" if fitted else None),
               title_fontsize=4.6)
  # (c) r_t
  colors = plt_colors(len(trs))
  any_r = False
  for tr, c in zip(trs, colors):
    r = t5_runs.assumption1_ratio(tr)
    if r is None:
      continue
    any_r = True
    x, mu, lo, hi = t5_runs.smooth(tr.step, r)
    ax[2].plot(x, mu, color=c, linewidth=0.9, label=tr.label)
    ax[2].fill_between(x, lo, hi, color=c, alpha=0.15, linewidth=0)
  ax[2].axhline(1.0, **plotting.PAPER_STYLE, label="r = 1: clipping active, p = 1/2")
  if tr0.warmup_steps:
    ax[2].axvline(tr0.warmup_steps, color="0.6", linewidth=0.6, linestyle=":")
  ax[2].set_ylim(0, 1.45)
  ax[2].set_title("(c) Adafactor ratio r_t" + ("" if any_r else ": no learning rate recorded"))
  ax[2].set_ylabel("‖δ_t‖ / (lr_t ‖θ_t‖), binned")
  ax[2].legend(loc="lower right", fontsize=4.6, ncol=2)
  # (d) per-layer norms
  names = m["layer_names"]
  lc = plt_colors(len(names), "viridis")
  for g, c, fac in zip(names, lc, m["layer_factors"]):
    _band(ax[3], gs, [tr.grid["layers"][g] for tr in trs], c,
          f"layer {t5_runs.layer_index(g) + 1}: x{fac:.3f}")
  ax[3].set_title("(d) per-layer norms (× growth 0 → T)")
  ax[3].set_ylabel("‖θ_t^(layer)‖")
  if names:
    ax[3].legend(loc="upper left", fontsize=4.6)
  # (e) direction convergence
  mids = gs[1:]
  cos = t5_runs.stack([tr.grid["direction_cos"] for tr in trs])
  if np.isfinite(cos).any():
    for g, c in zip(names, lc):
      v = t5_runs.stack([tr.grid["layer_cos"][g] for tr in trs])
      if np.isfinite(v).any():
        ax[4].plot(mids[:v.shape[1]], t5_runs.nanmean0(v), color=c, linewidth=0.7,
                   label=f"layer {t5_runs.layer_index(g) + 1}")
    _band(ax[4], mids, list(cos), "black", "all encoder layers", linewidth=1.0)
    lo = np.nanpercentile(cos, 5)
    ax[4].set_ylim(max(lo - 0.002, -1), 1.0005)
    ax[4].legend(loc="lower right", fontsize=4.6)
  ax[4].set_title(f"(e) cos(θ_a, θ_b), checkpoints {int(gs[1] - gs[0])} steps apart")
  ax[4].set_ylabel("cosine")
  # (f) growth factor by layer
  if names:
    runs_f = np.asarray(m["layer_factors_runs"])
    x = np.arange(1, len(names) + 1)
    ax[5].bar(x, runs_f.mean(0) - 1, bottom=1, color=lc, width=0.6)
    if len(runs_f) > 1:
      ax[5].errorbar(x, runs_f.mean(0), yerr=runs_f.std(0, ddof=1), fmt="none", color="black",
                     capsize=2, linewidth=0.8)
    ax[5].set_xticks(x)
    sd = runs_f.std(0, ddof=1) if len(runs_f) > 1 else np.zeros(len(names))
    ax[5].set_ylim(min(1.0, (runs_f.mean(0) - sd).min()) - 0.02,
                   max(runs_f.max(), (runs_f.mean(0) + sd).max()) * 1.04 + 0.02)
    ax[5].set_xlabel("encoder layer")
    ax[5].set_ylabel("‖θ_T‖ / ‖θ_0‖")
    ax[5].set_title(f"(f) growth by layer (Spearman ρ = {m['layer_spearman']:.2f})")
    ax[5].text(0.02, 0.97, "paper: later layers grow faster", transform=ax[5].transAxes,
               fontsize=5, va="top", color="0.35")
  for a in (ax[0], ax[2], ax[3], ax[4]):
    a.set_xlabel("step t")
    a.grid(alpha=0.3, linewidth=0.5)
  ax[1].grid(alpha=0.3, linewidth=0.5, axis="x")
  fig.suptitle(_subtitle(cfg, trs), fontsize=6.5, y=1.0)
  fig.tight_layout()
  return plotting.save(fig, ctx.path(NAME))


def plt_colors(n, cmap="tab10"):
  import matplotlib  # pylint: disable=g-import-not-at-top
  cm = matplotlib.colormaps[cmap]
  if cmap == "tab10":
    return [cm(i % 10) for i in range(n)]
  return [cm(v) for v in np.linspace(0.05, 0.85, max(n, 1))][:n]


def _subtitle(cfg, trs):
  if trs[0].label.startswith("seed"):
    return f"{cfg.run.describe()}\nbands: min-max over {len(trs)} seeds"
  return f"{trs[0].label}: per step from {trs[0].source}\ncheckpoints from {trs[0].grid_source}"


# ----------------------------------------------------------------------------- the figure


def _rows(m, trs):
  src = m["per_run"][0]["source"].split(" (")[0]
  if m["exponent"] is None:
    rows = [core.Row("a√t + b from t = 0, r²; growth laws; exponent p", paper.FIG1["sqrt_fit_r2"],
                     f"not comparable: {m['fit_note']}")]
  else:
    p, lo, hi = m["exponent"]
    rows = [core.Row(f"a√t + b from t = 0 ({src}), r²", paper.FIG1["sqrt_fit_r2"],
                     *core.mean_spread(m["sqrt_r2_runs"]))]
    for law in fits.LAWS:
      rows.append(core.Row(f"{fits.LAW_LABELS[law]} past warm-up ({src}), r²",
                           1.00 if law == "sqrt" else None,
                           *core.mean_spread([g["laws"][law].r2 for g in m["per_run"]])))
    rows.append(core.Row(f"free exponent p (a t^p + b) per run ({src}); ± = seed spread", 0.5,
                         *core.mean_spread([g["exponent"].p for g in m["per_run"]])))
    rows.append(core.Row("free exponent p, 95% interval " + (
        "(pooled; seeds and blocks resampled: covers seed-to-seed variation)" if m["pooled"]
        else "(one run; blocks of its residuals: covers its noise, not other seeds)"),
                         "0.5 (implied)", f"{p:.3f} [{lo:.3f}, {hi:.3f}]"))
  if m["ratio_late"] is not None:
    rows.append(core.Row("Adafactor ratio r past 4W (RMS); predicted p = r²/2", None,
                         f"r = {m['ratio_late']:.3f}, r²/2 = {m['ratio_late'] ** 2 / 2:.3f}"))
  if m["local_late_mean"] is not None:
    rows.append(core.Row("local exponent d log‖θ‖ / d log t past 4W (log-log slope) per run; "
                         "predicted r²/2; ± = seed spread", None,
                         *core.mean_spread([e.p for e in m["local_late"]])))
  rows.append(core.Row("‖θ‖ at t = 0 → T", None,
                       f"{np.mean([tr.grid['param_norm'][0] for tr in trs]):.2f} → "
                       f"{np.mean([tr.grid['param_norm'][-1] for tr in trs]):.2f}"))
  for g, f in zip(m["layer_names"], m["layer_factors"]):
    rows.append(core.Row(f"growth factor, encoder layer {t5_runs.layer_index(g) + 1}",
                         "later layers faster" if g == m["layer_names"][-1] else None,
                         *core.mean_spread([r[m["layer_names"].index(g)]
                                            for r in m["layer_factors_runs"]])))
  if m["cos_late"] is not None:
    rows.append(core.Row("cos between checkpoints, first quarter", None, m["cos_early"]))
    rows.append(core.Row("cos between checkpoints, last quarter", "→ 1", m["cos_late"]))
  return rows


def make(ctx: core.FigureContext, cfg: Fig1Config) -> core.FigureResult:
  trs = t5_runs.load_runs(ctx, cfg.run)
  ctx.advance(0, f"{NAME}: fits and bootstrap")
  m = measure(trs, cfg)
  files = _plot(ctx, cfg, trs, m)
  numbers = {
      "runs": [t5_runs.to_json(tr) for tr in trs],
      "sqrt_fit_r2": m["sqrt_r2_runs"],
      "fit_source": {tr.label: {"source": g["source"], "points": g["n_all"],
                                "points_past_warmup": g["n_fit"]}
                     for tr, g in zip(trs, m["per_run"])},
      "fit_not_comparable": m["fit_note"],
      "law_r2": {tr.label: {k: f.r2 for k, f in (g["laws"] or {}).items()}
                 for tr, g in zip(trs, m["per_run"])},
      "law_fits": {tr.label: {k: f._asdict() for k, f in (g["laws"] or {}).items()}
                   for tr, g in zip(trs, m["per_run"])},
      "exponent": {tr.label: g["exponent"] and g["exponent"]._asdict()
                   for tr, g in zip(trs, m["per_run"])},
      "exponent_pooled": m["pooled"]._asdict() if m["pooled"] else None,
      "fit_from_step": m["per_run"][0]["fit_from"],
      "ratio_late_rms": m["ratio_late"],
      "local_exponent_late": {tr.label: e and e._asdict() for tr, e in zip(trs, m["local_late"])},
      "local_exponent_late_mean": m["local_late_mean"],
      "ratio_binned": {tr.label: dict(zip(("step", "mean", "p10", "p90"), t5_runs.smooth(
          tr.step, t5_runs.assumption1_ratio(tr)))) for tr in trs
                       if t5_runs.assumption1_ratio(tr) is not None},
      "layer_growth": dict(zip(m["layer_names"], m["layer_factors"])),
      "layer_spearman": m["layer_spearman"],
      "paper": paper.FIG1,
  }
  files.append(core.write_numbers(ctx, NAME, numbers))
  tr0 = trs[0]
  from_dir = bool((ctx.options or {}).get("model_dir"))
  setup = ([f"run: {tr0.label} ({tr0.source}); checkpoint grid from {tr0.grid_source}"]
           if from_dir else [
               f"model and data: {cfg.run.describe()} (the paper: T5-base, 220M parameters, "
               "C4 span corruption, batch 128 x (512 + 114), T = 2^19)",
               f"the paper's T / W = 52.4 and base rate 1.0 kept; W = {cfg.run.warmup_steps} "
               f"instead of 10^4, so each step changes the weights ~{np.sqrt(1e4 / cfg.run.warmup_steps):.0f}x "
               "more than the paper's",
               f"104 checkpoints {cfg.run.grid_interval} steps apart (the paper's 5,100 scaled "
               "by T / 2^19), read from the hook's anchor rows, not from written checkpoints",
               f"{len(cfg.run.seeds)} seeds (the paper: one run)",
           ])
  g0 = m["per_run"][0]
  block = g0["exponent"].block if g0["exponent"] else "-"
  setup += [
      f"growth laws fitted on the {g0['source']}: {g0['n_all']} points, compared on the "
      f"{g0['n_fit']} with t >= {g0['fit_from']} (past warm-up); the a√t + b fit uses every "
      f"point from t = 0 (the paper: its 104 checkpoints); the exponent refits at most "
      f"{EXPONENT_POINTS} evenly spaced points; under {MIN_POINTS} points: not comparable",
      f"exponent intervals: per run, a moving-block bootstrap of the fit residuals ({cfg.n_boot} "
      f"replicates, blocks of {block} points = the residuals' "
      "decorrelation length or n^(1/3), whichever is larger): it covers that run's noise "
      "only, and with residuals this autocorrelated its coverage is below nominal (about 75% "
      "for AR(1) phi = 0.9 on 104 points, measured in tests); pooled, a run-level bootstrap "
      "(seeds drawn with replacement, each rebuilt from its own fit plus block-resampled "
      "residuals, the shared p refitted): it covers seed-to-seed variation as well, though "
      "with 3 seeds (10 distinct draws) it is still narrower than a t-interval on the per-seed "
      "exponents",
      "late local exponent: the log-log least-squares slope of ||theta|| on t over t > 4W "
      "(fits.local_exponent; per run, its interval in fig1.json is a block bootstrap of that "
      "run's residuals); a window this wide averages d log||theta|| / d log t over it",
  ]
  notes = [f"r_t is the global ||delta_t|| / (lr_t ||theta_t||): for T5's Adafactor "
           "(parameter scale, clipping 1.0) it is min(RMS(u), 1) per parameter, averaged; "
           "misaligned updates then give ||theta|| ~ t^(r^2/2)."]
  return core.FigureResult(NAME, TITLE, files, _rows(m, trs), criteria(m, cfg), setup, notes)


# ----------------------------------------------------------------------------- Fig. 2


def _byte_ids(sentences, max_len: int) -> np.ndarray:
  """[n, max_len] int32: seqio ByteVocabulary ids (UTF-8 byte + 3), EOS (1), padding 0."""
  from normgrowth_jax.data import vocab  # pylint: disable=g-import-not-at-top
  v = vocab.byte_vocabulary()
  out = np.zeros((len(sentences), max_len), np.int32)
  for i, s in enumerate(sentences):
    ids = list(v.encode(s))[:max_len - 1] + [v.eos_id]
    out[i, :len(ids)] = ids
  return out


def saturation_subjects(ctx, sentences, max_len: int = 64) -> list:
  """Fig. 2's subject: the first seed's trained T5 (last checkpoint) vs its own init, on the
  encoder's hidden states; offered only when that run is finished in the cache."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.figures import subjects  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.models import t5  # pylint: disable=g-import-not-at-top
  cfg = CONFIGS[ctx.profile].run
  done = t5_runs.finished_runs(ctx, cfg)
  if not done:
    return []
  seed, directory = done[0]
  model = t5.Transformer(t5_runs.model_config(cfg))
  trained = jax.tree.map(jnp.asarray, t5_runs.last_params(directory))
  init = t5_runs.init_params(cfg, seed)
  ids = jnp.asarray(_byte_ids(sentences, max_len))

  def forward(p, saturated):
    return model.apply({"params": p}, ids, saturated=saturated,
                       method=t5.Transformer.encode).hidden_states

  return [subjects.Subject(
      f"our T5 (Fig. 1 run, seed {seed}) encoder", trained, [init], "own init", forward,
      ids > 0, "T5-base",
      f"{cfg.describe()}; trained {cfg.train_steps} steps; encoder hidden states on byte tokens "
      "(seqio ByteVocabulary: UTF-8 byte + 3, EOS)")]
