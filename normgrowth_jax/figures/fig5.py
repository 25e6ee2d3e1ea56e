"""Fig. 5: misaligned updates of slowly growing size, and the derivation they feed.

From the same T5 runs as Fig. 1 (:mod:`~normgrowth_jax.figures.t5_runs`) or ``--model_dir``:

* alignment cos(delta_t, theta_t) and step size ||delta_t|| between the 104 grid checkpoints
  (delta = theta_b - theta_a; the paper: alignment rises to ~0.15, then decays to ~0; the step
  size grows slightly) and per step (binned mean with the 10-90% spread of the raw steps);
* two panels the paper lacks, testing its derivation of sqrt(t): Assumption 1, the ratio
  ||delta_t|| / (lr_t ||theta_t||) (constant if it holds; for T5's Adafactor it is the
  update-clipping ratio), and eq. 2, ||theta_t||^2 - ||theta_0||^2 split into the misaligned
  part sum ||delta_i||^2 and the aligned part 2 sum theta_i . delta_i.

Example:
  >>> step_size_ratio(np.array([0, 10, 20, 30, 40, 50, 60, 70, 80]),
  ...                 np.array([1., 1, 1, 1, 2, 2, 2, 2]), warmup=10)
  2.0
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from normgrowth_jax.analysis import run_reader
from normgrowth_jax.figures import core, fig5_plot, paper, t5_runs
from normgrowth_jax.figures.fig1_growth import MIN_POINTS
from normgrowth_jax.figures.verdict import check

NAME = "fig5"
TITLE = "T5 pretraining: alignment and step size between checkpoints"


@dataclasses.dataclass(frozen=True)
class Fig5Config:
  run: t5_runs.T5RunConfig
  peak_range: tuple = (0.075, 0.3)  # within a factor 2 of the paper's ~0.15
  late_alignment_max: float = 0.05  # "decays to ~0"
  step_growth_range: tuple = (1.0, 2.0)  # "grows slightly": grows, less than doubles


CONFIGS = {p: Fig5Config(t5_runs.PROFILES[p]) for p in ("smoke", "quick", "full")}


def work(cfg: Fig5Config) -> int:
  del cfg  # Fig. 1's runs, counted from run_specs
  return 0


# ----------------------------------------------------------------------------- measurements


def step_size_ratio(grid_step, update_norm, warmup: Optional[int]) -> float:
  """Mean ||theta_b - theta_a|| over the last quarter of the grid pairs past warm-up divided
  by the mean over their first quarter (pairs indexed by their end point grid_step[1:])."""
  ends = np.asarray(grid_step)[1:]
  d = np.asarray(update_norm, np.float64)
  keep = np.isfinite(d) & (ends > (warmup or 0))
  d = d[keep]
  if d.size < 2:
    return float("nan")
  q = max(1, d.size // 4)
  return float(d[-q:].mean() / d[:q].mean())


def alignment_profile(grid_step, alignment, width: int = t5_runs.SMOOTH) -> dict:
  """Peak of the checkpoint-to-checkpoint alignment, where it is, and the late level, read
  from its moving average over ``width`` checkpoints (the paper's checkpoints are 5,100 steps
  apart, ours ~100: a raw maximum would be a noise maximum)."""
  ends = np.asarray(grid_step)[1:].astype(np.float64)
  a = t5_runs.moving_average(alignment, width)
  if not np.isfinite(a).any():
    return {"peak": None, "peak_step": None, "peak_frac": None, "late_mean": None, "late_abs": None}
  i = int(np.nanargmax(a))
  half = ends > ends[-1] / 2
  return {
      "peak": float(a[i]),
      "peak_step": int(ends[i]),
      "peak_frac": float(ends[i] / ends[-1]),
      "late_mean": float(np.nanmean(a[half])),
      "late_abs": float(np.nanmean(np.abs(a[half]))),
  }


def eq2_summary(tr: run_reader.Trajectory) -> Optional[dict]:
  """End-of-run numbers of eq. 2 (norms, not squares, for the report)."""
  e = t5_runs.eq2_terms(tr)
  if e is None:
    return None
  n0 = tr.norm0
  meas, mis, ali = float(e["measured"][-1]), float(e["misaligned"][-1]), float(e["aligned"][-1])
  return {
      "norm0": n0,
      "norm_T": float(tr.param_norm[-1]),
      "norm_misaligned_only": float(np.sqrt(n0**2 + mis)),
      "misaligned": mis,
      "aligned": ali,
      "measured": meas,
      "closure": (mis + ali - meas) / max(abs(meas), 1e-12),
      "aligned_share": ali / meas if meas != 0 else None,
      "exact": tr.every_step,
  }


def ratio_stability(tr: run_reader.Trajectory) -> Optional[dict]:
  """Assumption 1 ratio: RMS per window (< W, W-4W, 4W-16W, > 16W) and its late drift."""
  r = t5_runs.assumption1_ratio(tr)
  if r is None:
    return None
  W = tr.warmup_steps or max(1, tr.train_steps // 52)
  out = {}
  for name, a, b in (
      ("<W", 0, W),
      ("W-4W", W, 4 * W),
      ("4W-16W", 4 * W, 16 * W),
      (">16W", 16 * W, np.inf),
  ):
    v = r[(tr.step > a) & (tr.step <= b) & np.isfinite(r)]
    out[name] = float(np.sqrt(np.mean(v**2))) if v.size else None
  return out


def measure(trs) -> dict:
  al = [alignment_profile(tr.grid["step"], tr.grid["alignment"]) for tr in trs]
  mean_prof = {
      k: (float(np.mean([a[k] for a in al])) if al[0][k] is not None else None) for k in al[0]
  }  # per-run profiles averaged (runs peak at different times)
  ratios = [step_size_ratio(tr.grid["step"], tr.grid["update_norm"], tr.warmup_steps) for tr in trs]
  step_ratio_mean = float(np.nanmean(ratios)) if np.isfinite(ratios).any() else None
  pairs = min(int(np.isfinite(tr.grid["alignment"]).sum()) for tr in trs)
  pair_note = None
  if 0 < pairs < MIN_POINTS:  # e.g. two checkpoints: one pair, a "profile" of one point
    pair_note = (
        f"not comparable: {pairs} checkpoint-to-checkpoint pairs "
        f"({trs[0].grid_source}); at least {MIN_POINTS} needed"
    )
    mean_prof, step_ratio_mean = dict.fromkeys(mean_prof), None
  step_alignment = [float(np.nanmean(tr.alignment[tr.step > tr.train_steps / 2])) for tr in trs]
  return {
      "alignment": al,
      "mean_profile": mean_prof,
      "step_ratio": ratios,
      "step_ratio_mean": step_ratio_mean,
      "pair_note": pair_note,
      "step_alignment_late": step_alignment,
      "eq2": [eq2_summary(tr) for tr in trs],
      "ratio": [ratio_stability(tr) for tr in trs],
      "step_size_first_last": [
          (float(tr.grid["update_norm"][0]), float(tr.grid["update_norm"][-1])) for tr in trs
      ],
  }


def criteria(m: dict, cfg: Fig5Config) -> list:
  prof = m["mean_profile"]
  if prof["peak"] is None:
    return [
        check(
            "alignment between checkpoints rises to ~0.15, then decays to ~0",
            None,
            ours=m.get("pair_note") or "no checkpoint-to-checkpoint quantities in this run",
            paper=paper.FIG5["alignment_peak"],
        ),
        check("step size between checkpoints grows slightly", None, ours="—"),
    ]
  lo, hi = cfg.peak_range
  out = [
      check(
          f"alignment between checkpoints peaks at {lo}-{hi} (paper ~0.15) in the first half "
          f"of the run ({t5_runs.SMOOTH}-checkpoint moving average; per-run peak and place, "
          "mean over runs)",
          lo <= prof["peak"] <= hi and prof["peak_frac"] <= 0.5,
          ours=f"{prof['peak']:.3f} at {prof['peak_frac']:.0%} of T",
          paper=paper.FIG5["alignment_peak"],
      ),
      check(
          f"then decays to ~0: mean |alignment| over the second half < "
          f"{cfg.late_alignment_max} and below a third of the peak",
          prof["late_abs"] < cfg.late_alignment_max and prof["late_abs"] < prof["peak"] / 3,
          ours=f"{prof['late_abs']:.3f} (mean {prof['late_mean']:+.3f})",
          paper="~0",
      ),
  ]
  r = m["step_ratio_mean"]
  glo, ghi = cfg.step_growth_range
  out.append(
      check(
          f"step size between checkpoints grows slightly: last / first quarter past "
          f"warm-up in [{glo}, {ghi}]",
          r is not None and glo <= r <= ghi,
          ours=r,
          paper=f"grows by < {paper.FIG5['step_size_growth_below']:g} "
          "(absolute, 220M parameters)",
      )
  )
  return out


# ----------------------------------------------------------------------------- plot


# ----------------------------------------------------------------------------- the figure


def _row(quantity: str, paper_value, values, measured: bool = True) -> core.Row:
  """The row of per-run ``values``, or no number where they were not ``measured``."""
  if not measured:
    return core.Row(quantity, paper_value, None)
  return core.Row.of(quantity, paper_value, values)


def _rows(m: dict) -> list:
  peaked = m["mean_profile"]["peak"] is not None
  rows = [
      _row(
          f"peak alignment between checkpoints ({t5_runs.SMOOTH}-checkpoint average)",
          paper.FIG5["alignment_peak"],
          [a["peak"] for a in m["alignment"]],
          peaked,
      ),
      _row(
          "where it peaks (fraction of T)", None, [a["peak_frac"] for a in m["alignment"]], peaked
      ),
      _row(
          "mean alignment between checkpoints, second half",
          "~0",
          [a["late_mean"] for a in m["alignment"]],
          peaked,
      ),
      core.Row.of("mean alignment per step, second half", None, m["step_alignment_late"]),
      _row(
          "step size between checkpoints: last / first quarter past warm-up",
          "grows slightly",
          m["step_ratio"],
          np.isfinite(m["step_ratio"]).all(),
      ),
      core.Row(
          "step size between checkpoints: first → last pair",
          "growth < 20 (absolute)",
          f"{np.mean([a for a, _ in m['step_size_first_last']]):.3g} → "
          f"{np.mean([b for _, b in m['step_size_first_last']]):.3g}",
      ),
  ]
  for name in ("<W", "W-4W", "4W-16W", ">16W"):
    vals = [r[name] for r in m["ratio"] if r is not None and r[name] is not None]
    if vals:
      rows.append(
          core.Row.of(
              f"Assumption 1 ratio ‖δ‖/(lr‖θ‖), RMS over t in {name}", "constant (assumed)", vals
          )
      )
  eq = [q for q in m["eq2"] if q is not None]
  if eq:
    rows += [
        core.Row.of("‖θ_T‖ measured", None, [q["norm_T"] for q in eq]),
        core.Row.of(
            "‖θ_T‖ from the misaligned part alone, √(‖θ_0‖² + Σ‖δ‖²)",
            "= measured (assumed)",
            [q["norm_misaligned_only"] for q in eq],
        ),
        core.Row.of(
            "aligned part 2Σθ·δ / measured ‖θ_T‖² − ‖θ_0‖²",
            "0 (assumed)",
            [q["aligned_share"] for q in eq],
        ),
        core.Row.of(
            "eq. 2 closure |mis + ali − measured| / measured", None, [abs(q["closure"]) for q in eq]
        ),
    ]
  return rows


def run_specs(ctx, cfg: Fig5Config) -> list:
  """Fig. 1's profile run (none with ``--model_dir``)."""
  return t5_runs.specs(ctx, cfg.run)


def make(ctx: core.FigureContext, cfg: Fig5Config) -> core.FigureResult:
  trs = t5_runs.load_runs(ctx, cfg.run)
  m = measure(trs)
  files = fig5_plot.plot(ctx.path(NAME), cfg, trs, m)
  binned = {}
  for tr in trs:
    b = {}
    for key, v in (
        ("alignment", tr.alignment),
        ("update_norm", tr.update_norm),
        ("assumption1_ratio", t5_runs.assumption1_ratio(tr)),
    ):
      if v is not None:
        b[key] = dict(zip(("step", "mean", "p10", "p90"), t5_runs.smooth(tr.step, v)))
    e = t5_runs.eq2_terms(tr)
    if e is not None:
      idx = np.unique(np.linspace(0, len(e["step"]) - 1, 200).astype(int))
      b["eq2"] = {k: np.asarray(e[k])[idx] for k in ("step", "measured", "misaligned", "aligned")}
    binned[tr.label] = b
  numbers = {
      "runs": [t5_runs.to_json(tr) for tr in trs],
      "per_step_binned": binned,
      "alignment_profile": m["alignment"],
      "step_size_ratio": [r if np.isfinite(r) else None for r in m["step_ratio"]],
      "eq2": m["eq2"],
      "assumption1_ratio_windows": m["ratio"],
      "paper": paper.FIG5,
  }
  files.append(core.write_numbers(ctx, NAME, numbers))
  from_dir = bool(ctx.options.model_dir)
  tr0 = trs[0]
  setup = (
      [f"run: {tr0.label} ({tr0.source}); checkpoint grid from {tr0.grid_source}"]
      if from_dir
      else [
          f"the runs of Fig. 1: {cfg.run.describe()}",
          f"checkpoints {cfg.run.grid_interval} steps apart (the paper: ~5,100), "
          "quantities from the hook's anchor rows and norms (exact identities)",
      ]
  )
  setup.append(
      "the paper's '< 20' is an absolute change over 220M parameters; at our size "
      "the scale-free check is the ratio of late to early step size"
  )
  eq = [q for q in m["eq2"] if q is not None]
  notes = []
  if eq:
    q = eq[0]
    notes.append(
        f"eq. 2 ({tr0.label}): ||theta_T|| = {q['norm_T']:.2f} measured; the misaligned part "
        f"alone predicts {q['norm_misaligned_only']:.2f}; the aligned part 2 sum theta.delta "
        f"= {q['aligned']:.1f} is {q['aligned_share']:+.0%} of ||theta_T||^2 - ||theta_0||^2 "
        f"= {q['measured']:.1f}" + ("" if q["exact"] else " (estimated from every k-th step)")
    )
  return core.FigureResult(NAME, TITLE, files, _rows(m), criteria(m, cfg), setup, notes)
