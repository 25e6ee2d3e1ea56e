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
  per-step norms when the run recorded them (``fig1_growth.norm_series``), else on its checkpoints,
  and are `not comparable` with fewer than MIN_POINTS points;
* (c) Adafactor's update-clipping ratio r_t = ||delta_t|| / (lr_t ||theta_t||);
* (d) the mechanism as a prediction: the measured late local exponent d log||theta|| / d log t
  past 4 W (``fig1_growth.late_exponent``) against r^2 / 2, per run of every configuration;
* (e) cos(theta_a, theta_b) between consecutive grid checkpoints;
* (f) growth factor per encoder layer (the paper: later layers grow faster).

The measurements and criteria are in :mod:`fig1_growth`, the panels in :mod:`fig1_plot`; Fig. 2
draws the same runs' trained T5 against its own initialisation (``subjects.trained_t5``).

Example:
  >>> [c.short() for c in CONFIGS["quick"].configurations()] == [QUICK_CLIPPED.short(),
  ...                                                            t5_runs.PROFILES["quick"].short()]
  True
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from normgrowth_jax.analysis import fits
from normgrowth_jax.figures import core, fig1_growth, fig1_plot, paper, t5_runs
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
  r2_threshold: float = 0.995  # "r^2 = 1.00" to two decimals
  cos_threshold: float = 0.99  # late checkpoint-to-checkpoint cosine
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
    t5_runs.PROFILES["quick"],
    num_encoder_layers=2,
    num_decoder_layers=2,
    batch_size=64,
    warmup_steps=100,
)


SMOKE_CLIPPED = dataclasses.replace(t5_runs.PROFILES["smoke"], batch_size=8)


CONFIGS = {
    "smoke": Fig1Config(t5_runs.PROFILES["smoke"], SMOKE_CLIPPED, n_boot=20),
    "quick": Fig1Config(t5_runs.PROFILES["quick"], QUICK_CLIPPED),
    "full": Fig1Config(t5_runs.PROFILES["full"], n_boot=1000),
}


def work(cfg: Fig1Config) -> int:
  del cfg  # its runs' training is counted from run_specs; the fits take seconds
  return 0


def _rows(m, trs):
  return _law_rows(m) + _mechanism_rows(m) + _growth_rows(m, trs)


def _law_rows(m) -> list:
  """The growth laws' r² and the free exponent, per run and with its interval."""
  if m["exponent"] is None:
    return [
        core.Row(
            "a√t + b from t = 0, r²; growth laws; exponent p",
            paper.FIG1["sqrt_fit_r2"],
            f"not comparable: {m['fit_note']}",
        )
    ]
  src = m["per_run"][0]["source"].split(" (")[0]
  p, lo, hi = m["exponent"]
  rows = [
      core.Row.of(f"a√t + b from t = 0 ({src}), r²", paper.FIG1["sqrt_fit_r2"], m["sqrt_r2_runs"])
  ]
  rows += [
      core.Row.of(
          f"{fits.LAW_LABELS[law]} past warm-up ({src}), r²",
          1.00 if law == "sqrt" else None,
          [g["laws"][law].r2 for g in m["per_run"]],
      )
      for law in fits.LAWS
  ]
  interval = (
      "(pooled; seeds and blocks resampled: covers seed-to-seed variation)"
      if m["pooled"]
      else "(one run; blocks of its residuals: covers its noise, not other seeds)"
  )
  return rows + [
      core.Row.of(
          f"free exponent p (a t^p + b) per run ({src}); ± = seed spread",
          0.5,
          [g["exponent"].p for g in m["per_run"]],
      ),
      core.Row(
          f"free exponent p, 95% interval {interval}",
          "0.5 (implied)",
          f"{p:.3f} [{lo:.3f}, {hi:.3f}]",
      ),
  ]


def _mechanism_rows(m) -> list:
  """The late ratio r and the late local exponent, the mechanism's two sides."""
  rows = []
  if m["ratio_late"] is not None:
    rows.append(
        core.Row(
            "Adafactor ratio r past 4W (RMS); predicted p = r²/2",
            None,
            f"r = {m['ratio_late']:.3f}, r²/2 = {m['ratio_late'] ** 2 / 2:.3f}",
        )
    )
  if m["local_late_mean"] is not None:
    rows.append(
        core.Row.of(
            "local exponent d log‖θ‖ / d log t past 4W (log-log slope) per run; "
            "predicted r²/2; ± = seed spread",
            None,
            [e.p for e in m["local_late"]],
        )
    )
  return rows


def _growth_rows(m, trs) -> list:
  """‖θ‖ from start to end, growth per encoder layer, the direction's convergence."""
  rows = [
      core.Row(
          "‖θ‖ at t = 0 → T",
          None,
          f"{np.mean([tr.grid['param_norm'][0] for tr in trs]):.2f} → "
          f"{np.mean([tr.grid['param_norm'][-1] for tr in trs]):.2f}",
      )
  ]
  for i, g in enumerate(m["layer_names"]):
    rows.append(
        core.Row.of(
            f"growth factor, encoder layer {t5_runs.layer_index(g) + 1}",
            "later layers faster" if g == m["layer_names"][-1] else None,
            [r[i] for r in m["layer_factors_runs"]],
        )
    )
  if m["cos_late"] is not None:
    rows.append(core.Row("cos between checkpoints, first quarter", None, m["cos_early"]))
    rows.append(core.Row("cos between checkpoints, last quarter", "→ 1", m["cos_late"]))
  return rows


@dataclasses.dataclass
class Part:
  """One configuration's runs and numbers: ``label`` names it in legends, rows and criteria."""

  label: str
  run: Optional[t5_runs.T5RunConfig]  # None for a run read from --model_dir
  trs: list
  m: dict


def _numbers(trs, m) -> dict:
  """fig1.json's numbers for one configuration."""
  return {
      "runs": [t5_runs.to_json(tr) for tr in trs],
      "sqrt_fit_r2": m["sqrt_r2_runs"],
      "fit_source": {
          tr.label: {"source": g["source"], "points": g["n_all"], "points_past_warmup": g["n_fit"]}
          for tr, g in zip(trs, m["per_run"])
      },
      "fit_not_comparable": m["fit_note"],
      "law_r2": {
          tr.label: {k: f.r2 for k, f in (g["laws"] or {}).items()}
          for tr, g in zip(trs, m["per_run"])
      },
      "law_fits": {
          tr.label: {k: f._asdict() for k, f in (g["laws"] or {}).items()}
          for tr, g in zip(trs, m["per_run"])
      },
      "exponent": {
          tr.label: g["exponent"] and g["exponent"]._asdict() for tr, g in zip(trs, m["per_run"])
      },
      "exponent_pooled": m["pooled"]._asdict() if m["pooled"] else None,
      "fit_from_step": m["per_run"][0]["fit_from"],
      "ratio_late_rms": m["ratio_late"],
      "ratio_late_runs": dict(zip([tr.label for tr in trs], m["ratio_late_runs"])),
      "local_exponent_late": {tr.label: e and e._asdict() for tr, e in zip(trs, m["local_late"])},
      "local_exponent_late_mean": m["local_late_mean"],
      "ratio_binned": {
          tr.label: dict(
              zip(
                  ("step", "mean", "p10", "p90"),
                  t5_runs.smooth(tr.step, t5_runs.assumption1_ratio(tr)),
              )
          )
          for tr in trs
          if t5_runs.assumption1_ratio(tr) is not None
      },
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
  if ctx.options.model_dir:
    trs = t5_runs.load_runs(ctx, cfg.run)
    return [Part(trs[0].label, None, trs, fig1_growth.measure(trs, cfg))]
  parts = []
  for run in cfg.configurations():
    trs = t5_runs.load_runs(ctx, run)
    ctx.advance(0, f"{NAME}: fits and bootstrap")
    parts.append(Part(run.short(), run, trs, fig1_growth.measure(trs, cfg)))
  return parts


def make(ctx: core.FigureContext, cfg: Fig1Config) -> core.FigureResult:
  parts = load_parts(ctx, cfg)
  several = len(parts) > 1
  files = fig1_plot.plot(ctx.path(NAME), cfg, parts)
  numbers = _numbers(parts[-1].trs, parts[-1].m)  # the profile's run (Figs. 2 and 5's)
  numbers["configuration"] = parts[-1].label
  numbers["beside"] = {p.label: _numbers(p.trs, p.m) for p in parts[:-1]}
  numbers["mechanism_runs"] = fig1_growth.mechanism_runs(parts)
  numbers["paper"] = paper.FIG1
  files.append(core.write_numbers(ctx, NAME, numbers))
  rows, crit = [], []
  for part in parts:
    own = fig1_growth.criteria(part.m, cfg)
    rows += _labelled(_rows(part.m, part.trs), "quantity", part.label, several)
    if several:
      rows.append(
          core.Row(
              f"[{part.label}] verdict of this configuration's criteria", None, verdict_of(own)
          )
      )
    crit += _labelled(own, "text", part.label, several)
  crit += fig1_growth.mechanism_criteria(parts, cfg)
  return core.FigureResult(NAME, TITLE, files, rows, crit, _setup(cfg, parts), _NOTES)


_NOTES = [
    "r_t is the global ||delta_t|| / (lr_t ||theta_t||): for T5's Adafactor "
    "(parameter scale, clipping 1.0) it is min(RMS(u), 1) per parameter, averaged; "
    "misaligned updates then give ||theta|| ~ t^(r^2/2)."
]


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
      setup.append(
          f"two configurations: {parts[0].label}, chosen because Adafactor's update "
          f"clipping binds there (late r near 1, the paper's condition for sqrt(t)), "
          f"and {parts[-1].label}, the profile's run (also Figs. 2 and 5), where it "
          "does not; every criterion is computed per configuration, and the mechanism "
          "across all their runs"
      )
  g0 = parts[0].m["per_run"][0]
  block = g0["exponent"].block if g0["exponent"] else "-"
  setup += [
      f"growth laws fitted on the {g0['source']}: {g0['n_all']} points, compared on the "
      f"{g0['n_fit']} with t >= {g0['fit_from']} (past warm-up); the a√t + b fit uses every "
      f"point from t = 0 (the paper: its 104 checkpoints); the exponent refits at most "
      f"{fig1_growth.EXPONENT_POINTS} evenly spaced points; under {fig1_growth.MIN_POINTS} "
      "points: not comparable",
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
