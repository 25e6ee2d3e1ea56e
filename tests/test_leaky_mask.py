"""SmallLM's `attention_mask="original_leaky"`: the original code's mask, by hand and by formula.

The original (viking-sudo-rm/norm-growth, src/si_transformer.py, SiSelfAttention with
masked=True) computes, per head,
    scores = (q k^T) / sqrt(d_head);  scores = tril(1) * scores;  weights = softmax(scores)
over ALL positions (padding included), and saturate.py counts per query
    n = #(weights > 1e-5) over all keys, then mean / std / P(n > 1) over ALL queries
of the padded batch.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normgrowth_jax import asymptotic as asy
from normgrowth_jax import saturation as sat
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig, leaky_attention_scores

# A hand-worked 3 x 3 example: rows are queries 0..2, columns keys 0..2.
S = np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, 5.0], [0.5, 0.5, -4.0]])
# Future scores (above the diagonal) become 0 and stay in the softmax:
#   row 0: softmax(1, 0, 0)     = (e, 1, 1) / (e + 2)
#   row 1: softmax(-1, -2, 0)   = (e^-1, e^-2, 1) / (e^-1 + e^-2 + 1)
#   row 2: softmax(.5, .5, -4)  = (e^.5, e^.5, e^-4) / (2 e^.5 + e^-4)
HAND = np.array(
    [[0.576117, 0.211942, 0.211942], [0.244728, 0.090031, 0.665241], [0.497238, 0.497238, 0.005524]]
)


def test_leaky_scores_and_softmax_match_the_hand_worked_example():
  leaky = leaky_attention_scores(jnp.asarray(S))
  np.testing.assert_array_equal(leaky, [[1, 0, 0], [-1, -2, 0], [0.5, 0.5, -4]])
  np.testing.assert_allclose(jax.nn.softmax(leaky, axis=-1), HAND, atol=2e-6)
  # The correct mask would give (1, 0, 0), (e^-1, e^-2, 0)/(...), row 2 unchanged.
  assert HAND[1, 2] > 0.6  # the leak: query 1 puts 2/3 of its weight on the future key 2


def test_leaky_saturated_limit_by_hand():
  # rho -> inf on the hand example: row 0 argmax key 0; row 1's visible scores are all < 0,
  # so the zero-scored future key wins; row 2 ties keys 0 and 1.
  w = asy.leading(asy.softmax(leaky_attention_scores(asy.lift(jnp.asarray(S), 2.0))))
  np.testing.assert_allclose(w, [[1, 0, 0], [0, 0, 1], [0.5, 0.5, 0]], atol=1e-7)
  # A longer row: query 1 with negative visible scores spreads over ALL 3 later positions.
  s4 = jnp.asarray(
      [[2.0, 9.0, 9.0, 9.0], [-3.0, -1.0, 9.0, 9.0], [1.0, 1.0, 1.0, 9.0], [-1.0, -1.0, -1.0, -1.0]]
  )
  w4 = asy.leading(asy.softmax(leaky_attention_scores(asy.lift(s4, 2.0))))
  np.testing.assert_allclose(w4[1], [0, 0, 0.5, 0.5], atol=1e-7)
  np.testing.assert_allclose(w4[2], [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-7)
  np.testing.assert_allclose(w4[3], [0.25] * 4, atol=1e-7)  # the last query has no future
  # The original's statistics over the padded length (every query, every key):
  counts = np.array([1, 2, 3, 4])
  stats = sat.attention_stats(w4[None, None], mask=None)
  assert float(stats["num_attended"][0, 0]) == pytest.approx(counts.mean())
  assert float(stats["split_fraction"][0, 0]) == pytest.approx(0.75)
  assert float(stats["num_attended_std"][0, 0]) == pytest.approx(counts.std())


def _original_forward(cfg, params, tokens):
  """Float64 NumPy forward of the ORIGINAL's formula (pre-/post-norm, biases, scaled scores)."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  tokens = np.asarray(tokens)
  b, l = tokens.shape
  h, dh = cfg.num_heads, cfg.d_model // cfg.num_heads
  x = p["embed"]["embedding"][tokens] + p["pos_embed"]["embedding"][np.arange(l)][None]

  def dense(q, z):
    return z @ q["kernel"] + q["bias"]

  def ln(q, z):
    mu = z.mean(-1, keepdims=True)
    var = ((z - mu) ** 2).mean(-1, keepdims=True)
    return (z - mu) / np.sqrt(var + cfg.layer_norm_eps) * q["scale"] + q["bias"]

  hidden, weights = [x], []
  tril = np.tril(np.ones((l, l)))
  for i in range(cfg.num_layers):
    layer = p["encoder"][f"layers_{i}"]
    att = layer["attention"]
    heads = lambda name: dense(att[name], x).reshape(b, l, h, dh)  # noqa: E731
    scores = np.einsum("bqhd,bkhd->bhqk", heads("query"), heads("key")) / math.sqrt(dh)
    scores = tril[None, None] * scores  # the original's "mask"
    e = np.exp(scores - scores.max(-1, keepdims=True))
    w = e / e.sum(-1, keepdims=True)  # softmax over ALL positions
    weights.append(w)
    y = dense(att["out"], np.einsum("bhqk,bkhd->bqhd", w, heads("value")).reshape(b, l, -1))
    x = (
        x + ln(layer["attention_norm"], y)
        if cfg.norm == "prenorm_paper"
        else ln(layer["attention_norm"], x + y)
    )
    y = dense(layer["mlp"]["wo"], np.maximum(dense(layer["mlp"]["wi"], x), 0))
    x = (
        x + ln(layer["mlp_norm"], y)
        if cfg.norm == "prenorm_paper"
        else ln(layer["mlp_norm"], x + y)
    )
    hidden.append(x)
  return hidden, weights


@pytest.mark.parametrize("norm", ["prenorm_paper", "postnorm"])
def test_model_equals_the_originals_formula(norm):
  cfg = SmallLMConfig(
      vocab_size=17,
      num_layers=2,
      d_model=16,
      d_ff=24,
      num_heads=4,
      max_len=6,
      norm=norm,
      attention_mask="original_leaky",
  )
  tokens = jnp.array([[3, 7, 1, 9, 0, 0], [6, 2, 2, 11, 5, 4]])  # row 0 has 2 padding slots
  model = SmallLM(cfg)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t))
  with jax.default_matmul_precision("float32"):  # the reference's products: not TF32 (GPU)
    out = apply(params, tokens)
  hidden, weights = _original_forward(cfg, params, tokens)
  for got, want in zip(out.attention_weights, weights):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)
    assert np.all(np.asarray(got)[0, :, :4, 4:] >= 0)
  for got, want in zip(out.hidden_states, hidden):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
  # The padding and the future are visible: some early query attends past itself...
  w0 = np.asarray(out.attention_weights[0])
  assert w0[0, :, 0, 1:].sum() > 0.1
  # ...and the real tokens' hidden states depend on the padding tokens' ids.
  other = apply(params, tokens.at[0, 4:].set(8))
  assert not np.allclose(other.hidden_states[-1][0, :4], out.hidden_states[-1][0, :4])
  correct = SmallLM(SmallLMConfig(**{**cfg.__dict__, "attention_mask": "causal"}))
  apply_c = jax.jit(lambda p, t: correct.apply({"params": p}, t).hidden_states[-1])
  c1 = apply_c(params, tokens)[0, :4]
  c2 = apply_c(params, tokens.at[0, 4:].set(8))[0, :4]
  np.testing.assert_allclose(c1, c2, atol=1e-6)


def test_model_saturated_limit_matches_large_rho_in_float64():
  with jax.enable_x64(True):
    cfg = SmallLMConfig(
        vocab_size=17,
        num_layers=2,
        d_model=16,
        d_ff=24,
        num_heads=4,
        max_len=6,
        attention_mask="original_leaky",
        dtype=jnp.float64,
        param_dtype=jnp.float64,
    )
    tokens = jnp.array([[3, 7, 1, 9, 0, 0], [6, 2, 2, 11, 5, 4]])
    model = SmallLM(cfg)
    params = model.init(jax.random.PRNGKey(1), tokens)["params"]
    apply = jax.jit(
        lambda p, saturated: model.apply({"params": p}, tokens, saturated=saturated),
        static_argnums=1,
    )
    limit = apply(params, True)
    big = apply(jax.tree.map(lambda p: p * 1e5, params), False)
    for a, b in zip(big.attention_weights, limit.attention_weights):
      np.testing.assert_allclose(a, b, atol=1e-6)
    # Saturated leaky heads do put weight on future/padding keys somewhere in this model.
    w = np.stack([np.asarray(x) for x in limit.attention_weights])
    assert np.triu(w, k=1).sum() > 0


def test_unknown_attention_mask_is_refused():
  with pytest.raises(ValueError, match="attention_mask"):
    SmallLMConfig(vocab_size=5, attention_mask="leaky")
