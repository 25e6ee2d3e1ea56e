"""Curve fits for norm trajectories: ``a sqrt(t) + b`` (the paper's Fig. 1) and power laws.

Also the growth-law comparison of Fig. 1: :func:`fit_law` (sqrt, linear, t^(1/4), log),
:func:`fit_offset_power` (``a t^p + b`` with a free, optionally shared exponent) and
:func:`bootstrap_exponent` (its moving-block bootstrap confidence interval).

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
    raise ValueError(f"Need at least {params + 1} finite points (t >= 0"
                     + (", t > 0 and y > 0 for a power law" if positive else "")
                     + f") to fit {params} parameters, got {int(keep.sum())}: a curve through "
                     "every point has r^2 = 1 whatever the law. Record more steps.")
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
  return PowerLawFit(scale, float(k), r_squared(y, scale * t ** k),
                     r_squared(ly, design @ np.array([k, log_c])))


# ----------------------------------------------------------------------------- growth laws

LAWS = {  # name -> the regressor x(t) of y = a x(t) + b
    "sqrt": np.sqrt,
    "linear": lambda t: t,
    "quarter": lambda t: t ** 0.25,
    "log": np.log,
}
LAW_LABELS = {"sqrt": "a√t + b", "linear": "a t + b", "quarter": "a t^(1/4) + b",
              "log": "a log t + b"}


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
    x = t[None, :] ** pv[:, None]                      # [P, n]
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
  res = optimize.minimize_scalar(lambda p: _profile_sse(p, ts, ys)[0], bounds=(lo, hi),
                                 method="bounded", options={"xatol": 1e-7})
  p = float(res.x) if res.fun <= sse[i] else float(grid[i])
  total, coefs = _profile_sse(p, ts, ys)
  y_all = np.concatenate(ys)
  ss_tot = float(np.sum((y_all - y_all.mean()) ** 2))
  r2 = 1.0 - total / ss_tot if ss_tot > 0 else 1.0
  return OffsetPowerFit(p, tuple(float(c[0]) for c in coefs), tuple(float(c[1]) for c in coefs),
                        r2)


class ExponentCI(NamedTuple):
  """A free exponent with its block-bootstrap confidence interval."""
  p: float
  lo: float
  hi: float
  block: int       # block length used (points)
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


def bootstrap_exponent(ts, ys, n_boot: int = 400, level: float = 0.95, block: int | None = None,
                       seed: int = 0, bounds=P_BOUNDS) -> ExponentCI:
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
  fitted = [a * t ** fit.p + b for t, a, b in zip(ts, fit.a, fit.b)]
  resid = [y - f for y, f in zip(ys, fitted)]
  n = min(len(t) for t in ts)
  if block is None:
    block = max(int(np.ceil(n ** (1 / 3))), max(decorrelation_length(e) for e in resid))
  block = int(min(max(block, 1), max(n // 2, 1)))
  rng = np.random.default_rng(seed)
  ps = []
  for _ in range(n_boot):
    new = []
    for f, e in zip(fitted, resid):
      m = len(e)
      starts = rng.integers(0, m, -(-m // block))
      idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:m] % m
      new.append(f + e[idx])
    ps.append(fit_offset_power(ts, new, bounds).p)
  q = (1 - level) / 2
  lo, hi = np.quantile(ps, [q, 1 - q])
  return ExponentCI(fit.p, float(lo), float(hi), block, n_boot)
