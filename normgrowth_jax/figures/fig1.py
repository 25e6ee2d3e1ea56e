"""Fig. 1: the encoder's parameter norm grows like sqrt(t) while its direction converges.

From our own T5.1.1 pretraining (T5's Adafactor, rsqrt schedule, the paper's T / W; see
:mod:`~normgrowth_jax.figures.t5_runs`), or from any run directory given with ``--model_dir``.
The paper's derivation makes sqrt(t) conditional: misaligned updates of size r lr_t ||theta_t||
give ||theta_t|| ~ t^(r^2 / 2), so sqrt(t) needs Adafactor's update clipping to bind (r = 1).
The quick profile therefore draws two configurations side by side, each with its own criteria
and verdict: one where clipping binds (:data:`QUICK_CLIPPED`, batch 64) and the profile's run
(also Figs. 2 and 5's), where it does not. Panels, per configuration:

* (a) ||theta_t|| / ||theta_0|| (paper filter) with the a sqrt(t) + b fit from t = 0 (the
  paper's r^2 = 1.00 over its 104 checkpoints), on the paper-equivalent step t 2^19 / T;
* (b) the free exponent p of a t^p + b with a 95% interval, per seed (moving-block bootstrap
  of its residuals) and pooled (seeds resampled as well as blocks), beside r^2 / 2; the r^2 of
  sqrt(t), linear, t^(1/4) and log t fits past warm-up are in the table. All are fitted on the
  per-step norms when the run recorded them (:func:`norm_series`), else on its checkpoints,
  and are `not comparable` with fewer than MIN_POINTS points;
* (c) Adafactor's update-clipping ratio r_t = ||delta_t|| / (lr_t ||theta_t||);
* (d) the mechanism as a prediction: the measured late local exponent d log||theta|| / d log t
  past 4 W (:func:`late_exponent`) against r^2 / 2, per run of every configuration;
* (e) cos(theta_a, theta_b) between consecutive grid checkpoints;
* (f) growth factor per encoder layer (the paper: later layers grow faster).

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

from normgrowth_jax.analysis import fits, run_reader
from normgrowth_jax.figures import core, paper, plotting, t5_runs
from normgrowth_jax.figures.verdict import check
from normgrowth_jax.figures.verdict import verdict as verdict_of

NAME = "fig1"
TITLE = "T5 pretraining: sqrt(t) norm growth and direction convergence"


@dataclasses.dataclass(frozen=True)
class Fig1Config:
  """One profile's Fig. 1.

  Attributes:
    run: the profile's T5 runs (Figs. 2 and 5 draw the same ones).
    clipped: beside them, a configuration where Adafactor's update clipping binds (late r_t
      near 1: the paper's condition for sqrt(t)); None draws ``run`` alone.
    ratio_threshold: late r_t at or above this counts as "clipping binds"; there the norm
      should follow sqrt(t): a sqrt(t) + b r^2 >= ``clipped_r2_threshold``.
    mechanism_tolerance, mechanism_share: the mechanism holds when the late local exponent is
      within ``mechanism_tolerance`` of r^2 / 2 for at least ``mechanism_share`` of the runs.
  """
  run: t5_runs.T5RunConfig
  clipped: Optional[t5_runs.T5RunConfig] = None
  n_boot: int = 400
  r2_threshold: float = 0.995        # "r^2 = 1.00" to two decimals
  cos_threshold: float = 0.99        # late checkpoint-to-checkpoint cosine
  ratio_threshold: float = 0.9
  clipped_r2_threshold: float = 0.99  # where clipping binds: a sqrt(t) + b from t = 0
  mechanism_tolerance: float = 0.1
  mechanism_share: float = 0.8

  def configurations(self) -> list[t5_runs.T5RunConfig]:
    """The run configurations drawn, the one where clipping binds first."""
    return [c for c in (self.clipped, self.run) if c is not None]


# Where Adafactor's clipping binds: the profile's run at batch 64 with 2+2 layers and W = 100
# (the device check's sweep: batch, not width, moves r to 1). Measured on the CPU, seed 0: late
# r = 0.97, reached by t = 4 W (emb 64 at the same batch: r = 0.96, but only from t = 8 W).
QUICK_CLIPPED = dataclasses.replace(
    t5_runs.PROFILES["quick"], num_encoder_layers=2, num_decoder_layers=2, batch_size=64,
    warmup_steps=100)
SMOKE_CLIPPED = dataclasses.replace(t5_runs.PROFILES["smoke"], batch_size=8)

CONFIGS = {
    "smoke": Fig1Config(t5_runs.PROFILES["smoke"], SMOKE_CLIPPED, n_boot=20),
    "quick": Fig1Config(t5_runs.PROFILES["quick"], QUICK_CLIPPED),
    "full": Fig1Config(t5_runs.PROFILES["full"], n_boot=1000),
}


def work(cfg: Fig1Config) -> int:
  del cfg  # its runs' training is counted from run_specs; the fits take seconds
  return 0


# ----------------------------------------------------------------------------- measurements


def best_law(r2: dict) -> str:
  """The law with the highest r^2."""
  return max(r2, key=r2.get)


MIN_POINTS = 20          # fewer points than this: a fit's r^2 or exponent is not comparable
EXPONENT_POINTS = 2000   # the exponent (and its bootstrap) refits at most this many points


def norm_series(tr: run_reader.Trajectory) -> tuple[np.ndarray, np.ndarray, str]:
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


def fit_window(t: np.ndarray, tr: run_reader.Trajectory) -> np.ndarray:
  """Points past warm-up (t >= W, when W is known; else t > 0): where the laws are compared."""
  return t >= (tr.warmup_steps if tr.warmup_steps else 1)


def _thin(t: np.ndarray, y: np.ndarray, n: int = EXPONENT_POINTS):
  """At most ``n`` evenly spaced points of a series (all of them when it is shorter)."""
  idx = np.unique(np.linspace(0, len(t) - 1, min(n, len(t))).round().astype(int))
  return t[idx], y[idx]


def growth_law(tr: run_reader.Trajectory, n_boot: int, seed: int = 0) -> dict:
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


def late_start(tr: run_reader.Trajectory) -> int:
  """4 W, or half the run when W is unknown: "late" is t > this."""
  return 4 * tr.warmup_steps if tr.warmup_steps else tr.train_steps // 2


def late_ratio(tr: run_reader.Trajectory) -> Optional[float]:
  """RMS of r_t past 4 W (or over the second half when W is unknown)."""
  r = t5_runs.assumption1_ratio(tr)
  if r is None:
    return None
  v = r[(tr.step > late_start(tr)) & np.isfinite(r)]
  return float(np.sqrt(np.mean(v ** 2))) if v.size else None


def late_exponent(tr: run_reader.Trajectory, n_boot: int,
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
  ratio_runs = [late_ratio(tr) for tr in trs]
  ratios = [r for r in ratio_runs if r is not None]
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
      "ratio_late_runs": ratio_runs,
  }


def mechanism_runs(parts) -> list[dict]:
  """Per run of every configuration: late r, the predicted exponent r^2 / 2 and the measured
  late local exponent (with its interval); runs lacking either are left out."""
  out = []
  for part in parts:
    for tr, r, e in zip(part.trs, part.m["ratio_late_runs"], part.m["local_late"]):
      if r is not None and e is not None:
        out.append({"configuration": part.label, "run": tr.label, "ratio_late": r,
                    "predicted": r * r / 2, "local_exponent": e.p,
                    "local_exponent_ci": [e.lo, e.hi]})
  return out


def mechanism_criteria(parts, cfg: Fig1Config) -> list:
  """The paper's mechanism as two falsifiable checks across configurations: where clipping
  binds (late r >= ``ratio_threshold``) the norm follows sqrt(t); and in every run the late
  local exponent is r^2 / 2 (within ``mechanism_tolerance``, for ``mechanism_share`` of runs)."""
  text = (f"where clipping binds (late r >= {cfg.ratio_threshold}): a√t + b from t = 0 r² >= "
          f"{cfg.clipped_r2_threshold} and 0.5 inside the exponent's 95% interval")
  measured = [p for p in parts if p.m["ratio_late"] is not None]
  bound = [p for p in measured if p.m["ratio_late"] >= cfg.ratio_threshold]
  if not bound:
    seen = ", ".join(f"{p.label}: r = {p.m['ratio_late']:.2f}" for p in measured)
    out = [check(text, None, ours=f"no configuration has late r >= {cfg.ratio_threshold}"
                 + (f" ({seen})" if seen else " (no learning rate recorded)"),
                 paper="sqrt(t), r^2 = 1.00")]
  else:
    def holds(m):
      return (m["exponent"] is not None and m["sqrt_r2"] >= cfg.clipped_r2_threshold
              and m["exponent"][1] <= 0.5 <= m["exponent"][2])
    ours = "; ".join(
        f"{p.label}: r = {p.m['ratio_late']:.2f}, " + (
            f"r² = {p.m['sqrt_r2']:.3f}, p = {p.m['exponent'][0]:.2f} "
            f"[{p.m['exponent'][1]:.2f}, {p.m['exponent'][2]:.2f}]"
            if p.m["exponent"] is not None else "not comparable") for p in bound)
    out = [check(text, all(holds(p.m) for p in bound), ours=ours, paper="sqrt(t), r^2 = 1.00")]
  runs = mechanism_runs(parts)
  text = (f"mechanism: late local exponent within {cfg.mechanism_tolerance} of r²/2 in >= "
          f"{cfg.mechanism_share:.0%} of the runs (every configuration's seeds)")
  if not runs:
    out.append(check(text, None, ours="no run with both r and a late exponent"))
  else:
    gaps = np.array([abs(r["local_exponent"] - r["predicted"]) for r in runs])
    within = int((gaps <= cfg.mechanism_tolerance).sum())
    out.append(check(text, within >= cfg.mechanism_share * len(runs),
                     ours=f"{within} of {len(runs)} runs (largest gap {gaps.max():.3f})",
                     paper="p = r²/2 (derivation)"))
  return out


# ----------------------------------------------------------------------------- plot


def _band(ax, x, ys, color, label, **kw):
  ys = t5_runs.stack(ys)
  ax.plot(x[:ys.shape[1]], t5_runs.nanmean0(ys), color=color, label=label, **kw)
  if len(ys) > 1:
    ax.fill_between(x[:ys.shape[1]], np.nanmin(ys, 0), np.nanmax(ys, 0), color=color,
                    alpha=0.2, linewidth=0)


PART_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple")


def _paper_steps(tr) -> float:
  """Step -> paper-equivalent step (t 2^19 / T): runs of different T share one axis."""
  return t5_runs.PAPER_T / tr.train_steps


def _kilo(ax):
  import matplotlib.ticker as mticker  # pylint: disable=g-import-not-at-top
  ax.xaxis.set_major_locator(mticker.FixedLocator([0, 1e5, 2e5, 3e5, 4e5, 5e5]))
  ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v / 1e3:.0f}k"))
  ax.set_xlabel("paper-equivalent step t · 2¹⁹ / T")


def _plot(ctx, cfg, parts):
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
  if np.isfinite(cos).any():   # the lowest 5% (the first checkpoints) may fall off the panel
    ax[4].set_ylim(max(np.nanpercentile(cos, 5) - 0.002, -1), 1.0005)
  ax[4].set_title("(e) cos(θ_a, θ_b) between grid checkpoints")
  ax[4].set_ylabel("cosine")
  _legend(ax[4], loc="lower right", fontsize=4.6)
  for a in (ax[0], ax[2], ax[4]):
    _kilo(a)
    a.grid(alpha=0.3, linewidth=0.5)
  ax[1].grid(alpha=0.3, linewidth=0.5, axis="x")
  fig.suptitle(_subtitle(parts), fontsize=6.5, y=1.0)
  fig.tight_layout()
  return plotting.save(fig, ctx.path(NAME))


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
  _band(ax[0], gs * scale, [tr.grid["param_norm"] / n0 for tr, n0 in zip(trs, norm0)], color,
        runs, marker=".", markersize=1.5, linewidth=0.8)
  if g0["laws"] is not None:   # run 0's fit from t = 0, on the points of norm_series
    ax[0].plot(gs * scale, g0["sqrt_all"](gs) / norm0[0], color=color, linestyle="--",
               linewidth=0.8, label=f"a√t + b, {tr0.label}: r² = {g0['sqrt_all'].r2:.4f} "
               f"(paper 1.00)")
  # (c): r_t per run
  for tr in trs:
    r = t5_runs.assumption1_ratio(tr)
    if r is not None:
      x, mu, _, _ = t5_runs.smooth(tr.step, r)
      ax[2].plot(x * scale, mu, color=color, linewidth=0.7, alpha=0.8,
                 label=runs if tr is tr0 else None)
  # (e): direction convergence between grid checkpoints
  cos = t5_runs.stack([tr.grid["direction_cos"] for tr in trs])
  if np.isfinite(cos).any():
    _band(ax[4], gs[1:] * scale, list(cos), color, f"{tag}encoder", linewidth=0.9)


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
      ax.errorbar(ps, y, xerr=[ps - los, his - ps], fmt="o", color=color, markersize=3,
                  capsize=2, linewidth=0.9, label=f"{tag}p per run and pooled")
      labels += [name for name, _ in fitted]
    if m["ratio_late"] is not None:
      ax.axvline(m["ratio_late"] ** 2 / 2, color=color, linewidth=0.8, linestyle=":",
                 label=f"{tag}r²/2 = {m['ratio_late'] ** 2 / 2:.3f} (r past 4W)")
  ax.axvline(0.5, **plotting.PAPER_STYLE, label="paper: sqrt(t), p = 0.5")
  ax.set_yticks(np.arange(len(labels)))
  ax.set_yticklabels(labels)
  ax.set_ylim(-0.7, len(labels) + 0.4 + 0.6 * (1 + 2 * len(parts)))
  ax.set_xlabel("exponent p (pooled: seeds and blocks resampled)")
  ax.set_title("(b) p of a·t^p + b (t ≥ W), 95% CI"
               + ("" if labels else f": not comparable, < {MIN_POINTS} points"))
  ax.legend(loc="upper left", fontsize=4.4)


def _plot_mechanism(ax, parts, cfg):
  """(d): the measured late local exponent against r^2 / 2, per run of every configuration."""
  runs = mechanism_runs(parts)
  top = max([0.55] + [max(r["predicted"], r["local_exponent_ci"][1]) for r in runs]) * 1.05
  x = np.linspace(0, top, 2)
  ax.plot(x, x, **plotting.PAPER_STYLE, label="p = r²/2 (the paper's derivation)")
  ax.fill_between(x, x - cfg.mechanism_tolerance, x + cfg.mechanism_tolerance, color="0.85",
                  linewidth=0, label=f"± {cfg.mechanism_tolerance} (criterion)")
  for part, color in zip(parts, PART_COLORS):
    mine = [r for r in runs if r["configuration"] == part.label]
    if mine:
      p = np.array([r["local_exponent"] for r in mine])
      ci = np.array([r["local_exponent_ci"] for r in mine])
      ax.errorbar([r["predicted"] for r in mine], p, yerr=[p - ci[:, 0], ci[:, 1] - p],
                  fmt="o", color=color, markersize=3, capsize=2, linewidth=0.8,
                  label=part.label if len(parts) > 1 else "runs")
  ax.set_xlim(0, top)
  ax.set_ylim(min(0, *(r["local_exponent_ci"][0] for r in runs)) if runs else 0, top * 1.35)
  ax.set_xlabel("r²/2, r = late Adafactor ratio (t > 4W)")
  ax.set_ylabel("late d log‖θ‖ / d log t")
  ax.set_title("(d) mechanism: late exponent vs r²/2"
               + ("" if runs else ": no learning rate recorded"))
  ax.legend(loc="upper left", fontsize=4.6)   # above the diagonal's top: room left by ylim
  ax.grid(alpha=0.3, linewidth=0.5)


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
    ax.bar(x, mean - 1, bottom=1, color=color, width=width * 0.9, alpha=0.75,
           label=f"{part.label}: Spearman ρ = {part.m['layer_spearman']:.2f}")
    if len(runs_f) > 1:
      ax.errorbar(x, mean, yerr=sd, fmt="none", color="black", capsize=1.5, linewidth=0.7)
    lows.append((mean - sd).min())
    highs.append((mean + sd).max())
  if drawn:
    n = max(len(p.m["layer_names"]) for p, _ in drawn)
    ax.set_xticks(np.arange(1, n + 1))
    ax.set_ylim(min(lows) - 0.02, 1 + (max(highs) - 1) * 1.3 + 0.02)
    ax.legend(loc="upper left", fontsize=4.6, title="paper: later layers grow faster",
              title_fontsize=4.6)
  ax.set_xlabel("encoder layer")
  ax.set_ylabel("‖θ_T‖ / ‖θ_0‖ (± seed SD)")
  ax.set_title("(f) growth by layer")


def _subtitle(parts):
  tr0 = parts[0].trs[0]
  if parts[0].run is None:
    return f"{tr0.label}: per step from {tr0.source}\ncheckpoints from {tr0.grid_source}"
  return "\n".join(f"{p.run.describe()}; seeds {', '.join(map(str, p.run.seeds))}"
                   + (" (bands: min-max)" if len(p.run.seeds) > 1 else "") for p in parts)


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


@dataclasses.dataclass
class Part:
  """One configuration's runs and numbers: ``label`` names it in legends, rows and criteria."""
  label: str
  run: Optional[t5_runs.T5RunConfig]   # None for a run read from --model_dir
  trs: list
  m: dict


def _numbers(trs, m) -> dict:
  """fig1.json's numbers for one configuration."""
  return {
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
      "ratio_late_runs": dict(zip([tr.label for tr in trs], m["ratio_late_runs"])),
      "local_exponent_late": {tr.label: e and e._asdict() for tr, e in zip(trs, m["local_late"])},
      "local_exponent_late_mean": m["local_late_mean"],
      "ratio_binned": {tr.label: dict(zip(("step", "mean", "p10", "p90"), t5_runs.smooth(
          tr.step, t5_runs.assumption1_ratio(tr)))) for tr in trs
                       if t5_runs.assumption1_ratio(tr) is not None},
      "layer_growth": dict(zip(m["layer_names"], m["layer_factors"])),
      "layer_spearman": m["layer_spearman"],
  }


def _labelled(items, field: str, label: str, prefix: bool):
  """Criteria (``field="text"``) or rows (``"quantity"``) with the configuration's label in
  front, when several configurations are drawn."""
  if not prefix:
    return list(items)
  return [dataclasses.replace(x, **{field: f"[{label}] {getattr(x, field)}"}) for x in items]


def run_specs(ctx, cfg: Fig1Config) -> list:
  """Every configuration's runs (none with ``--model_dir``)."""
  return [s for run in cfg.configurations() for s in t5_runs.specs(ctx, run)]


def load_parts(ctx, cfg: Fig1Config) -> list[Part]:
  """Every configuration's runs, measured (one Part for a --model_dir run)."""
  if (ctx.options or {}).get("model_dir"):
    trs = t5_runs.load_runs(ctx, cfg.run)
    return [Part(trs[0].label, None, trs, measure(trs, cfg))]
  parts = []
  for run in cfg.configurations():
    trs = t5_runs.load_runs(ctx, run)
    ctx.advance(0, f"{NAME}: fits and bootstrap")
    parts.append(Part(run.short(), run, trs, measure(trs, cfg)))
  return parts


def make(ctx: core.FigureContext, cfg: Fig1Config) -> core.FigureResult:
  parts = load_parts(ctx, cfg)
  several = len(parts) > 1
  files = _plot(ctx, cfg, parts)
  numbers = _numbers(parts[-1].trs, parts[-1].m)   # the profile's run (Figs. 2 and 5's)
  numbers["configuration"] = parts[-1].label
  numbers["beside"] = {p.label: _numbers(p.trs, p.m) for p in parts[:-1]}
  numbers["mechanism_runs"] = mechanism_runs(parts)
  numbers["paper"] = paper.FIG1
  files.append(core.write_numbers(ctx, NAME, numbers))
  rows, crit = [], []
  for part in parts:
    own = criteria(part.m, cfg)
    rows += _labelled(_rows(part.m, part.trs), "quantity", part.label, several)
    if several:
      rows.append(core.Row(f"[{part.label}] verdict of this configuration's criteria", None,
                           verdict_of(own)))
    crit += _labelled(own, "text", part.label, several)
  crit += mechanism_criteria(parts, cfg)
  return core.FigureResult(NAME, TITLE, files, rows, crit, _setup(cfg, parts), _NOTES)


_NOTES = ["r_t is the global ||delta_t|| / (lr_t ||theta_t||): for T5's Adafactor "
          "(parameter scale, clipping 1.0) it is min(RMS(u), 1) per parameter, averaged; "
          "misaligned updates then give ||theta|| ~ t^(r^2/2)."]


def _setup(cfg: Fig1Config, parts) -> list[str]:
  tr0 = parts[0].trs[0]
  if parts[0].run is None:
    setup = [f"run: {tr0.label} ({tr0.source}); checkpoint grid from {tr0.grid_source}"]
  else:
    setup = [f"model and data: {p.run.describe()}" for p in parts]
    setup += [
        "the paper: T5-base, 220M parameters, C4 span corruption, batch 128 x (512 + 114), "
        "T = 2^19, one run",
        f"the paper's T / W = 52.4 and base rate 1.0 kept; W = "
        f"{' and '.join(str(p.run.warmup_steps) for p in parts)} instead of 10^4, so each step "
        "changes the weights "
        f"{' and '.join(f'~{np.sqrt(1e4 / p.run.warmup_steps):.0f}x' for p in parts)} more "
        "than the paper's",
        "104 checkpoints on the paper's 5,100-step grid scaled by T / 2^19 "
        f"({', '.join(str(p.run.grid_interval) for p in parts)} steps apart), read from the "
        "hook's anchor rows, not from written checkpoints",
        f"seeds {', '.join(str(list(p.run.seeds)) for p in parts)}",
    ]
    if len(parts) > 1:
      setup.append(f"two configurations: {parts[0].label}, chosen because Adafactor's update "
                   f"clipping binds there (late r near 1, the paper's condition for sqrt(t)), "
                   f"and {parts[-1].label}, the profile's run (also Figs. 2 and 5), where it "
                   "does not; every criterion is computed per configuration, and the mechanism "
                   "across all their runs")
  g0 = parts[0].m["per_run"][0]
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
  return setup


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
