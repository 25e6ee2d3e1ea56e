"""Tests for normgrowth_jax.models.small_lm (tiny configs; CPU)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict

from normgrowth_jax.models import ModelOutput, SmallLM, SmallLMConfig, lm_loss
from normgrowth_jax.models.small_lm import causal_attention_mask

NORMS = ("prenorm_paper", "postnorm", "preln")


def tiny(**kw):
  base = dict(vocab_size=23, num_layers=2, d_model=16, d_ff=24, num_heads=4, max_len=12)
  base.update(kw)
  return SmallLMConfig(**base)


def init(cfg, tokens, seed=0):
  model = SmallLM(cfg)
  return model, model.init(jax.random.PRNGKey(seed), tokens)["params"]


def paths(params):
  return sorted("/".join(k) for k in flatten_dict(params))


TOKENS = jnp.array([[3, 7, 1, 9, 4, 2, 8, 5], [6, 2, 2, 11, 5, 0, 0, 0]])


# ---------------------------------------------------------------- float64 NumPy reference
def np_layer_norm(x, scale, bias, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  y = (x - mu) / np.sqrt(var + eps) * scale
  return y if bias is None else y + bias


def np_dense(p, x):
  y = x @ p["kernel"]
  return y + p["bias"] if "bias" in p else y


def np_forward(cfg, params, tokens, mask):
  """Float64 NumPy forward of SmallLM, written independently of the Flax code."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  tokens = np.asarray(tokens)
  mask = np.asarray(mask)
  b, l = tokens.shape
  h, dh = cfg.num_heads, cfg.d_model // cfg.num_heads
  x = p["embed"]["embedding"][tokens] + p["pos_embed"]["embedding"][np.arange(l)][None]
  hidden = [x]
  allowed = np.tril(np.ones((l, l), bool))[None, None] & mask[:, None, None, :]

  def ln(q, z):
    return np_layer_norm(z, q["scale"], q.get("bias"), cfg.layer_norm_eps)

  def attention(q, z):
    heads = lambda name: np_dense(q[name], z).reshape(b, l, h, dh)
    s = np.einsum("bqhd,bkhd->bhqk", heads("query"), heads("key")) / math.sqrt(dh)
    s = np.where(allowed, s, -np.inf)
    top = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(top), top, 0.0))
    w = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
    ctx = np.einsum("bhqk,bkhd->bqhd", w, heads("value")).reshape(b, l, -1)
    return np_dense(q["out"], ctx), w

  def mlp(q, z):
    a = np_dense(q["wi"], z)
    a = np.maximum(a, 0.0)
    return np_dense(q["wo"], a), None

  weights = []
  for i in range(cfg.num_layers):
    layer = p["encoder"][f"layers_{i}"]
    for fn, name, norm in ((attention, "attention", "attention_norm"), (mlp, "mlp", "mlp_norm")):
      if cfg.norm == "prenorm_paper":
        y, w = fn(layer[name], x)
        x = x + ln(layer[norm], y)
      elif cfg.norm == "postnorm":
        y, w = fn(layer[name], x)
        x = ln(layer[norm], x + y)
      else:
        y, w = fn(layer[name], ln(layer[norm], x))
        x = x + y
      if w is not None:
        weights.append(w)
    hidden.append(x)
  if cfg.norm == "preln":
    x = ln(p["encoder"]["final_norm"], x)
  return np_dense(p["classifier"], x), hidden, weights


@pytest.mark.parametrize("norm, use_bias", [(n, True) for n in NORMS] + [("preln", False)])
def test_matches_float64_numpy_reference(norm, use_bias):
  cfg = tiny(norm=norm, use_bias=use_bias)
  model, params = init(cfg, TOKENS)
  with jax.default_matmul_precision("float32"):  # the reference's products: not TF32 (GPU)
    out = model.apply({"params": params}, TOKENS)
  mask = np.asarray(TOKENS != 0)
  logits, hidden, weights = np_forward(cfg, params, TOKENS, mask)
  assert isinstance(out, ModelOutput)
  np.testing.assert_array_equal(out.mask, mask)
  np.testing.assert_allclose(out.logits, logits, rtol=2e-4, atol=2e-4)
  assert len(out.hidden_states) == cfg.num_layers + 1
  for got, want in zip(out.hidden_states, hidden):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
  for got, want in zip(out.attention_weights, weights):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_shapes_and_param_names():
  cfg = tiny(num_layers=1, norm="preln")
  model, params = init(cfg, TOKENS)
  out = model.apply({"params": params}, TOKENS)
  assert out.logits.shape == (2, 8, 23)
  assert [h.shape for h in out.hidden_states] == [(2, 8, 16)] * 2
  assert [w.shape for w in out.attention_weights] == [(2, 4, 8, 8)]
  layer = "encoder/layers_0/"
  want = [
      "classifier/bias",
      "classifier/kernel",
      "embed/embedding",
      "encoder/final_norm/bias",
      "encoder/final_norm/scale",
      "pos_embed/embedding",
  ]
  want += [
      layer + f"attention/{n}/{k}"
      for n in ("query", "key", "value", "out")
      for k in ("kernel", "bias")
  ]
  want += [layer + f"mlp/{n}/{k}" for n in ("wi", "wo") for k in ("kernel", "bias")]
  want += [layer + f"{n}/{k}" for n in ("attention_norm", "mlp_norm") for k in ("scale", "bias")]
  assert paths(params) == sorted(want)
  shapes = {"/".join(k): v.shape for k, v in flatten_dict(params).items()}
  assert shapes["embed/embedding"] == (23, 16)
  assert shapes["pos_embed/embedding"] == (12, 16)
  assert shapes[layer + "mlp/wi/kernel"] == (16, 24)
  assert shapes["classifier/kernel"] == (16, 23)
  # Post-norm / paper pre-norm have no final norm.
  _, params = init(tiny(norm="postnorm"), TOKENS)
  assert not any("final_norm" in p for p in paths(params))


@pytest.mark.parametrize("norm", NORMS)
def test_biasless_variant_has_no_bias_params(norm):
  _, with_bias = init(tiny(norm=norm), TOKENS)
  _, params = init(tiny(norm=norm, use_bias=False), TOKENS)
  assert not any("bias" in p for p in paths(params))
  assert paths(params) == [p for p in paths(with_bias) if not p.endswith("/bias")]


@pytest.mark.parametrize("norm", NORMS)
def test_causal_mask_blocks_the_future(norm):
  model, params = init(tiny(norm=norm), TOKENS)
  apply = model.apply
  base = apply({"params": params}, TOKENS)
  for t in (3, 7):
    changed = TOKENS.at[0, t].set(13)
    out = apply({"params": params}, changed)
    for got, want in zip(out.hidden_states + (out.logits,), base.hidden_states + (base.logits,)):
      np.testing.assert_array_equal(got[0, :t], want[0, :t])  # bit-identical
      assert not np.array_equal(got[0, t:], want[0, t:])
    for w in out.attention_weights:
      np.testing.assert_array_equal(np.triu(np.asarray(w), k=1), 0.0)


@pytest.mark.parametrize("norm", NORMS)
def test_padding_is_masked(norm):
  model, params = init(tiny(norm=norm), TOKENS)
  apply = model.apply
  mask = jnp.array([[0, 0, 1, 1, 1, 1, 0, 0]], bool)  # left and right padding
  tokens = jnp.array([[0, 0, 5, 6, 7, 8, 0, 0]])
  base = apply({"params": params}, tokens, mask)
  other = apply({"params": params}, jnp.array([[9, 4, 5, 6, 7, 8, 3, 1]]), mask)
  for got, want in zip(other.hidden_states, base.hidden_states):
    np.testing.assert_array_equal(got[:, 2:6], want[:, 2:6])
  for w in base.attention_weights:
    w = np.asarray(w)
    assert np.all(np.isfinite(w))
    np.testing.assert_array_equal(w[..., [0, 1, 6, 7]], 0.0)  # pad keys get no weight
    np.testing.assert_allclose(w[:, :, 2:].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(w[:, :, :2], 0.0)  # nothing visible: all zeros
  assert all(np.all(np.isfinite(h)) for h in base.hidden_states)
  # Default mask is tokens != pad_id.
  np.testing.assert_array_equal(base.mask, mask)
  np.testing.assert_array_equal(apply({"params": params}, tokens).mask, mask)


def test_causal_attention_mask():
  m = causal_attention_mask(jnp.array([[True, True, False]]))
  want = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 0]], bool)
  np.testing.assert_array_equal(m[0, 0], want)


def test_lm_loss_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7))
  tokens = rng.integers(0, 7, size=(2, 5))
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  terms = [
      -logp[b, t, tokens[b, t + 1]]
      for b in range(2)
      for t in range(4)
      if mask[b, t] and mask[b, t + 1]
  ]
  got = lm_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens), jnp.asarray(mask))
  np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-5)


def test_dropout_is_random_only_when_not_deterministic():
  model, params = init(tiny(dropout=0.5), TOKENS)
  a = model.apply({"params": params}, TOKENS)
  b = model.apply({"params": params}, TOKENS)
  np.testing.assert_array_equal(a.logits, b.logits)
  c = model.apply(
      {"params": params}, TOKENS, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)}
  )
  assert not np.allclose(a.logits, c.logits)


def test_config_validation():
  with pytest.raises(ValueError, match="norm"):
    tiny(norm="sandwich")
  with pytest.raises(ValueError, match="divisible"):
    tiny(num_heads=5)
  model, params = init(tiny(), TOKENS)
  with pytest.raises(ValueError, match="max_len"):
    model.apply({"params": params}, jnp.ones((1, 13), jnp.int32))


@pytest.mark.parametrize(
    "norm",
    [
        "prenorm_paper",
        pytest.param("postnorm", marks=pytest.mark.slow),
        pytest.param("preln", marks=pytest.mark.slow),
    ],
)
def test_adamw_steps_reduce_the_loss(norm):
  cfg = tiny(norm=norm)
  tokens = jnp.array([[1, 2, 3, 4, 5, 6, 7, 8], [2, 4, 6, 8, 10, 12, 14, 16]])
  model, params = init(cfg, tokens)
  opt = optax.adamw(3e-3, weight_decay=0.01)
  state = opt.init(params)

  def loss_fn(p):
    out = model.apply({"params": p}, tokens)
    return lm_loss(out.logits, tokens, out.mask)

  @jax.jit
  def step(p, s):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  losses = []
  for _ in range(15):
    params, state, loss = step(params, state)
    assert np.isfinite(loss)
    losses.append(float(loss))
  assert all(b < a for a, b in zip(losses[:5], losses[1:6])), losses
  assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- the exact saturated limit
def scaled(params, rho):
  return jax.tree_util.tree_map(lambda p: p * rho, params)


def min_token_cosine(a, b, mask):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
  return float(cos[np.asarray(mask)].min())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_finite_rho_float64_converges_to_saturated_limit(norm, use_bias):
  with jax.enable_x64(True):
    cfg = tiny(norm=norm, use_bias=use_bias, dtype=jnp.float64, param_dtype=jnp.float64)
    model, params = init(cfg, TOKENS)
    apply = model.apply
    limit = model.apply({"params": params}, TOKENS, saturated=True)
    assert limit.logits.dtype == jnp.float64
    mask = np.asarray(limit.mask)
    gaps = []
    for rho in (1e2, 1e3, 1e4, 1e5):
      out = apply({"params": scaled(params, rho)}, TOKENS)
      pairs = list(zip(out.hidden_states, limit.hidden_states))
      pairs.append((out.logits, limit.logits))
      gaps.append(max(1.0 - min_token_cosine(f, s, mask) for f, s in pairs))
      for f, s in zip(out.attention_weights, limit.attention_weights):
        real_queries = np.asarray(f - s).transpose(0, 2, 1, 3)[mask]
        assert np.abs(real_queries).max() < 1e-9
    # 1 - cos shrinks like rho^-2 (biases: relative corrections ~ 1/rho) or faster.
    assert gaps[-1] < 1e-8, gaps
    for a, b in zip(gaps, gaps[1:]):
      assert b <= a * 0.05 or b < 1e-13, gaps


@pytest.mark.parametrize("norm", NORMS)
def test_saturated_attention_is_hard_and_causal(norm):
  model, params = init(tiny(norm=norm), TOKENS)
  out = model.apply({"params": params}, TOKENS, saturated=True)
  mask = np.asarray(out.mask)
  for weights in out.attention_weights:
    np.testing.assert_array_equal(np.triu(np.asarray(weights), k=1), 0.0)
    w = np.asarray(weights).transpose(0, 2, 1, 3)[mask]  # [real queries, heads, keys]
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    top = np.broadcast_to(w.max(-1, keepdims=True), w.shape)
    np.testing.assert_allclose(np.where(w > 0, w, top), top, rtol=1e-6)  # uniform support
  # The padded keys of row 1 (positions 5..7) are never attended.
  for w in out.attention_weights:
    np.testing.assert_array_equal(np.asarray(w)[1, :, :, 5:], 0.0)
  assert all(np.all(np.isfinite(h)) for h in out.hidden_states)


def test_saturated_with_dropout_needs_deterministic():
  model, params = init(tiny(dropout=0.1), TOKENS)
  with pytest.raises(ValueError, match="deterministic=True"):
    model.apply(
        {"params": params},
        TOKENS,
        saturated=True,
        deterministic=False,
        rngs={"dropout": jax.random.PRNGKey(0)},
    )


def test_paper_prenorm_is_closer_to_its_limit_than_postnorm_at_init():
  """Paper Fig. 4 ordering at c = 1: pre-norm (~0.73 in the paper) >> post-norm (~0.08)."""
  cfg = dict(vocab_size=100, num_layers=3, d_model=32, d_ff=32, num_heads=4, max_len=12)
  tokens = jax.random.randint(jax.random.PRNGKey(7), (4, 12), 1, 100)
  sims = {}
  for norm in ("prenorm_paper", "postnorm"):
    model, params = init(SmallLMConfig(norm=norm, **cfg), tokens, seed=3)
    finite = model.apply({"params": params}, tokens).hidden_states[-1]
    limit = model.apply({"params": params}, tokens, saturated=True).hidden_states[-1]
    a, b = np.asarray(finite, np.float64), np.asarray(limit, np.float64)
    sims[norm] = float(
        np.mean((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)))
    )
  assert sims["prenorm_paper"] > 0.6, sims
  assert sims["postnorm"] < 0.4, sims
  assert sims["prenorm_paper"] > sims["postnorm"] + 0.3, sims


def test_bfloat16_forward_tracks_float32():
  cfg = tiny(norm="preln")
  model, params = init(cfg, TOKENS)
  ref = model.apply({"params": params}, TOKENS)
  out = SmallLM(tiny(norm="preln", dtype=jnp.bfloat16)).apply({"params": params}, TOKENS)
  assert out.logits.dtype == jnp.bfloat16 and out.hidden_states[-1].dtype == jnp.bfloat16
  assert out.attention_weights[0].dtype == jnp.float32  # softmax runs in float32
  mask = np.asarray(ref.mask)
  for a, b in zip(ref.hidden_states + (ref.logits,), out.hidden_states + (out.logits,)):
    assert min_token_cosine(a, np.asarray(b, np.float32), mask) > 0.999
  np.testing.assert_allclose(
      float(lm_loss(out.logits, TOKENS, out.mask)),
      float(lm_loss(ref.logits, TOKENS, ref.mask)),
      rtol=1e-2,
  )
