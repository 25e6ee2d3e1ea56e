"""Saturation toolkit: analytic cases and a float64 NumPy reference model."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backend_helpers import dot_precisions
from normgrowth_jax import asymptotic as asy
from normgrowth_jax import saturation as sat


def rand(rng, *shape, scale=1.0):
  return jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)


# ----------------------------------------------------------------------------- scale_params


def test_scale_params_where_variants():
  params = {
      "encoder": {"layers_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
      "token_embedder": {"embedding": jnp.ones((3, 2))},
      "step": jnp.array(3),
  }
  all_ = sat.scale_params(params, 10.0)
  assert float(all_["encoder"]["layers_0"]["kernel"][0, 0]) == 10.0
  assert float(all_["token_embedder"]["embedding"][0, 0]) == 10.0
  assert all_["step"].dtype == jnp.int32 and int(all_["step"]) == 3  # integers never scaled
  only_k = sat.scale_params(params, 10.0, where=lambda path, x: path.endswith("kernel"))
  assert float(only_k["encoder"]["layers_0"]["kernel"][0, 0]) == 10.0
  assert float(only_k["encoder"]["layers_0"]["bias"][0]) == 1.0
  paper = sat.scale_params(params, 10.0, where="paper")
  assert float(paper["token_embedder"]["embedding"][0, 0]) == 1.0
  assert float(paper["encoder"]["layers_0"]["bias"][0]) == 10.0
  tree_mask = jax.tree_util.tree_map(lambda _: False, params)
  tree_mask["encoder"]["layers_0"]["bias"] = True
  masked = sat.scale_params(params, 10.0, where=tree_mask)
  assert float(masked["encoder"]["layers_0"]["bias"][0]) == 10.0
  assert float(masked["encoder"]["layers_0"]["kernel"][0, 0]) == 1.0
  with pytest.raises(ValueError, match="where"):
    sat.scale_params(params, 2.0, where={"a": True})
  # rho may be traced (vmapped)
  out = jax.vmap(lambda r: sat.scale_params(params, r)["encoder"]["layers_0"]["bias"])(
      jnp.array([1.0, 2.0])
  )
  np.testing.assert_allclose(out, [[1, 1], [2, 2]])


# ----------------------------------------------------------------------------- homogeneous MLPs


def mlp_params(rng, bias, layers=2, d=6):
  p = {}
  for i in range(layers):
    p[f"w{i}"] = rand(rng, d, d, scale=0.5)
    if bias:
      p[f"b{i}"] = rand(rng, d)
  return p


def make_mlp(x, layers):
  """fn(params) -> (h_1, ..., h_L); relu between layers; biases if present."""

  def fn(p, saturated=False):
    h = x
    outs = []
    for i in range(layers):
      w = asy.lift(p[f"w{i}"], 1) if saturated and i == 0 else p[f"w{i}"]
      h = asy.dense(h, w)
      if f"b{i}" in p:
        h = asy.add(h, asy.param(p[f"b{i}"], h) if asy.is_asymptotic(h) else p[f"b{i}"])
      if i < layers - 1:
        h = asy.relu(h)
      outs.append(h)
    return tuple(asy.leading(o) for o in outs)

  return fn


@pytest.mark.parametrize("layers", [1, 2])
def test_biasless_relu_mlp_is_exactly_homogeneous(layers):
  """A biasless L-layer ReLU MLP is exactly L-homogeneous in its parameters (App. C rules)."""
  rng = np.random.default_rng(0)
  x = rand(rng, 2, 5, 6)
  params = mlp_params(rng, bias=False, layers=layers)
  fn = make_mlp(x, layers)
  fn_lim = lambda p: fn(p, saturated=True)  # noqa: E731
  for rho in [1e-2, 2.0, 1e3, 1e6]:
    np.testing.assert_allclose(sat.saturation_similarity(fn, params, rho), 1.0, atol=1e-6)
  np.testing.assert_allclose(sat.rho_sweep(fn, params, jnp.logspace(-2, 6, 9)), 1.0, atol=1e-6)
  degrees = sat.homogeneity_degree(fn, params, jnp.linspace(1.0, 10.0, 10))  # layer l: degree l
  np.testing.assert_allclose(degrees, np.arange(1, layers + 1), atol=1e-4)
  # the exact limit IS f (up to the scale rho^L): leading coefficients equal f(theta)
  for a, b in zip(fn(params), fn_lim(params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(sat.limit_similarity(fn, fn_lim, params), 1.0, atol=1e-6)
  np.testing.assert_allclose(
      sat.homogeneity_curve(fn, fn_lim, params, jnp.array([1.0, 5.0])), 1.0, atol=1e-6
  )


def test_relu_mlp_with_biases_is_not_homogeneous():
  rng = np.random.default_rng(1)
  x = rand(rng, 2, 5, 6)
  params = mlp_params(rng, bias=True, layers=2)
  fn = make_mlp(x, 2)
  fn_lim = lambda p: fn(p, saturated=True)  # noqa: E731
  # layer 1 = relu(W0 x + b0) scales exactly like c; layer 2 = c^2 W1 h + c b1 does not
  sims = np.asarray(sat.saturation_similarity(fn, params, 0.1))
  assert sims[0] == pytest.approx(1.0, abs=1e-6) and sims[1] < 0.99
  curve = np.asarray(
      sat.homogeneity_curve(fn, fn_lim, params, jnp.array([0.1, 1.0, 10.0, 1000.0]))
  )[:, 1]
  assert curve[0] < curve[1] < curve[2] < curve[3] and curve[0] < 0.99 and curve[3] > 1 - 1e-4
  k = np.asarray(sat.homogeneity_degree(fn, params, jnp.linspace(0.05, 0.5, 10)))
  assert k[0] == pytest.approx(1.0, abs=1e-4) and 1.0 < k[1] < 1.95
  # float64 reference for the layer-2 similarity at c = 0.1
  xn = np.asarray(x, np.float64)
  pn = {k_: np.asarray(v, np.float64) for k_, v in params.items()}

  def f2(c):
    h = np.maximum(xn @ (c * pn["w0"]) + c * pn["b0"], 0)
    return h @ (c * pn["w1"]) + c * pn["b1"]

  a, b = f2(1.0), f2(0.1)
  cos = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
  assert sims[1] == pytest.approx(cos.mean(), abs=1e-5)


def test_layer_norm_network_is_scale_invariant():
  rng = np.random.default_rng(2)
  x = rand(rng, 2, 4, 6)
  params = {"w": rand(rng, 6, 6)}
  fn = lambda p: asy.layer_norm(x @ p["w"], eps=1e-12)  # noqa: E731  (no affine: 0-homogeneous)
  for rho in [1e-3, 7.0, 1e4]:
    assert float(sat.saturation_similarity(fn, params, rho)) == pytest.approx(1.0, abs=1e-6)
  assert float(sat.homogeneity_degree(fn, params, jnp.linspace(1.0, 10.0, 6))) == pytest.approx(
      0.0, abs=1e-5
  )


def test_softmax_reaches_hard_attention_with_ties():
  s = jnp.array([[[0.3, 1.0, 1.0, -2.0], [2.0, 0.0, 0.1, 1.9]]])  # row 0 ties
  params = {"s": s}
  fn = lambda p: jax.nn.softmax(p["s"], axis=-1)  # noqa: E731
  fn_lim = lambda p: asy.leading(asy.softmax(asy.lift(p["s"], 1)))  # noqa: E731
  np.testing.assert_allclose(fn_lim(params), [[[0, 0.5, 0.5, 0], [1, 0, 0, 0]]])
  rhos = jnp.array([1.0, 10.0, 100.0, 1000.0])
  # per-query cosine of the weight vectors, finite rho vs the exact limit
  cur = np.asarray(sat.homogeneity_curve(fn, fn_lim, params, rhos))
  assert (
      cur[0] < cur[1] < cur[2] <= cur[3]
      and cur[0] < 0.9
      and cur[-1] == pytest.approx(1.0, abs=1e-6)
  )
  w = np.asarray(fn(sat.scale_params(params, 1000.0)))
  np.testing.assert_allclose(w, fn_lim(params), atol=1e-6)


# ----------------------------------------------------------------------------- attention stats


def test_attention_stats_hand_built():
  # one layer, 2 heads, batch 1, 4 tokens, the last is padding
  L = 4
  argmax = np.eye(L)[[0, 0, 1, 2]]  # head 0: one position per query
  mean = np.tril(np.ones((L, L)))
  mean = mean / mean.sum(-1, keepdims=True)  # head 1: uniform over the causal prefix
  w = jnp.asarray(np.stack([argmax, mean])[None], jnp.float32)  # [1, 2, 4, 4]
  mask = jnp.array([[True, True, True, False]])
  st = sat.attention_stats((w,), mask)
  # head 1 real queries see 1, 2, 3 positions (the padding key never counts)
  np.testing.assert_allclose(st["num_attended"], [[1.0, 2.0]])
  np.testing.assert_allclose(st["num_attended_std"], [[0.0, np.std([1, 2, 3])]], rtol=1e-6)
  np.testing.assert_allclose(st["split_fraction"], [[0.0, 2 / 3]], rtol=1e-6)
  np.testing.assert_allclose(st["entropy"], [[0.0, np.mean(np.log([1, 2, 3]))]], rtol=1e-5)
  # without a mask all 4 queries count and the 4th sees 4 keys
  nm = sat.attention_stats(w)
  np.testing.assert_allclose(nm["num_attended"], [[1.0, 2.5]])
  # threshold: a tiny weight below it is ignored, above it counts
  w2 = np.asarray(w).copy()
  w2[0, 0, 1, 3] = 1e-6
  w2[0, 0, 2, 3] = 1e-4
  st2 = sat.attention_stats(jnp.asarray(w2)[None])  # stacked [layers, b, h, q, k]
  assert float(st2["num_attended"][0, 0]) == pytest.approx(1.25)
  counts, edges = sat.attention_histogram(st, bins=2, range=(0.5, 2.5))
  np.testing.assert_array_equal(counts, [1, 1])
  np.testing.assert_allclose(edges, [0.5, 1.5, 2.5])
  with pytest.raises(ValueError, match="differ in shape"):
    sat.attention_stats((w, w[:, :, :2]))


# ----------------------------------------------------------------------------- a tiny attention model

D, HEADS, EPS = 8, 2, 1e-5


def tiny_params(rng, n_layers=2, vocab=11, length=6):
  p = {"embed": rand(rng, vocab, D), "pos": rand(rng, length, D)}
  for i in range(n_layers):
    lp = {n: rand(rng, D, D, scale=D**-0.5) for n in ("wq", "wk", "wv", "wo", "w1", "w2")}
    lp.update(
        {n: rand(rng, D, scale=0.1) for n in ("bq", "bk", "bv", "bo", "b1", "b2", "be1", "be2")}
    )
    lp.update({n: 1 + rand(rng, D, scale=0.1) for n in ("g1", "g2")})
    p[f"layer_{i}"] = lp
  return p


def tiny_model(p, tokens, mask, saturated=False):
  """Paper pre-norm x + LN(F(x)) blocks, 2 heads, causal + padding mask, built from asy ops."""
  b, length = tokens.shape
  x = p["embed"][tokens] + p["pos"][None, :length]
  if saturated:
    x = asy.lift(x, 1)
  attend = jnp.tril(jnp.ones((length, length), bool))[None, None] & mask[:, None, None, :]
  hs = [x]
  for i in range(sum(k.startswith("layer_") for k in p)):
    lp = p[f"layer_{i}"]

    def lin(h, w, bias):
      return asy.add(asy.dense(h, lp[w]), asy.param(lp[bias], h))

    q, k, v = (lin(x, f"w{n}", f"b{n}").reshape(b, length, HEADS, D // HEADS) for n in "qkv")
    scores = asy.einsum("bqhd,bkhd->bhqk", q, k) * (1 / math.sqrt(D // HEADS))
    w = asy.softmax(scores, mask=attend)
    ctx = asy.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, length, D)
    x = asy.add(x, asy.layer_norm(lin(ctx, "wo", "bo"), lp["g1"], lp["be1"], EPS))
    x = asy.add(
        x, asy.layer_norm(lin(asy.relu(lin(x, "w1", "b1")), "w2", "b2"), lp["g2"], lp["be2"], EPS)
    )
    hs.append(x)
  return tuple(asy.leading(h) for h in hs)


def tiny_model_np(p, tokens, mask, rho):
  """The same model at finite rho in float64 NumPy."""
  P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64) * rho, p)
  b, length = tokens.shape
  x = P["embed"][tokens] + P["pos"][None, :length]
  attend = np.tril(np.ones((length, length), bool))[None, None] & mask[:, None, None, :]

  def ln(h, g, be):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + EPS) * g + be

  hs = [x]
  for i in range(sum(k.startswith("layer_") for k in P)):
    lp = P[f"layer_{i}"]
    q, k, v = ((x @ lp[f"w{n}"] + lp[f"b{n}"]).reshape(b, length, HEADS, D // HEADS) for n in "qkv")
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D // HEADS)
    s = np.where(attend, s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    w = e / e.sum(-1, keepdims=True)
    ctx = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, length, D)
    x = x + ln(ctx @ lp["wo"] + lp["bo"], lp["g1"], lp["be1"])
    x = x + ln(np.maximum(x @ lp["w1"] + lp["b1"], 0) @ lp["w2"] + lp["b2"], lp["g2"], lp["be2"])
    hs.append(x)
  return hs


def np_similarity(hs_a, hs_b, mask):
  out = []
  for a, b in zip(hs_a, hs_b):
    cos = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    out.append(cos[mask].mean())
  return np.array(out)


@pytest.fixture(scope="module")
def tiny():
  rng = np.random.default_rng(3)
  tokens = jnp.asarray(rng.integers(1, 11, size=(3, 6)))
  mask = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
  params = tiny_params(rng)
  fn = lambda p: tiny_model(p, tokens, mask)  # noqa: E731
  fn_lim = lambda p: tiny_model(p, tokens, mask, saturated=True)  # noqa: E731
  return params, tokens, mask, fn, fn_lim


def test_finite_rho_similarity_matches_float64_reference(tiny):
  params, tokens, mask, fn, _ = tiny
  tok, m = np.asarray(tokens), np.asarray(mask)
  base = tiny_model_np(params, tok, m, 1.0)
  for rho in [0.3, 3.0, 1000.0]:
    got = np.asarray(sat.saturation_similarity(fn, params, rho, mask))
    want = np_similarity(base, tiny_model_np(params, tok, m, rho), m)
    np.testing.assert_allclose(got, want, atol=2e-5)
  # the plain forward itself agrees with the reference (at the measurements' precision)
  with jax.default_matmul_precision(sat.MATMUL_PRECISION):
    np.testing.assert_allclose(fn(params)[-1], base[-1], rtol=1e-4, atol=1e-4)


def test_exact_limit_is_the_float64_large_rho_direction(tiny):
  params, tokens, mask, fn, fn_lim = tiny
  tok, m = np.asarray(tokens), np.asarray(mask)
  lim = [np.asarray(h, np.float64) for h in fn_lim(params)]
  gaps = []
  for rho in [1e2, 1e4, 1e6]:
    sims = np_similarity(lim, tiny_model_np(params, tok, m, rho), m)
    gaps.append(1 - sims.min())
  assert gaps[-1] < 1e-6 and gaps[0] > gaps[-1], gaps
  # limit_similarity agrees with a float64 cosine between f(theta) and the limit
  want = np_similarity(tiny_model_np(params, tok, m, 1.0), lim, m)
  np.testing.assert_allclose(sat.limit_similarity(fn, fn_lim, params, mask), want, atol=2e-5)


def test_sweep_equals_looped_values(tiny):
  params, _, mask, fn, _ = tiny
  rhos = jnp.array([0.5, 2.0, 10.0, 100.0, 1000.0])
  swept = np.asarray(sat.rho_sweep(fn, params, rhos, mask))
  looped = np.stack([np.asarray(sat.saturation_similarity(fn, params, r, mask)) for r in rhos])
  assert swept.shape == (5, 3)
  np.testing.assert_allclose(swept, looped, atol=1e-6)
  chunked = np.asarray(sat.rho_sweep(fn, params, rhos, mask, batch_size=2))
  np.testing.assert_allclose(chunked, swept, atol=1e-6)


def test_mask_shape_mismatch_is_a_clear_error(tiny):
  params, _, _, fn, _ = tiny
  with pytest.raises(ValueError, match="mask shape"):
    sat.saturation_similarity(fn, params, 10.0, jnp.ones((3, 5), bool))


# ----------------------------------------------------------------------------- the small LM (Fig. 4)


@pytest.mark.parametrize("use_bias", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_small_lm_prenorm_is_near_its_limit_at_small_c_postnorm_is_not(use_bias):
  """Fig. 4 ordering at random init: x + LN(F(x)) starts near sf, LN(x + F(x)) far from it."""
  from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

  tokens = jax.random.randint(jax.random.key(0), (2, 12), 1, 50)
  curves = {}
  for norm in ("prenorm_paper", "postnorm"):
    cfg = SmallLMConfig(
        vocab_size=50,
        num_layers=2,
        d_model=32,
        d_ff=32,
        num_heads=4,
        max_len=16,
        norm=norm,
        use_bias=use_bias,
    )
    model = SmallLM(cfg)
    params = model.init(jax.random.key(10), tokens)["params"]

    def fn(p, saturated=False):
      return model.apply({"params": p}, tokens, saturated=saturated).hidden_states[-1]

    curves[norm] = np.asarray(
        sat.homogeneity_curve(fn, lambda p: fn(p, True), params, jnp.array([1.0, 100.0]))
    )
  assert curves["prenorm_paper"][0] > 0.6 and curves["postnorm"][0] < 0.3, curves
  assert curves["prenorm_paper"][1] > 0.99 and curves["postnorm"][1] > 0.99, curves


# ----------------------------------------------------------------------------- matmul precision


@pytest.fixture(scope="module")
def small_lm_fns():
  """A 2-layer SmallLM's (f, sf, params) over a fixed batch: flax Dense and attention einsums."""
  from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

  model = SmallLM(
      SmallLMConfig(vocab_size=20, num_layers=2, d_model=8, d_ff=8, num_heads=2, max_len=6)
  )
  tokens = jnp.array([[1, 2, 3, 4, 5, 6]])
  params = model.init(jax.random.key(0), tokens)["params"]

  def f(p, saturated=False):
    return model.apply({"params": p}, tokens, saturated=saturated).hidden_states

  return f, functools.partial(f, saturated=True), params


MEASUREMENTS = {
    "saturation_similarity": lambda f, sf, p, **kw: sat.saturation_similarity(f, p, 1000.0, **kw),
    "limit_similarity": lambda f, sf, p, **kw: sat.limit_similarity(f, sf, p, **kw),
    "rho_sweep": lambda f, sf, p, **kw: sat.rho_sweep(f, p, jnp.array([10.0, 1000.0]), **kw),
    "homogeneity_curve": lambda f, sf, p, **kw: sat.homogeneity_curve(
        f, sf, p, jnp.array([1.0, 5.0]), **kw
    ),
    "homogeneity_degree": lambda f, sf, p, **kw: sat.homogeneity_degree(
        f, p, jnp.array([1.0, 5.0]), **kw
    ),
}


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_measurements_lower_every_matmul_at_float32_precision(small_lm_fns, name):
  """TF32 (NVIDIA's float32 default) would be amplified by rho = 1000 into the softmax: every
  dot product of a measurement must be HIGHEST, also when it is traced inside the caller's jit."""
  f, sf, params = small_lm_fns
  measure = functools.partial(MEASUREMENTS[name], f, sf)
  precisions = dot_precisions(jax.jit(measure).lower(params).as_text())
  assert precisions and set(precisions) == {"[HIGHEST, HIGHEST]"}, precisions
  opted_out = dot_precisions(
      jax.jit(functools.partial(measure, matmul_precision=None)).lower(params).as_text()
  )
  assert "[HIGHEST, HIGHEST]" not in opted_out, opted_out
