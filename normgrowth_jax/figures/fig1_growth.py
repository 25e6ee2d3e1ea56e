"""Fig. 1's measurements: growth laws, exponents, the update ratio r_t and the criteria.

From a configuration's T5 runs (``run_reader.Trajectory`` each): the a sqrt(t) + b fit from
t = 0 and four laws past warm-up (:func:`growth_law`), the free exponent of a t^p + b per run
and pooled over seeds (:func:`pooled_exponent`), the late ratio r and the late local exponent
(the mechanism's prediction: r^2 / 2), growth per encoder layer; then the per-configuration
criteria (:func:`criteria`) and the mechanism's across configurations
(:func:`mechanism_criteria`).

Example:
  >>> rows = {"sqrt": 0.999, "linear": 0.97, "quarter": 0.98, "log": 0.95}
  >>> best_law(rows)
  'sqrt'
"""

from __future__ import annotations

from typing import Optional, TYPE_CHECKING

import numpy as np

from normgrowth_jax.analysis import fits, run_reader
from normgrowth_jax.figures import paper, t5_runs
from normgrowth_jax.figures.verdict import check

if TYPE_CHECKING:
  from normgrowth_jax.figures.fig1 import Fig1Config


def best_law(r2: dict) -> str:
  """The law with the highest r^2."""
  return max(r2, key=r2.get)


MIN_POINTS = 20  # fewer points than this: a fit's r^2 or exponent is not comparable


EXPONENT_POINTS = 2000  # the exponent (and its bootstrap) refits at most this many points


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
  return (
      tr.grid["step"].astype(np.float64),
      tr.grid["param_norm"],
      f"checkpoint grid ({tr.grid_source})",
  )


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
  out = {
      "source": source,
      "n_all": int(t.size),
      "n_fit": int(w.sum()),
      "fit_from": int(t[w][0]) if w.any() else None,
      "sqrt_all": None,
      "laws": None,
      "exponent": None,
      "note": None,
  }
  if t.size < MIN_POINTS or w.sum() < MIN_POINTS:
    out["note"] = (
        f"{tr.label}: {int(w.sum())} points past warm-up ({t.size} in all) from the "
        f"{source}; at least {MIN_POINTS} needed for a growth-law fit"
    )
    return out
  out["sqrt_all"] = fits.fit_sqrt(t, y)  # the paper's fit: every point from t = 0
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
  return float(np.sqrt(np.mean(v**2))) if v.size else None


def late_exponent(
    tr: run_reader.Trajectory, n_boot: int, seed: int = 0
) -> Optional[fits.LocalExponent]:
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
  laws = [
      f"a sqrt(t) + b from t = 0: r^2 rounds to 1.00 (>= {cfg.r2_threshold})",
      "sqrt(t) fits better than linear, t^(1/4) and log t past warm-up (highest r^2)",
      "free exponent of a t^p + b: 0.5 inside the 95% interval",
  ]
  if m["exponent"] is None:
    out = [check(text, None, ours=f"not comparable: {m['fit_note']}") for text in laws]
  else:
    p, lo, hi = m["exponent"]
    out = [
        check(
            laws[0],
            m["sqrt_r2"] >= cfg.r2_threshold,
            ours=m["sqrt_r2"],
            paper=paper.FIG1["sqrt_fit_r2"],
        ),
        check(
            laws[1],
            m["best_law"] == "sqrt",
            ours=f"best: {m['best_law']}",
            paper="sqrt (r^2 = 1.00)",
        ),
        check(laws[2], lo <= 0.5 <= hi, ours=f"{p:.3f} [{lo:.3f}, {hi:.3f}]", paper="0.5 (sqrt)"),
    ]
  return out + [_layer_criterion(m), _direction_criterion(m, cfg)]


def _layer_criterion(m: dict):
  """Later layers grow faster (the paper's per-layer observation)."""
  if not m["layer_factors"]:
    return check("later layers grow faster", None, ours="no per-layer norms")
  f = m["layer_factors"]
  return check(
      "later layers grow faster (growth factor rises with depth: Spearman > 0 and last > first)",
      m["layer_spearman"] > 0 and f[-1] > f[0],
      ours=f"rho {m['layer_spearman']:.2f}; x{f[0]:.3f} -> x{f[-1]:.3f}",
      paper="later layers faster",
  )


def _direction_criterion(m: dict, cfg: Fig1Config):
  """The direction converges: late checkpoint-to-checkpoint cosines near 1, every layer's
  too, and the angle shrinking."""
  if m["cos_late"] is None:
    return check(
        "cos(theta_t, theta_t+1) between checkpoints -> 1",
        None,
        ours="no checkpoint-to-checkpoint angles in this run",
    )
  layers = m["layer_cos_late_min"]
  passed = (
      m["cos_late"] >= cfg.cos_threshold
      and m["angle_late"] < m["angle_early"]
      and (layers is None or layers >= cfg.cos_threshold)
  )
  return check(
      f"cos(theta_t, theta_t+1) between checkpoints -> 1 (last quarter >= "
      f"{cfg.cos_threshold}, every layer too, and rising)",
      passed,
      ours=f"{m['cos_early']:.4f} -> {m['cos_late']:.5f}"
      + (f" (layers >= {layers:.5f})" if layers is not None else ""),
      paper="-> 1",
  )


def measure(trs, cfg: Fig1Config) -> dict:
  """Every number of the figure and its criteria, from the runs' trajectories."""
  per = [growth_law(tr, cfg.n_boot, seed=i) for i, tr in enumerate(trs)]
  fitted = all(g["laws"] is not None for g in per)
  pooled = pooled_exponent(trs, cfg.n_boot)
  law_r2 = (
      {k: float(np.mean([g["laws"][k].r2 for g in per])) for k in fits.LAWS} if fitted else None
  )
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
      "per_run": per,
      "pooled": pooled,
      "local_late": local,
      "local_late_mean": (
          float(np.mean([e.p for e in local])) if all(e is not None for e in local) else None
      ),
      "fit_note": "; ".join(g["note"] for g in per if g["note"]) or None,
      "sqrt_r2": float(np.mean([g["sqrt_all"].r2 for g in per])) if fitted else None,
      "sqrt_r2_runs": [g["sqrt_all"].r2 for g in per] if fitted else None,
      "law_r2": law_r2,
      "best_law": best_law(law_r2) if fitted else None,
      "exponent": (exp.p, exp.lo, exp.hi) if fitted else None,
      "layer_names": names,
      "layer_factors": mean_f,
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
        out.append(
            {
                "configuration": part.label,
                "run": tr.label,
                "ratio_late": r,
                "predicted": r * r / 2,
                "local_exponent": e.p,
                "local_exponent_ci": [e.lo, e.hi],
            }
        )
  return out


def mechanism_criteria(parts, cfg: Fig1Config) -> list:
  """The paper's mechanism as two falsifiable checks across configurations: where clipping
  binds (late r >= ``ratio_threshold``) the norm follows sqrt(t); and in every run the late
  local exponent is r^2 / 2 (within ``mechanism_tolerance``, for ``mechanism_share`` of runs)."""
  text = (
      f"where clipping binds (late r >= {cfg.ratio_threshold}): a√t + b from t = 0 r² >= "
      f"{cfg.clipped_r2_threshold} and 0.5 inside the exponent's 95% interval"
  )
  measured = [p for p in parts if p.m["ratio_late"] is not None]
  bound = [p for p in measured if p.m["ratio_late"] >= cfg.ratio_threshold]
  if not bound:
    seen = ", ".join(f"{p.label}: r = {p.m['ratio_late']:.2f}" for p in measured)
    out = [
        check(
            text,
            None,
            ours=f"no configuration has late r >= {cfg.ratio_threshold}"
            + (f" ({seen})" if seen else " (no learning rate recorded)"),
            paper="sqrt(t), r^2 = 1.00",
        )
    ]
  else:

    def holds(m):
      return (
          m["exponent"] is not None
          and m["sqrt_r2"] >= cfg.clipped_r2_threshold
          and m["exponent"][1] <= 0.5 <= m["exponent"][2]
      )

    ours = "; ".join(
        f"{p.label}: r = {p.m['ratio_late']:.2f}, "
        + (
            f"r² = {p.m['sqrt_r2']:.3f}, p = {p.m['exponent'][0]:.2f} "
            f"[{p.m['exponent'][1]:.2f}, {p.m['exponent'][2]:.2f}]"
            if p.m["exponent"] is not None
            else "not comparable"
        )
        for p in bound
    )
    out = [check(text, all(holds(p.m) for p in bound), ours=ours, paper="sqrt(t), r^2 = 1.00")]
  runs = mechanism_runs(parts)
  text = (
      f"mechanism: late local exponent within {cfg.mechanism_tolerance} of r²/2 in >= "
      f"{cfg.mechanism_share:.0%} of the runs (every configuration's seeds)"
  )
  if not runs:
    out.append(check(text, None, ours="no run with both r and a late exponent"))
  else:
    gaps = np.array([abs(r["local_exponent"] - r["predicted"]) for r in runs])
    within = int((gaps <= cfg.mechanism_tolerance).sum())
    out.append(
        check(
            text,
            within >= cfg.mechanism_share * len(runs),
            ours=f"{within} of {len(runs)} runs (largest gap {gaps.max():.3f})",
            paper="p = r²/2 (derivation)",
        )
    )
  return out
