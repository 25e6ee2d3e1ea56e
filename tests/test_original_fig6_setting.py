"""SmallLM's switches for the original Fig. 6 script's setting, each against a float64 reference.

The original (viking-sudo-rm/norm-growth, grid.py with ``--trans vaswani``) ran PyTorch's
``nn.TransformerEncoderLayer`` (post-norm, ReLU, dropout 0.1) with no ``src_mask`` and fed it a
[batch, len, d] tensor although the encoder reads [len, batch, d] (``batch_first=False``).
`_torch_forward` re-implements what PyTorch computes on ``src`` of shape [S, N, E]:
``F.multi_head_attention_forward`` reshapes q, k, v [S, N, E] -> [N * heads, S, d_head] and
attends along S for each of the N columns. Fed correctly, ``src`` is the embeddings transposed
to [len, batch, d]; fed as the original did, ``src`` is the [batch, len, d] embeddings
themselves, so S = batch and N = len, and the output [S, N, E] is read back as [batch, len, d]
without any transpose.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from normgrowth_jax import causal_lm
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

TOKENS = np.array(
    [[3, 7, 1, 9], [6, 2, 2, 0], [5, 4, 8, 11]]  # one padding slot
)  # batch 3, length 4


def _config(**switches):
  base = dict(
      vocab_size=13, num_layers=2, d_model=8, d_ff=12, num_heads=2, max_len=4, norm="postnorm"
  )
  return SmallLMConfig(**{**base, **switches})


def _torch_mha(att, src, key_real, cfg):
  """nn.MultiheadAttention(src, src, src) on src [S, N, E], float64, PyTorch's reshapes.

  key_real: [N, S] bool, False = key_padding_mask (ignored unless the mask is "causal").
  Returns (output [S, N, E], weights [N, heads, S, S]).
  """
  s_len, n, e = src.shape
  h = cfg.num_heads
  dh = e // h

  def proj(name):  # [S, N, E] -> [N * h, S, dh], as torch's q.view(S, N * h, dh).transpose(0, 1)
    y = src @ att[name]["kernel"] + att[name]["bias"]
    return y.reshape(s_len, n * h, dh).transpose(1, 0, 2)

  q = proj("query") / math.sqrt(dh)
  k, v = proj("key"), proj("value")
  scores = q @ k.transpose(0, 2, 1)  # [N * h, S, S]
  tril = np.tril(np.ones((s_len, s_len)))
  if cfg.attention_mask == "causal":
    visible = (tril[None] > 0) & np.repeat(key_real, h, axis=0)[:, None, :]
    scores = np.where(visible, scores, -np.inf)
  elif cfg.attention_mask == "original_leaky":
    scores = tril[None] * scores
  e_ = np.exp(scores - scores.max(-1, keepdims=True))
  w = e_ / e_.sum(-1, keepdims=True)
  out = (w @ v).transpose(1, 0, 2).reshape(s_len, n, e)
  return out @ att["out"]["kernel"] + att["out"]["bias"], w.reshape(n, h, s_len, s_len)


def _torch_forward(cfg, params, tokens):
  """Float64 forward of nn.TransformerEncoderLayer's post-norm in eval mode, fed as cfg says."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  b, l = tokens.shape
  x = p["embed"]["embedding"][tokens] + p["pos_embed"]["embedding"][np.arange(l)][None]
  swapped = cfg.attend_across == "batch"
  src = x if swapped else x.transpose(1, 0, 2)  # the original fed [b, l, d] as [S, N, E]
  real = tokens != cfg.pad_id  # [b, l]
  key_real = real.T if swapped else real  # [N, S]

  def ln(q, z):
    mu = z.mean(-1, keepdims=True)
    var = ((z - mu) ** 2).mean(-1, keepdims=True)
    return (z - mu) / np.sqrt(var + cfg.layer_norm_eps) * q["scale"] + q["bias"]

  act = (
      (lambda z: np.maximum(z, 0))
      if cfg.activation == "relu"
      else (lambda z: 0.5 * z * (1 + special.erf(z / math.sqrt(2))))
  )
  hidden, weights = [x], []
  for i in range(cfg.num_layers):
    layer = p["encoder"][f"layers_{i}"]
    y, w = _torch_mha(layer["attention"], src, key_real, cfg)
    weights.append(w)
    src = ln(layer["attention_norm"], src + y)
    mlp = layer["mlp"]
    y = act(src @ mlp["wi"]["kernel"] + mlp["wi"]["bias"]) @ mlp["wo"]["kernel"] + mlp["wo"]["bias"]
    src = ln(layer["mlp_norm"], src + y)
    hidden.append(src if swapped else src.transpose(1, 0, 2))  # read as [b, l, d] again
  return hidden, weights


def _apply(cfg, params, tokens=TOKENS, **kw):
  model = SmallLM(cfg)
  with jax.default_matmul_precision("float32"):
    return jax.jit(lambda p, t: model.apply({"params": p}, t, **kw))(params, jnp.asarray(tokens))


def _params(cfg, seed=0):
  return SmallLM(cfg).init(jax.random.PRNGKey(seed), jnp.asarray(TOKENS))["params"]


def test_attention_across_the_batch_by_hand():
  # One position, one head, by hand: at position t, sentence i's query against every
  # sentence's key at the same t, softmax over the 3 sentences (no mask).
  cfg = _config(attention_mask="none", attend_across="batch", num_layers=1)
  params = _params(cfg)
  out = _apply(cfg, params)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  att = p["encoder"]["layers_0"]["attention"]
  x = p["embed"]["embedding"][TOKENS] + p["pos_embed"]["embedding"][np.arange(4)][None]
  t, head, dh = 2, 1, 4
  cols = slice(head * dh, (head + 1) * dh)
  q = (x[:, t] @ att["query"]["kernel"] + att["query"]["bias"])[:, cols]  # [3 sentences, dh]
  k = (x[:, t] @ att["key"]["kernel"] + att["key"]["bias"])[:, cols]
  s = q @ k.T / math.sqrt(dh)  # [3, 3]: query sentence i, key sentence j
  w = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
  np.testing.assert_allclose(out.attention_weights[0][t, head], w, rtol=1e-5, atol=1e-6)
  assert out.attention_weights[0].shape == (4, 2, 3, 3)  # [len, heads, batch, batch]


@pytest.mark.parametrize("mask", ["none", "causal", "original_leaky"])
@pytest.mark.parametrize("across", ["batch", "sequence"])
def test_model_equals_pytorch_layer_fed_as_the_switches_say(mask, across):
  cfg = _config(attention_mask=mask, attend_across=across)
  params = _params(cfg)
  out = _apply(cfg, params)
  hidden, weights = _torch_forward(cfg, params, TOKENS)
  for got, want in zip(out.attention_weights, weights):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  for got, want in zip(out.hidden_states, hidden):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gelu_matches_the_reference_and_changes_only_the_mlp():
  relu, gelu = _config(attention_mask="none", attend_across="batch"), _config(
      attention_mask="none", attend_across="batch", activation="gelu"
  )
  params = _params(relu)
  a, b = _apply(relu, params), _apply(gelu, params)
  hidden, _ = _torch_forward(gelu, params, TOKENS)
  for got, want in zip(b.hidden_states, hidden):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Layer 0's attention runs before its MLP: identical; its output differs.
  np.testing.assert_array_equal(a.attention_weights[0], b.attention_weights[0])
  assert not np.allclose(a.hidden_states[1], b.hidden_states[1], atol=1e-3)


def test_across_the_batch_mixes_sentences_never_positions():
  cfg = _config(attention_mask="none", attend_across="batch")
  params = _params(cfg)
  other = TOKENS.copy()
  other[1, 2] = 10  # one token: sentence 1, position 2
  base = np.asarray(_apply(cfg, params).hidden_states[-1])
  changed = np.asarray(_apply(cfg, params, other).hidden_states[-1])
  moved = ~np.isclose(base, changed, atol=1e-6).all(-1)  # [b, l]: which outputs moved
  np.testing.assert_array_equal(moved, np.arange(4)[None, :].repeat(3, 0) == 2)
  # Along the sequence (no mask), the same change moves sentence 1 only, at every position.
  seq = _config(attention_mask="none")
  base = np.asarray(_apply(seq, params).hidden_states[-1])
  moved = ~np.isclose(
      base, np.asarray(_apply(seq, params, other).hidden_states[-1]), atol=1e-6
  ).all(-1)
  np.testing.assert_array_equal(moved, np.arange(3)[:, None].repeat(4, 1) == 1)


def test_defaults_unchanged_by_the_new_switches():
  default = _config()
  params = _params(default)
  ref = _apply(default, params)
  explicit = _config(
      attend_across="sequence", attention_dropout=0.1, activation_dropout=0.1, dropout=0.1
  )  # dropout is off when deterministic
  out = _apply(explicit, params)
  for a, b in zip(
      ref.hidden_states + ref.attention_weights, out.hidden_states + out.attention_weights
  ):
    np.testing.assert_array_equal(a, b)
  # Every switch keeps the parameter tree (the same params run every setting).
  for sw in (
      {"attend_across": "batch"},
      {"attention_mask": "none"},
      {"activation": "gelu"},
      {"attention_dropout": 0.1},
  ):
    tree = jax.tree_util.tree_structure(_params(_config(**sw)))
    assert tree == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize(
    "switch, sites",
    [
        ("dropout", {("layers_0", "Dropout_0"), ("layers_0", "Dropout_1")}),
        ("attention_dropout", {("layers_0", "attention", "Dropout_0")}),
        ("activation_dropout", {("layers_0", "mlp", "Dropout_0")}),
    ],
)
def test_each_dropout_rate_acts_only_at_its_site(switch, sites):
  cfg = _config(num_layers=1, **{switch: 0.5})
  params = _params(cfg)
  model = SmallLM(cfg)
  out, state = model.apply(
      {"params": params},
      jnp.asarray(TOKENS),
      deterministic=False,
      rngs={"dropout": jax.random.PRNGKey(3)},
      capture_intermediates=lambda m, _: isinstance(m, nn.Dropout),
      mutable=["intermediates"],
  )
  found = set()
  for path, _ in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
    keys = [k.key for k in path if hasattr(k, "key")]
    if "__call__" in keys:  # captured outputs; the attention's sown scores are not dropout
      found.add(tuple(k for k in keys if k not in ("encoder", "__call__")))
  assert found == sites
  # The returned attention weights are the softmax's (before dropout), as torch returns.
  ref = _apply(_config(num_layers=1), params)
  if switch == "attention_dropout":
    np.testing.assert_allclose(out.attention_weights[0], ref.attention_weights[0], atol=1e-6)
  assert not np.allclose(out.hidden_states[-1], ref.hidden_states[-1], atol=1e-3)


def test_loss_adapter_draws_dropout_for_any_rate():
  model = SmallLM(_config(activation_dropout=0.5))
  init_fn, loss_fn = causal_lm.loss_adapter(model)
  batch = {causal_lm.TOKENS: jnp.asarray(TOKENS)}
  params = init_fn(jax.random.PRNGKey(0), batch)
  l1, _ = loss_fn(params, batch, jax.random.PRNGKey(1))
  l2, _ = loss_fn(params, batch, jax.random.PRNGKey(2))
  assert float(l1) != float(l2)


def test_saturated_limit_across_the_batch_matches_large_rho_in_float64():
  with jax.enable_x64(True):
    # Pre-norm x + LN(F(x)): post-norm's leading term forgets x (LN(x + F(x)) ~ LN(F(x)) as
    # F's power exceeds x's), so sentences that pick the same key tie exactly in the limit.
    cfg = _config(
        attention_mask="none",
        attend_across="batch",
        norm="prenorm_paper",
        dtype=jnp.float64,
        param_dtype=jnp.float64,
    )
    model = SmallLM(cfg)
    params = model.init(jax.random.PRNGKey(1), jnp.asarray(TOKENS))["params"]
    apply = jax.jit(
        lambda p, saturated: model.apply({"params": p}, jnp.asarray(TOKENS), saturated=saturated),
        static_argnums=1,
    )
    limit = apply(params, True)
    big = apply(jax.tree.map(lambda p: p * 1e5, params), False)
    for a, b in zip(big.attention_weights, limit.attention_weights):
      np.testing.assert_allclose(a, b, atol=1e-6)


def test_unknown_attend_across_is_refused():
  with pytest.raises(ValueError, match="attend_across"):
    SmallLMConfig(vocab_size=5, attend_across="length")
