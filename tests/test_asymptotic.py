"""Every asymptotic op against the same expression at finite rho in float64 NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf, expit

from normgrowth_jax import asymptotic as asy
from normgrowth_jax import saturation as sat

RHOS = [1e2, 1e3, 1e4, 1e5, 1e6]


@pytest.fixture(autouse=True)
def exact_float32_products():
  """The ops run as the saturation measurements run them: with exact float32 products (the
  float64 references assume them; TF32, a GPU's default, misses them by ~1e-3)."""
  with jax.default_matmul_precision(sat.MATMUL_PRECISION):
    yield


def f32(rng, *shape):
  """Random float32 values, returned as float64 NumPy (identical numbers in both worlds)."""
  return rng.standard_normal(shape).astype(np.float32).astype(np.float64)


def series_at(terms, rho):
  """float64 evaluation of sum_j c_j rho^p_j."""
  return sum(np.asarray(c, np.float64) * rho**p for c, p in terms)


def rel_err(ref_scaled, coef):
  coef = np.asarray(coef, np.float64)
  return np.max(np.abs(ref_scaled - coef)) / max(np.max(np.abs(coef)), 1e-30)


def assert_converges(out, reference, tol=1e-4):
  """reference(rho) / rho^out.power -> out.leading as rho grows (float64)."""
  assert asy.is_asymptotic(out)
  errs = [rel_err(reference(r) / r**out.power, out.leading) for r in RHOS]
  assert errs[-1] < tol, errs
  assert errs[-1] <= errs[0] + 1e-7, errs
  return errs


def test_asymptotic_pytree_and_structure():
  x = asy.Asymptotic([(jnp.ones((2, 3)), 1), (jnp.arange(6.0).reshape(2, 3), 3)])
  assert x.powers == (3.0, 1.0) and x.power == 3.0 and x.shape == (2, 3) and x.ndim == 2
  np.testing.assert_allclose(x.leading, np.arange(6.0).reshape(2, 3))
  leaves, treedef = jax.tree_util.tree_flatten(x)
  assert len(leaves) == 2
  y = jax.tree_util.tree_unflatten(treedef, [l * 2 for l in leaves])
  assert y.powers == x.powers
  np.testing.assert_allclose(x.at(10.0), np.arange(6.0).reshape(2, 3) * 1e3 + 10.0, rtol=1e-6)
  assert (
      x[0].shape == (3,) and x.reshape(3, 2).shape == (3, 2) and x.transpose(1, 0).shape == (3, 2)
  )
  np.testing.assert_allclose(x.transpose(1, 0).terms[1][0], np.ones((3, 2)))
  with pytest.raises(ValueError, match="distinct"):
    asy.Asymptotic([(jnp.ones(2), 1), (jnp.ones(2), 1)])
  with pytest.raises(ValueError, match="share one shape"):
    asy.Asymptotic([(jnp.ones(2), 1), (jnp.ones(3), 2)])
  assert asy.leading(jnp.ones(2)).shape == (2,) and not asy.is_asymptotic(jnp.ones(2))


def test_add_keeps_and_merges_terms_and_broadcasts():
  rng = np.random.default_rng(0)
  a, b, c = f32(rng, 4, 5), f32(rng, 5), f32(rng, 4, 5)
  x = asy.add(asy.lift(jnp.asarray(a, jnp.float32), 2), asy.lift(jnp.asarray(b, jnp.float32), 1))
  x = asy.add(x, asy.lift(jnp.asarray(c, jnp.float32), 2))
  x = x + 3.0  # a plain constant is power 0
  assert x.powers == (2.0, 1.0, 0.0) and x.shape == (4, 5)
  np.testing.assert_allclose(x.terms[0][0], a + c, rtol=1e-6)
  np.testing.assert_allclose(x.terms[1][0], np.broadcast_to(b, (4, 5)))
  for r in RHOS:
    np.testing.assert_allclose(
        np.asarray(x.at(r), np.float64), (a + c) * r**2 + b * r + 3, rtol=1e-5
    )
  assert float(asy.add(1.0, 2.0)) == 3.0


def test_dense_einsum_mul_limits():
  rng = np.random.default_rng(1)
  x2, x1, w, v = f32(rng, 3, 4), f32(rng, 3, 4), f32(rng, 4, 6), f32(rng, 3, 4)
  x = asy.add(asy.lift(jnp.float32(x2), 2), asy.lift(jnp.float32(x1), 1))
  out = asy.dense(x, jnp.float32(w))
  assert out.powers == (3.0,)
  assert_converges(out, lambda r: (x2 * r**2 + x1 * r) @ (w * r))
  # einsum with a parameter: powers add
  e = asy.einsum("ij,jk->ik", x, asy.param(jnp.float32(w), like=x))
  np.testing.assert_allclose(e.leading, out.leading, rtol=1e-6)
  # product of two series
  m = asy.mul(x, asy.lift(jnp.float32(v), 1))
  assert m.power == 3.0
  assert_converges(m, lambda r: (x2 * r**2 + x1 * r) * (v * r))
  # first layer on raw inputs: an Asymptotic kernel carries the power
  raw = asy.dense(jnp.float32(x1), asy.lift(jnp.float32(w), 1))
  assert raw.power == 1.0
  assert_converges(raw, lambda r: x1 @ (w * r))
  # plain mode is ordinary arithmetic
  np.testing.assert_allclose(asy.dense(jnp.float32(x1), jnp.float32(w)), x1 @ w, rtol=1e-5)
  assert asy.param(jnp.ones(2), like=jnp.ones(2)).shape == (2,)


def gelu_np(z):
  return 0.5 * z * (1 + erf(z / np.sqrt(2)))


@pytest.mark.parametrize(
    "op, ref, out_power",
    [
        (asy.relu, lambda z: np.maximum(z, 0), 2.0),
        (asy.gelu, gelu_np, 2.0),
        (asy.tanh, np.tanh, 0.0),
        (asy.sigmoid, expit, 0.0),
    ],
)
def test_elementwise_limits(op, ref, out_power):
  rng = np.random.default_rng(2)
  c2, c1 = f32(rng, 50), f32(rng, 50)
  c2[:5] = 0.0  # exactly-zero leading coefficients: the lower term decides for tanh/sigmoid
  x = asy.add(asy.lift(jnp.float32(c2), 2), asy.lift(jnp.float32(c1), 1))
  out = op(x)
  assert out.powers == (out_power,)
  # relu/gelu keep only the leading term: zero leading coefs give 0 at power 2 (o(rho^2)),
  # which is the limit of value / rho^2; tanh/sigmoid use the rho^1 term's sign there.
  assert_converges(out, lambda r: ref(c2 * r**2 + c1 * r), tol=2e-4)
  if out_power == 0.0:
    want = (np.sign(c1[:5]) + (1 if op is asy.sigmoid else 0)) / (2 if op is asy.sigmoid else 1)
    np.testing.assert_array_equal(out.leading[:5], want)


def test_elementwise_power_zero_and_all_zero():
  rng = np.random.default_rng(3)
  c = f32(rng, 10)
  x0 = asy.lift(jnp.float32(c), 0)
  np.testing.assert_allclose(asy.gelu(x0).leading, gelu_np(c), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      asy.gelu(x0, approximate=True).leading, jax.nn.gelu(c, approximate=True), rtol=1e-5
  )
  np.testing.assert_allclose(asy.tanh(x0).leading, np.tanh(c), rtol=1e-5)
  # sign limit with a power-0 tail: where the growing term is exactly 0 the tail survives
  z = asy.add(asy.lift(jnp.zeros(10), 1), x0)
  np.testing.assert_allclose(asy.tanh(z).leading, np.tanh(c), rtol=1e-5)
  np.testing.assert_allclose(asy.sigmoid(z).leading, expit(c), rtol=1e-5)
  # nothing nonzero at all: tanh(0) = 0, sigmoid(0) = 1/2
  zero = asy.lift(jnp.zeros(3), 2)
  np.testing.assert_array_equal(asy.tanh(zero).leading, 0.0)
  np.testing.assert_array_equal(asy.sigmoid(zero).leading, 0.5)
  # a shrinking input (power < 0): gelu ~ x/2, tanh ~ x, sigmoid -> 1/2
  xs = asy.lift(jnp.float32(c), -1)
  assert_converges(asy.gelu(xs), lambda r: gelu_np(c / r))
  assert_converges(asy.tanh(xs), lambda r: np.tanh(c / r))
  np.testing.assert_array_equal(asy.sigmoid(xs).leading, 0.5)


def softmax_np(s, mask=None):
  s = np.where(mask, s, -np.inf) if mask is not None else s
  m = np.max(s, axis=-1, keepdims=True)
  m = np.where(np.isfinite(m), m, 0)
  e = np.exp(s - m)
  d = e.sum(-1, keepdims=True)
  return e / np.where(d > 0, d, 1)


def softmax_series_np(terms, rho, mask=None):
  """softmax of sum_j c_j rho^p_j in float64, each term shifted by its row max first.

  Softmax is invariant to per-row shifts, and shifting each term separately keeps the
  lower-order terms representable next to a rho^4 leading term.
  """
  shifted = []
  for c, p in terms:
    cm = np.where(mask, c, -np.inf) if mask is not None else c
    mx = np.max(cm, axis=-1, keepdims=True)
    shifted.append((c - np.where(np.isfinite(mx), mx, 0), p))
  return softmax_np(series_at(shifted, rho), mask)


def test_softmax_hard_attention_generic_and_ties():
  rng = np.random.default_rng(4)
  s = f32(rng, 3, 7)
  s[1, [2, 5]] = 9.0  # exact tie for the max in row 1
  s[2, :] = 0.25  # a fully tied row -> mean head
  s[0, 0], s[0, 1] = 3.0, 2.95  # a close runner-up: visibly soft at rho = 100
  out = asy.softmax(asy.lift(jnp.float32(s), 1))
  assert out.powers == (0.0,)
  want = np.zeros_like(s)
  want[0, np.argmax(s[0])] = 1.0
  want[1, [2, 5]] = 0.5
  want[2, :] = 1 / 7
  np.testing.assert_allclose(out.leading, want, atol=1e-7)
  errs = assert_converges(out, lambda r: softmax_series_np([(s, 1)], r), tol=1e-6)
  assert errs[0] > errs[-1]


def test_softmax_lexicographic_tiebreak_t5_case():
  """rho^4 logits with ties + rho^1 relative-position bias: the bias only matters on ties."""
  rng = np.random.default_rng(5)
  s4 = np.round(f32(rng, 4, 6) * 2) / 2  # coarse values, many exact ties
  s4[0, :] = 1.0
  s4[1, [0, 3, 4]] = 5.0
  b1 = f32(rng, 4, 6)
  b1[2, :] = 0.0  # bias itself tied -> uniform over the rho^4 maximisers
  x = asy.add(asy.lift(jnp.float32(s4), 4), asy.lift(jnp.float32(b1), 1))
  out = asy.softmax(x)
  for i in range(4):
    top = np.flatnonzero(s4[i] == s4[i].max())
    win = top[b1[i, top] == b1[i, top].max()]
    want = np.zeros(6)
    want[win] = 1 / len(win)
    np.testing.assert_allclose(out.leading[i], want, atol=1e-7)
  assert_converges(out, lambda r: softmax_series_np([(s4, 4), (b1, 1)], r), tol=1e-6)


def test_softmax_power0_tail_splits_ties_by_softmax():
  s1 = np.array([[2.0, 2.0, 2.0, -1.0]])
  s0 = np.array([[0.0, 1.0, 3.0, 50.0]])
  x = asy.add(asy.lift(jnp.float32(s1), 1), jnp.float32(s0))
  out = asy.softmax(x)
  want = np.concatenate([softmax_np(s0[:, :3]), [[0.0]]], axis=1)
  np.testing.assert_allclose(out.leading, want, rtol=1e-6, atol=1e-7)
  assert_converges(out, lambda r: softmax_series_np([(s1, 1), (s0, 0)], r), tol=1e-6)
  # leading power 0: the ordinary softmax
  np.testing.assert_allclose(
      asy.softmax(asy.lift(jnp.float32(s0), 0)).leading, softmax_np(s0), rtol=1e-5
  )


def test_softmax_masking_both_modes():
  rng = np.random.default_rng(6)
  s = f32(rng, 3, 5)
  s[:, 4] = 100.0  # the best position is masked and must never be chosen
  mask = np.ones((3, 5), bool)
  mask[:, 4] = False
  mask[1, :2] = False
  mask[2, :] = False  # fully masked row -> zeros
  out = asy.softmax(asy.lift(jnp.float32(s), 1), mask=jnp.asarray(mask))
  assert np.all(np.asarray(out.leading)[~mask] == 0)
  np.testing.assert_array_equal(out.leading[2], 0.0)
  for i in range(2):
    want = np.zeros(5)
    want[np.argmax(np.where(mask[i], s[i], -np.inf))] = 1.0
    np.testing.assert_allclose(out.leading[i], want)
  assert_converges(out, lambda r: softmax_series_np([(s, 1)], r, mask), tol=1e-6)
  plain = asy.softmax(jnp.float32(s), mask=jnp.asarray(mask))
  np.testing.assert_allclose(plain, softmax_np(s, mask), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(plain[2], 0.0)
  # a mask broadcast over heads: [batch, 1, 1, k] against [batch, heads, q, k]
  s4 = asy.lift(jnp.float32(f32(rng, 2, 3, 4, 5)), 4)
  m4 = jnp.asarray(rng.random((2, 1, 1, 5)) > 0.3)
  w = np.asarray(asy.softmax(s4, mask=m4).leading)
  assert np.all(w[np.broadcast_to(~np.asarray(m4), w.shape)] == 0)


def test_softmax_tie_tolerance():
  # A gap float32 can hold (above its epsilon, 1.19e-7) and below the default tie_rtol 1e-6.
  gap = np.float32(3e-7)
  s = np.array([[1.0, 1.0 + gap, 0.5]], np.float32)
  assert s[0, 1] > s[0, 0] and s[0, 1] - s[0, 0] < 1e-6
  out = asy.softmax(asy.lift(jnp.asarray(s), 2))
  np.testing.assert_array_equal(out.leading, [[0.5, 0.5, 0.0]])  # within tolerance: a tie
  strict = asy.softmax(asy.lift(jnp.asarray(s), 2), tie_rtol=0.0)
  np.testing.assert_array_equal(strict.leading, [[0.0, 1.0, 0.0]])  # the larger one wins
  # A gap above the tolerance is no tie, at the default and at a tolerance just below it.
  wide = np.array([[1.0, 1.0 + 4e-6, 0.5]], np.float32)
  np.testing.assert_array_equal(
      asy.softmax(asy.lift(jnp.asarray(wide), 2)).leading, [[0.0, 1.0, 0.0]]
  )
  np.testing.assert_array_equal(
      asy.softmax(asy.lift(jnp.asarray(wide), 2), tie_rtol=1e-5).leading, [[0.5, 0.5, 0.0]]
  )


def ln_np(x, scale, bias, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def rms_np(x, scale, eps):
  return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


def test_layer_norm_scale_invariance_and_limit():
  rng = np.random.default_rng(7)
  x, g, b = f32(rng, 4, 8), f32(rng, 8), f32(rng, 8)
  base = asy.layer_norm(jnp.float32(x), jnp.float32(g), jnp.float32(b), eps=1e-12)
  for c in [1e-2, 3.0, 1e3]:
    np.testing.assert_allclose(
        asy.layer_norm(jnp.float32(x * c), jnp.float32(g), jnp.float32(b), eps=1e-12),
        base,
        rtol=1e-4,
        atol=1e-5,
    )
  np.testing.assert_allclose(base, ln_np(x, g, b, 1e-12), rtol=1e-4, atol=1e-5)
  # eps matters at finite scale but not in the limit
  big_eps = 1.0
  out = asy.layer_norm(asy.lift(jnp.float32(x), 1), jnp.float32(g), jnp.float32(b), eps=big_eps)
  assert out.powers == (1.0,)
  errs = assert_converges(out, lambda r: ln_np(x * r, g * r, b * r, big_eps))
  assert errs[0] > 1e-6  # at rho = 100, eps = 1 still shows
  np.testing.assert_allclose(out.leading, ln_np(x, g, b, 0.0), rtol=1e-5, atol=1e-6)


def test_layer_norm_constant_leading_row_falls_back():
  rng = np.random.default_rng(8)
  c2, c1, c0, g, b = f32(rng, 3, 8), f32(rng, 3, 8), f32(rng, 3, 8), f32(rng, 8), f32(rng, 8)
  c2[0] = 0.3  # constant row: centring removes it, so the rho^1 term decides
  c2[1] = 0.0
  c1[1] = 0.0  # no growing information at all: normalise the power-0 term with eps
  x = asy.add(asy.add(asy.lift(jnp.float32(c2), 2), asy.lift(jnp.float32(c1), 1)), jnp.float32(c0))
  out = asy.layer_norm(x, jnp.float32(g), jnp.float32(b), eps=1e-6)
  assert_converges(out, lambda r: ln_np(c2 * r**2 + c1 * r + c0, g * r, b * r, 1e-6), tol=2e-4)
  np.testing.assert_allclose(out.leading[0], ln_np(c1[:1], g, b, 0.0)[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out.leading[1], ln_np(c0[1:2], g, b, 1e-6)[0], rtol=1e-4, atol=1e-5)
  # all-zero input without a tail: the normalised part is 0 and the output is the bias
  z = asy.layer_norm(asy.lift(jnp.zeros((2, 8)), 1), jnp.float32(g), jnp.float32(b))
  np.testing.assert_allclose(z.leading, np.broadcast_to(b, (2, 8)), rtol=1e-6)
  # no affine parameters: power 0
  assert asy.layer_norm(asy.lift(jnp.float32(c1), 1)).powers == (0.0,)
  only_bias = asy.layer_norm(asy.lift(jnp.float32(c1), 1), bias=jnp.float32(b))
  assert only_bias.powers == (1.0, 0.0)


def test_rms_norm_scale_invariance_and_limit():
  rng = np.random.default_rng(9)
  c3, c1, g = f32(rng, 4, 8), f32(rng, 4, 8), f32(rng, 8)
  c3[2] = 0.0  # zero leading row -> the rho^1 term is normalised
  base = asy.rms_norm(jnp.float32(c1), jnp.float32(g), eps=1e-12)
  np.testing.assert_allclose(
      asy.rms_norm(jnp.float32(c1 * 50), jnp.float32(g), eps=1e-12), base, rtol=1e-5
  )
  np.testing.assert_allclose(base, rms_np(c1, g, 1e-12), rtol=1e-5)
  x = asy.add(asy.lift(jnp.float32(c3), 3), asy.lift(jnp.float32(c1), 1))
  out = asy.rms_norm(x, jnp.float32(g), eps=0.5)
  assert out.powers == (1.0,)
  assert_converges(out, lambda r: rms_np(c3 * r**3 + c1 * r, g * r, 0.5))
  np.testing.assert_allclose(out.leading[2], rms_np(c1[2:3], g, 0.0)[0], rtol=1e-5)


def test_jit_powers_static_coefficients_traced():
  traces = []

  @jax.jit
  def f(x, w):
    traces.append(x.powers)
    h = asy.relu(asy.dense(x, w))
    return asy.softmax(asy.einsum("qd,kd->qk", h, h))

  rng = np.random.default_rng(10)
  w = jnp.float32(f32(rng, 4, 4))
  a = f(asy.lift(jnp.float32(f32(rng, 3, 4)), 1), w)
  b = f(asy.lift(jnp.float32(f32(rng, 3, 4)), 1), w)  # new coefficients: no retrace
  assert len(traces) == 1 and a.powers == b.powers == (0.0,)
  f(asy.lift(jnp.float32(f32(rng, 3, 4)), 2), w)  # new power: one retrace
  assert len(traces) == 2
  # vmap over coefficients of a batch of series
  xs = asy.lift(jnp.float32(f32(rng, 5, 3, 4)), 1)
  ys = jax.vmap(lambda x: asy.relu(asy.dense(x, w)))(xs)
  assert ys.shape == (5, 3, 4) and ys.power == 2.0


def test_gradients_flow_through_plain_masked_softmax():
  mask = jnp.array([[True, True, False], [False, False, False]])
  g = jax.grad(lambda s: jnp.sum(asy.softmax(s, mask) * jnp.arange(3.0)))(jnp.ones((2, 3)))
  assert np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_array_equal(g[1], 0.0)


def test_module_doc_example():
  s = asy.add(asy.lift(jnp.array([1.0, 1.0, 0.0]), 4), asy.lift(jnp.array([0.0, 2.0, 9.0]), 1))
  assert asy.leading(asy.softmax(s)).tolist() == [0.0, 1.0, 0.0]
  assert math.isclose(float(s.at(2.0)[1]), 16 + 4)
