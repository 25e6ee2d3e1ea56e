"""Curve fits for norm trajectories: ``a sqrt(t) + b`` (the paper's Fig. 1) and power laws.

Also the growth-law comparison of Fig. 1: :func:`fit_law` (sqrt, linear, t^(1/4), log),
:func:`fit_offset_power` (``a t^p + b`` with a free, optionally shared exponent),
:func:`bootstrap_exponent` (its moving-block bootstrap confidence interval: residual noise of
the given series only) and :func:`bootstrap_exponent_runs` (runs resampled too: seed-to-seed
variation), and the local exponent d log y / d log t over a window (:func:`local_exponent`,
:func:`local_exponent_curve`), which the paper's mechanism predicts to be r^2 / 2.

All fits are ordinary least squares in float64 NumPy; ``r2`` is the coefficient of
determination ``1 - SS_res / SS_tot`` of the fitted curve on the data as given (for the power
law: on the original scale, with the log-log ``r2`` alongside).

Example:
  >>> import numpy as np
  >>> t = np.arange(1.0, 101.0)
  >>> fit = fit_sqrt(t, 3.0 * np.sqrt(t) + 2.0)
  >>> round(fit.a, 6), round(fit.b, 6), round(fit.r2, 6)
  (3.0, 2.0, 1.0)
  >>> p = fit_power_law(t, 5.0 * t ** 0.5)
  >>> round(p.exponent, 6), round(p.scale, 6)
  (0.5, 5.0)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SqrtFit(NamedTuple):
  """``y ~ a sqrt(t) + b`` with its coefficient of determination."""

  a: float
  b: float
  r2: float

  def __call__(self, t):
    return self.a * np.sqrt(np.asarray(t, np.float64)) + self.b


class PowerLawFit(NamedTuple):
  """``y ~ scale * t ** exponent``; ``r2`` on the original scale, ``r2_log`` in log-log."""

  scale: float
  exponent: float
  r2: float
  r2_log: float

  def __call__(self, t):
    return self.scale * np.asarray(t, np.float64) ** self.exponent


def r_squared(y, y_hat) -> float:
  """``1 - SS_res / SS_tot`` (1.0 for a perfect fit of constant data)."""
  y = np.asarray(y, np.float64)
  y_hat = np.asarray(y_hat, np.float64)
  ss_res = float(np.sum((y - y_hat) ** 2))
  ss_tot = float(np.sum((y - y.mean()) ** 2))
  if ss_tot == 0.0:
    return 1.0 if ss_res == 0.0 else 0.0
  return 1.0 - ss_res / ss_tot


def _clean(t, y, positive: bool, params: int = 2):
  """The finite points; more of them than the fit has parameters (else r^2 = 1 by design)."""
  t = np.asarray(t, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  if t.shape != y.shape:
    raise ValueError(f"t and y must have the same length, got {t.shape} and {y.shape}.")
  keep = np.isfinite(t) & np.isfinite(y) & (t >= 0)
  if positive:
    keep &= (t > 0) & (y > 0)
  if keep.sum() <= params:
    raise ValueError(
        f"Need at least {params + 1} finite points (t >= 0"
        + (", t > 0 and y > 0 for a power law" if positive else "")
        + f") to fit {params} parameters, got {int(keep.sum())}: a curve through "
        "every point has r^2 = 1 whatever the law. Record more steps."
    )
  return t[keep], y[keep]


def fit_sqrt(t, y) -> SqrtFit:
  """Least-squares ``y = a sqrt(t) + b`` over the finite points with ``t >= 0``.

  Args:
    t: steps, shape [n].
    y: values (e.g. parameter norms), shape [n].

  Returns:
    SqrtFit(a, b, r2).
  """
  t, y = _clean(t, y, positive=False)
  design = np.stack([np.sqrt(t), np.ones_like(t)], axis=1)  # [n, 2]
  (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
  return SqrtFit(float(a), float(b), r_squared(y, design @ np.array([a, b])))


def fit_power_law(t, y) -> PowerLawFit:
  """``y = scale * t ** exponent`` by least squares in log-log space (t > 0, y > 0 only).

  Args:
    t: steps, shape [n].
    y: values, shape [n].

  Returns:
    PowerLawFit(scale, exponent, r2 on the original scale, r2_log in log-log space).
  """
  t, y = _clean(t, y, positive=True)
  lt, ly = np.log(t), np.log(y)
  design = np.stack([lt, np.ones_like(lt)], axis=1)
  (k, log_c), *_ = np.linalg.lstsq(design, ly, rcond=None)
  scale = float(np.exp(log_c))
  return PowerLawFit(
      scale, float(k), r_squared(y, scale * t**k), r_squared(ly, design @ np.array([k, log_c]))
  )


# ----------------------------------------------------------------------------- growth laws

LAWS = {  # name -> the regressor x(t) of y = a x(t) + b
    "sqrt": np.sqrt,
    "linear": lambda t: t,
    "quarter": lambda t: t**0.25,
    "log": np.log,
}
LAW_LABELS = {
    "sqrt": "a√t + b",
    "linear": "a t + b",
    "quarter": "a t^(1/4) + b",
    "log": "a log t + b",
}


class LawFit(NamedTuple):
  """``y ~ a x(t) + b`` for one law of :data:`LAWS`, with its r^2."""

  law: str
  a: float
  b: float
  r2: float

  def __call__(self, t):
    return self.a * LAWS[self.law](np.asarray(t, np.float64)) + self.b


def fit_law(t, y, law: str) -> LawFit:
  """Least-squares ``y = a x(t) + b`` with x from :data:`LAWS` ("log" needs t > 0).

  Example:
    >>> t = np.arange(1.0, 50.0)
    >>> [round(fit_law(t, 2 * np.log(t) + 1, k).r2, 3) for k in ("log", "sqrt", "linear")]
    [1.0, 0.939, 0.827]
  """
  if law not in LAWS:
    raise ValueError(f"Unknown law {law!r}; choose from {', '.join(LAWS)}.")
  t, y = _clean(t, y, positive=(law == "log"))
  x = LAWS[law](t)
  design = np.stack([x, np.ones_like(x)], axis=1)
  (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
  return LawFit(law, float(a), float(b), r_squared(y, design @ np.array([a, b])))


class OffsetPowerFit(NamedTuple):
  """``y_s ~ a_s t^p + b_s`` with one exponent ``p`` shared by every series s.

  ``a`` and ``b`` are tuples (one entry per series); ``r2`` is over all points pooled.
  """

  p: float
  a: tuple
  b: tuple
  r2: float


P_BOUNDS = (0.01, 2.0)


def _profile_sse(p, ts, ys):
  """Residual sum of squares of ``y = a t^p + b`` at fixed exponent(s), summed over series.

  ``p`` is a scalar or an array of exponents; returns (sse with p's shape, [(a, b) per series]
  for a scalar p). Closed-form simple regression per series, vectorised over p.
  """
  pv = np.atleast_1d(np.asarray(p, np.float64))
  sse, coefs = np.zeros(pv.shape), []
  for t, y in zip(ts, ys):
    x = t[None, :] ** pv[:, None]  # [P, n]
    xm, ym = x.mean(1, keepdims=True), y.mean()
    sxx = np.sum((x - xm) ** 2, 1)
    sxy = np.sum((x - xm) * (y - ym), 1)
    a = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    b = ym - a * xm[:, 0]
    sse += np.sum((y[None, :] - (a[:, None] * x + b[:, None])) ** 2, 1)
    coefs.append((float(a[0]), float(b[0])))
  return (float(sse[0]) if np.ndim(p) == 0 else sse), coefs


def fit_offset_power(ts, ys, bounds=P_BOUNDS) -> OffsetPowerFit:
  """Least-squares ``y = a t^p + b`` with a free exponent, for one series or several (pooled).

  For fixed p the fit is linear in (a, b), so p is found by minimising the profiled residual:
  a grid over ``bounds`` (log-spaced), then a bounded scalar search around the best node.

  Args:
    ts, ys: one series (arrays [n]) or a list of series sharing p (per-series a, b).
    bounds: the exponent's search interval.

  Example:
    >>> t = np.linspace(0, 1000, 104)
    >>> f = fit_offset_power(t, 3 * t ** 0.5 + 7)
    >>> round(f.p, 4), round(f.a[0], 3), round(f.b[0], 3)
    (0.5, 3.0, 7.0)
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top

  if np.ndim(ts[0]) == 0:
    ts, ys = [ts], [ys]
  pairs = [_clean(t, y, positive=False, params=3) for t, y in zip(ts, ys)]
  ts, ys = [t for t, _ in pairs], [y for _, y in pairs]
  grid = np.geomspace(bounds[0], bounds[1], 60)
  sse = _profile_sse(grid, ts, ys)[0]
  i = int(np.argmin(sse))
  lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
  res = optimize.minimize_scalar(
      lambda p: _profile_sse(p, ts, ys)[0],
      bounds=(lo, hi),
      method="bounded",
      options={"xatol": 1e-7},
  )
  p = float(res.x) if res.fun <= sse[i] else float(grid[i])
  total, coefs = _profile_sse(p, ts, ys)
  y_all = np.concatenate(ys)
  ss_tot = float(np.sum((y_all - y_all.mean()) ** 2))
  r2 = 1.0 - total / ss_tot if ss_tot > 0 else 1.0
  return OffsetPowerFit(p, tuple(float(c[0]) for c in coefs), tuple(float(c[1]) for c in coefs), r2)


class ExponentCI(NamedTuple):
  """A free exponent with its block-bootstrap confidence interval."""

  p: float
  lo: float
  hi: float
  block: int  # block length used (points)
  n_boot: int


def decorrelation_length(residuals) -> int:
  """The first lag at which the residuals' autocorrelation drops to zero or below (>= 1)."""
  e = np.asarray(residuals, np.float64)
  e = e - e.mean()
  den = float(e @ e)
  if den == 0.0:
    return 1
  for lag in range(1, len(e)):
    if float(e[:-lag] @ e[lag:]) / den <= 0.0:
      return lag
  return len(e)


def bootstrap_exponent(
    ts,
    ys,
    n_boot: int = 400,
    level: float = 0.95,
    block: int | None = None,
    seed: int = 0,
    bounds=P_BOUNDS,
) -> ExponentCI:
  """Exponent p of ``a t^p + b`` with a moving-block bootstrap confidence interval.

  The residuals of a growth curve are strongly autocorrelated (the curve wiggles slowly about
  the fit), so resampling single points would understate the uncertainty. Each replicate adds
  to the fitted curve a circular moving-block resample of each series' own residuals and refits
  p (series keep their own a, b; p is shared when several series are given). The block length
  is, unless given, the larger of ceil(n^(1/3)) and the residuals' decorrelation length (the
  first lag where their autocorrelation reaches zero, pooled as the maximum over series),
  capped at n/2. The interval is the percentile interval of the replicates.

  Example:
    >>> rng = np.random.default_rng(0)
    >>> t = np.linspace(0, 1e4, 104)
    >>> ci = bootstrap_exponent(t, 2 * t ** 0.5 + 30 + rng.normal(0, 0.5, t.size), n_boot=50)
    >>> ci.lo < 0.5 < ci.hi, ci.hi - ci.lo < 0.1
    (True, True)
  """
  if np.ndim(ts[0]) == 0:
    ts, ys = [ts], [ys]
  pairs = [_clean(t, y, positive=False, params=3) for t, y in zip(ts, ys)]
  ts, ys = [t for t, _ in pairs], [y for _, y in pairs]
  fit = fit_offset_power(ts, ys, bounds)
  fitted = [a * t**fit.p + b for t, a, b in zip(ts, fit.a, fit.b)]
  resid = [y - f for y, f in zip(ys, fitted)]
  block = _block_length(resid, block)
  rng = np.random.default_rng(seed)
  ps = []
  for _ in range(n_boot):
    new = [f + e[_block_index(rng, len(e), block)] for f, e in zip(fitted, resid)]
    ps.append(fit_offset_power(ts, new, bounds).p)
  return ExponentCI(fit.p, *_percentiles(ps, level), block, n_boot)


def _block_length(resid, block: int | None) -> int:
  """The given block length, else max(ceil(n^(1/3)), the residuals' decorrelation length)
  (the maximum over series), capped at n/2 of the shortest series."""
  n = min(len(e) for e in resid)
  if block is None:
    block = max(int(np.ceil(n ** (1 / 3))), max(decorrelation_length(e) for e in resid))
  return int(min(max(block, 1), max(n // 2, 1)))


def _block_index(rng, m: int, block: int, shape: tuple = ()) -> np.ndarray:
  """Indices of circular moving-block resamples of a series of length m: shape + [m]."""
  starts = rng.integers(0, m, shape + (-(-m // block),))
  idx = starts[..., :, None] + np.arange(block)
  return idx.reshape(shape + (-1,))[..., :m] % m


def _percentiles(values, level: float) -> tuple[float, float]:
  q = (1 - level) / 2
  lo, hi = np.quantile(values, [q, 1 - q])
  return float(lo), float(hi)


def bootstrap_exponent_runs(
    ts,
    ys,
    n_boot: int = 400,
    level: float = 0.95,
    block: int | None = None,
    seed: int = 0,
    bounds=P_BOUNDS,
) -> ExponentCI:
  """The pooled exponent p of ``a_s t^p + b_s`` with a run-level (two-stage) bootstrap.

  :func:`bootstrap_exponent` on several series resamples only each series' residuals about
  the pooled fit, so its interval covers the noise of these particular runs, not the
  variation from run to run (seeds, machines): runs whose own exponents differ get an
  interval narrower than their spread. Here each replicate draws the runs with replacement,
  then rebuilds each drawn run from its *own* fit ``a_s t^(p_s) + b_s`` plus a circular
  moving-block resample of its own residuals (block length as in :func:`bootstrap_exponent`),
  and refits the shared p. The percentile interval thus covers both the seed-to-seed spread
  of the exponent and each run's residual noise. With few runs (3: at most 10 distinct
  draws) it is still narrower than a t-interval on the per-run exponents would be.

  Args:
    ts, ys: lists of series (at least two).
    n_boot, level, block, seed, bounds: as in :func:`bootstrap_exponent`.

  Returns:
    ExponentCI(p of the pooled fit of every run, lo, hi, block, n_boot).

  Example:
    >>> t = np.linspace(0, 1e4, 104)
    >>> ys = [2 * t ** p + 30 for p in (0.4, 0.5, 0.6)]
    >>> ci = bootstrap_exponent_runs([t] * 3, ys, n_boot=100)
    >>> round(ci.p, 2), ci.lo < 0.5 < ci.hi       # the pooled fit leans to the steepest run
    (0.58, True)
    >>> bootstrap_exponent([t] * 3, ys, n_boot=100).lo > 0.55   # blocks only: far too narrow
    True
  """
  if len(ts) < 2:
    raise ValueError(f"A run-level bootstrap needs at least two runs, got {len(ts)}.")
  pairs = [_clean(t, y, positive=False, params=3) for t, y in zip(ts, ys)]
  ts, ys = [t for t, _ in pairs], [y for _, y in pairs]
  own = [fit_offset_power(t, y, bounds) for t, y in zip(ts, ys)]
  fitted = [f.a[0] * t**f.p + f.b[0] for t, f in zip(ts, own)]
  resid = [y - f for y, f in zip(ys, fitted)]
  block = _block_length(resid, block)
  rng = np.random.default_rng(seed)
  ps = []
  for _ in range(n_boot):
    runs = rng.integers(0, len(ts), len(ts))
    new = [fitted[i] + resid[i][_block_index(rng, len(resid[i]), block)] for i in runs]
    ps.append(fit_offset_power([ts[i] for i in runs], new, bounds).p)
  return ExponentCI(fit_offset_power(ts, ys, bounds).p, *_percentiles(ps, level), block, n_boot)


# ----------------------------------------------------------------------------- local exponent


class LocalExponent(NamedTuple):
  """d log y / d log t over a window, with its block-bootstrap confidence interval.

  ``t_centre`` is exp(mean log t) over the window's points: the regression's centre, where a
  smoothly curving log-log trajectory has (to first order) the fitted slope.
  """

  p: float
  lo: float
  hi: float
  t_centre: float
  n: int  # points in the window
  block: int  # block length used (points)
  n_boot: int


def _loglog(t, y, t_min, t_max):
  """log t, log y of the finite points with t_min < t <= t_max, t > 0 and y > 0."""
  t, y = _clean(t, y, positive=True)
  keep = (t > (t_min or 0.0)) & (t <= (np.inf if t_max is None else t_max))
  if keep.sum() < 3:
    raise ValueError(
        f"Need at least 3 points with {t_min or 0} < t <= {t_max} for a local "
        f"exponent, got {int(keep.sum())}."
    )
  return np.log(t[keep]), np.log(y[keep])


def local_exponent(
    t,
    y,
    t_min=None,
    t_max=None,
    n_boot: int = 400,
    level: float = 0.95,
    block: int | None = None,
    seed: int = 0,
) -> LocalExponent:
  """The slope of log y on log t over the points with ``t_min < t <= t_max`` (OLS).

  For y = c t^p it is p exactly; for a curving trajectory it is the local exponent
  d log y / d log t near the window's centre (e.g. ``t_min = 4 W``: the late exponent that the
  paper's mechanism predicts to equal r^2 / 2). The interval is the percentile interval of a
  circular moving-block bootstrap of the log-log residuals (block length as in
  :func:`bootstrap_exponent`: the residuals' decorrelation length or n^(1/3), at most n/2), so
  it covers the noise about the fitted line within this one series, not run-to-run variation;
  when the trajectory curves within the window the residuals are one long wave, the blocks are
  long and the interval widens with the curvature. A wide window averages the curve: for
  a t^p + b over t = 800 .. 20,000 the slope is 0.392 where d log y / d log t at t_centre is
  0.410; over a factor 2 in t the two agree to ~1e-3.

  Args:
    t, y: steps and values (t > 0, y > 0 are used), shape [n].
    t_min, t_max: the window (None: unbounded).
    n_boot, level, block, seed: the bootstrap.

  Returns:
    LocalExponent(p, lo, hi, t_centre, n, block, n_boot).

  Example:
    >>> t = np.arange(1.0, 1001.0)
    >>> e = local_exponent(t, 2.0 * t ** 0.125, t_min=100)
    >>> round(e.p, 9), e.n, round(e.t_centre)
    (0.125, 900, 476)
    >>> e = local_exponent(t, t ** 0.5 + 10.0, t_min=100)   # below 0.5: the offset
    >>> bool(e.p < 0.5)
    True
  """
  lt, ly = _loglog(t, y, t_min, t_max)
  xc = lt - lt.mean()
  sxx = float(xc @ xc)
  if sxx == 0.0:
    raise ValueError("A local exponent needs at least two distinct t in its window.")
  p = float(xc @ (ly - ly.mean()) / sxx)
  resid = ly - ly.mean() - p * xc
  block = _block_length([resid], block)
  rng = np.random.default_rng(seed)
  chunk = max(1, 2**22 // lt.size)  # replicates per vectorised pass (bounded memory)
  ps = np.concatenate(
      [
          p + resid[_block_index(rng, lt.size, block, (min(chunk, n_boot - i),))] @ xc / sxx
          for i in range(0, n_boot, chunk)
      ]
  )
  return LocalExponent(
      p, *_percentiles(ps, level), float(np.exp(lt.mean())), int(lt.size), block, n_boot
  )


class LocalExponentCurve(NamedTuple):
  """The local exponent in sliding log-spaced windows (NaN where a window has < 3 points)."""

  t_centre: np.ndarray  # [points] exp(mean log t) of each window's points
  p: np.ndarray  # [points]
  n: np.ndarray  # [points] points per window


def local_exponent_curve(t, y, points: int = 16, width: float = 2.0) -> LocalExponentCurve:
  """:func:`local_exponent`'s slope (no interval) in windows ``[c / sqrt(width), c sqrt(width)]``
  whose centres c are ``points`` log-spaced values spanning the positive t.

  Example:
    >>> t = np.arange(10.0, 10001.0)
    >>> c = local_exponent_curve(t, t ** 0.5 + 10.0, points=4)
    >>> bool(np.all(np.diff(c.p) > 0) and c.p[-1] < 0.5)
    True
  """
  t, y = _clean(t, y, positive=True)
  lt, ly = np.log(t), np.log(y)
  half = np.log(width) / 2
  if lt.max() - lt.min() < 2 * half:
    raise ValueError(f"t spans a factor {t.max() / t.min():.3g} < the window's {width}.")
  centres = np.linspace(lt.min() + half, lt.max() - half, points)
  tc, ps, ns = np.full(points, np.nan), np.full(points, np.nan), np.zeros(points, int)
  for k, c in enumerate(centres):
    x, v = lt[np.abs(lt - c) <= half], ly[np.abs(lt - c) <= half]
    ns[k] = x.size
    if x.size >= 3 and np.ptp(x) > 0:
      xc = x - x.mean()
      tc[k], ps[k] = np.exp(x.mean()), xc @ (v - v.mean()) / (xc @ xc)
  return LocalExponentCurve(tc, ps, ns)
