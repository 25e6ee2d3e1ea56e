"""Fits against known curves (float64 NumPy references)."""

import numpy as np
import pytest

from normgrowth_jax.analysis import fits


def test_sqrt_fit_recovers_exact_curve():
  t = np.arange(0, 524289, 5000, dtype=np.float64)
  fit = fits.fit_sqrt(t, 1.7 * np.sqrt(t) + 350.0)
  np.testing.assert_allclose([fit.a, fit.b], [1.7, 350.0], rtol=1e-10)
  assert fit.r2 == pytest.approx(1.0, abs=1e-12)
  np.testing.assert_allclose(fit(t[:3]), 1.7 * np.sqrt(t[:3]) + 350.0)


def test_sqrt_fit_with_noise_matches_normal_equations():
  rng = np.random.default_rng(0)
  t = np.linspace(1, 1e5, 200)
  y = 2.0 * np.sqrt(t) + 10.0 + rng.normal(0, 5.0, t.shape)
  fit = fits.fit_sqrt(t, y)
  x = np.sqrt(t)
  a = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
  b = y.mean() - a * x.mean()
  np.testing.assert_allclose([fit.a, fit.b], [a, b], rtol=1e-9)
  yhat = a * x + b
  r2 = 1 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2)
  assert fit.r2 == pytest.approx(r2, rel=1e-12)
  assert 0.99 < fit.r2 < 1.0


def test_sqrt_fit_poor_on_linear_data():
  t = np.linspace(0, 100, 50)
  assert fits.fit_sqrt(t, t ** 2).r2 < 0.97


def test_power_law_recovers_exponent_and_ignores_nonpositive_points():
  t = np.array([0.0, 1.0, 10.0, 100.0, 1000.0, np.nan])
  y = 3.0 * np.where(t > 0, t, 1.0) ** 0.37
  fit = fits.fit_power_law(t, y)
  assert fit.exponent == pytest.approx(0.37, rel=1e-10)
  assert fit.scale == pytest.approx(3.0, rel=1e-10)
  assert fit.r2 == pytest.approx(1.0, abs=1e-12)
  assert fit.r2_log == pytest.approx(1.0, abs=1e-12)


def test_fit_errors_name_the_problem():
  with pytest.raises(ValueError, match="same length"):
    fits.fit_sqrt([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match="at least two"):
    fits.fit_power_law([0.0, -1.0], [1.0, 1.0])
