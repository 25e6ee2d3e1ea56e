"""Curve fits for norm trajectories: ``a sqrt(t) + b`` (the paper's Fig. 1) and power laws.

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


def _clean(t, y, positive: bool):
  t = np.asarray(t, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  if t.shape != y.shape:
    raise ValueError(f"t and y must have the same length, got {t.shape} and {y.shape}.")
  keep = np.isfinite(t) & np.isfinite(y) & (t >= 0)
  if positive:
    keep &= (t > 0) & (y > 0)
  if keep.sum() < 2:
    raise ValueError("Need at least two finite points (t >= 0"
                     + (", t > 0 and y > 0 for a power law" if positive else "") + ") to fit.")
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
