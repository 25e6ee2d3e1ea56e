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
  assert fits.fit_sqrt(t, t**2).r2 < 0.97


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
    fits.fit_law([4.0, 9.0], [1.0, 2.0], "sqrt")  # two points: r^2 = 1 for every law
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
  f = fits.fit_offset_power(t, 0.8 * t**0.3 + 20.0)
  assert f.p == pytest.approx(0.3, abs=1e-5)
  assert f.a[0] == pytest.approx(0.8, rel=1e-4) and f.b[0] == pytest.approx(20.0, rel=1e-5)
  pooled = fits.fit_offset_power([t, t], [0.8 * t**0.3 + 20.0, 2.0 * t**0.3 - 5.0])
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
  white = fits.bootstrap_exponent(t, 2.0 * t**0.5 + 30 + rng.normal(0, 0.4, t.size), n_boot=100)
  assert white.lo < 0.5 < white.hi and white.block <= 6
  low = fits.bootstrap_exponent(t, 2.0 * t**0.3 + 30 + rng.normal(0, 0.05, t.size), n_boot=100)
  assert low.hi < 0.5 and low.lo < 0.3 < low.hi
  # autocorrelated residuals: longer blocks and a wider interval than resampling points
  y = 2.0 * t**0.5 + 30 + _ar1(t.size, 0.9, 0.4, rng)
  blocked = fits.bootstrap_exponent(t, y, n_boot=100)
  naive = fits.bootstrap_exponent(t, y, n_boot=100, block=1)
  assert blocked.block > 4 and naive.block == 1
  assert blocked.hi - blocked.lo > 1.5 * (naive.hi - naive.lo)
  # pooled: seeds share p
  y2 = 1.0 * t**0.5 + 10 + rng.normal(0, 0.2, t.size)
  both = fits.bootstrap_exponent(
      [t, t], [2.0 * t**0.5 + 30 + rng.normal(0, 0.4, t.size), y2], n_boot=100
  )
  assert both.lo < 0.5 < both.hi


def test_run_bootstrap_covers_seed_spread_block_only_does_not():
  """Issue 20 item 5: runs whose exponents differ (0.4, 0.5, 0.6, autocorrelated noise).
  Resampling runs too covers the seed mean's +- 1 standard error and most of the seeds'
  range; the block-only interval of the same pooled fit misses the outer seeds."""
  t = np.linspace(0, 1e4, 104)
  for trial in range(3):
    rng = np.random.default_rng(10 + trial)
    ys = [30 * (1 + 0.5 * (t / 1e4) ** p) + _ar1(t.size, 0.9, 0.05, rng) for p in (0.4, 0.5, 0.6)]
    own = np.array([fits.fit_offset_power(t, y).p for y in ys])
    mean, se = own.mean(), own.std(ddof=1) / np.sqrt(own.size)
    new = fits.bootstrap_exponent_runs([t] * 3, ys, n_boot=200, seed=trial)
    old = fits.bootstrap_exponent([t] * 3, ys, n_boot=200, seed=trial)
    assert new.p == old.p  # the same pooled fit
    assert new.lo <= mean - se and new.hi >= mean + se
    assert new.hi - new.lo >= 0.6 * np.ptp(own)
    assert old.lo > own.min() and old.hi < own.max()
    assert old.hi - old.lo < 0.5 * (new.hi - new.lo)
  with pytest.raises(ValueError, match="at least two runs"):
    fits.bootstrap_exponent_runs([t], [ys[0]])


@pytest.mark.parametrize("p", [0.125, 0.5, 0.9, 1.3])
def test_local_exponent_exact_power_law(p):
  t = np.arange(1.0, 5001.0)
  e = fits.local_exponent(t, 3.7 * t**p, t_min=800)
  assert e.p == pytest.approx(p, abs=1e-9)
  assert e.lo == pytest.approx(p, abs=1e-9) and e.hi == pytest.approx(p, abs=1e-9)
  assert e.n == 4200 and 800 < e.t_centre < 5000
  assert fits.local_exponent(t, 3.7 * t**p, t_min=100, t_max=200).n == 100
  curve = fits.local_exponent_curve(t, 3.7 * t**p, points=6)
  np.testing.assert_allclose(curve.p[curve.n >= 3], p, atol=1e-9)


def test_local_exponent_interval_covers_under_multiplicative_noise():
  t = np.arange(1.0, 2001.0)
  rng = np.random.default_rng(0)
  e = fits.local_exponent(t, 3.0 * t**0.3 * np.exp(rng.normal(0, 0.05, t.size)))
  assert e.lo < 0.3 < e.hi and e.hi - e.lo < 0.02
  covered = 0
  for i in range(100):
    y = 3.0 * t**0.3 * np.exp(rng.normal(0, 0.05, t.size))
    e = fits.local_exponent(t, y, n_boot=200, seed=i)
    covered += e.lo < 0.3 < e.hi
  assert covered >= 88  # nominal 95 of 100


def test_local_exponent_of_offset_power_is_below_p_and_approaches_it():
  """y = a t^p + b, b > 0: d log y / d log t = p a t^p / (a t^p + b) < p, rising to p."""
  t = np.arange(1.0, 20001.0)
  a, p, b = 2.0, 0.5, 40.0
  y = a * t**p + b
  exact = lambda c: p * a * c**p / (a * c**p + b)
  es = [fits.local_exponent(t, y, lo, 2 * lo) for lo in (100, 1000, 10000)]
  ps = [e.p for e in es]
  assert ps[0] < ps[1] < ps[2] < p and ps[2] > 0.42 and ps[0] < 0.2
  for e in es:  # the slope at the window's centre
    assert e.p == pytest.approx(exact(e.t_centre), abs=2e-3)
    assert e.lo < e.p < e.hi
  curve = fits.local_exponent_curve(t, y, points=8)
  ok = curve.n >= 3
  assert np.all(np.diff(curve.p[ok]) > 0) and np.all(curve.p[ok] < p)
  np.testing.assert_allclose(curve.p[ok], exact(curve.t_centre[ok]), atol=2e-3)


def test_local_exponent_errors():
  t = np.arange(1.0, 11.0)
  with pytest.raises(ValueError, match="at least 3 points with 8 < t <= None"):
    fits.local_exponent(t, t, t_min=8)
  with pytest.raises(ValueError, match="factor"):
    fits.local_exponent_curve(t, t, width=20.0)
