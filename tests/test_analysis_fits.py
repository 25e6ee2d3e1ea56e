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
  with pytest.raises(ValueError, match="at least 3 finite points"):
    fits.fit_power_law([0.0, -1.0], [1.0, 1.0])
  with pytest.raises(ValueError, match="at least 3 finite points .* got 2"):
    fits.fit_law([4.0, 9.0], [1.0, 2.0], "sqrt")     # two points: r^2 = 1 for every law
  with pytest.raises(ValueError, match="at least 4 finite points .* got 3"):
    fits.fit_offset_power(np.array([1.0, 4.0, 9.0]), np.array([1.0, 2.0, 3.5]))


@pytest.mark.parametrize("law", ["sqrt", "linear", "quarter", "log"])
def test_fit_law_recovers_each_law_and_ranks_it_first(law):
  t = np.linspace(100, 1e4, 104)
  y = 1.5 * fits.LAWS[law](t) + 4.0
  r2 = {k: fits.fit_law(t, y, k).r2 for k in fits.LAWS}
  f = fits.fit_law(t, y, law)
  np.testing.assert_allclose([f.a, f.b], [1.5, 4.0], rtol=1e-9)
  assert max(r2, key=r2.get) == law
  np.testing.assert_allclose(f(t), y, rtol=1e-9)
  with pytest.raises(ValueError, match="Unknown law"):
    fits.fit_law(t, y, "cubic")


def test_offset_power_single_and_pooled():
  t = np.linspace(0, 5000, 104)
  f = fits.fit_offset_power(t, 0.8 * t ** 0.3 + 20.0)
  assert f.p == pytest.approx(0.3, abs=1e-5)
  assert f.a[0] == pytest.approx(0.8, rel=1e-4) and f.b[0] == pytest.approx(20.0, rel=1e-5)
  pooled = fits.fit_offset_power([t, t], [0.8 * t ** 0.3 + 20.0, 2.0 * t ** 0.3 - 5.0])
  assert pooled.p == pytest.approx(0.3, abs=1e-5)
  np.testing.assert_allclose(pooled.a, [0.8, 2.0], rtol=1e-4)
  assert pooled.r2 == pytest.approx(1.0, abs=1e-9)


def _ar1(n, phi, sigma, rng):
  e = np.zeros(n)
  for i in range(1, n):
    e[i] = phi * e[i - 1] + rng.normal(0, sigma)
  return e


def test_decorrelation_length_white_vs_autocorrelated():
  rng = np.random.default_rng(1)
  assert fits.decorrelation_length(rng.normal(size=500)) <= 3
  assert fits.decorrelation_length(_ar1(500, 0.97, 1.0, rng)) > 10
  assert fits.decorrelation_length(np.zeros(10)) == 1


def test_bootstrap_exponent_covers_truth_and_separates_laws():
  rng = np.random.default_rng(2)
  t = np.linspace(0, 1e4, 104)
  white = fits.bootstrap_exponent(t, 2.0 * t ** 0.5 + 30 + rng.normal(0, 0.4, t.size),
                                  n_boot=100)
  assert white.lo < 0.5 < white.hi and white.block <= 6
  low = fits.bootstrap_exponent(t, 2.0 * t ** 0.3 + 30 + rng.normal(0, 0.05, t.size),
                                n_boot=100)
  assert low.hi < 0.5 and low.lo < 0.3 < low.hi
  # autocorrelated residuals: longer blocks and a wider interval than resampling points
  y = 2.0 * t ** 0.5 + 30 + _ar1(t.size, 0.9, 0.4, rng)
  blocked = fits.bootstrap_exponent(t, y, n_boot=100)
  naive = fits.bootstrap_exponent(t, y, n_boot=100, block=1)
  assert blocked.block > 4 and naive.block == 1
  assert blocked.hi - blocked.lo > 1.5 * (naive.hi - naive.lo)
  # pooled: seeds share p
  y2 = 1.0 * t ** 0.5 + 10 + rng.normal(0, 0.2, t.size)
  both = fits.bootstrap_exponent([t, t], [2.0 * t ** 0.5 + 30 + rng.normal(0, 0.4, t.size), y2],
                                 n_boot=100)
  assert both.lo < 0.5 < both.hi
