"""Tests for normgrowth_jax.models.t5 (tiny configs; CPU)."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from normgrowth_jax.models.t5 import (
    T5Output,
    Transformer,
    cross_entropy_with_z_loss,
    get_config,
    make_loss_fn,
    relative_position_bucket,
)

ENC = jnp.array([[3, 7, 5, 9, 4, 2, 8, 1], [6, 2, 2, 11, 1, 0, 0, 0]])
DEC_IN = jnp.array([[0, 12, 13, 14, 15], [0, 16, 17, 0, 0]])
DEC_TGT = jnp.array([[12, 13, 14, 15, 1], [16, 17, 1, 0, 0]])


def small_cfg(**kw):
  """Tiny's shape (emb 8, 4 heads x 3, mlp 16, 2+2 layers) with a small vocabulary."""
  return get_config("tiny", **{"vocab_size": 32, "dropout_rate": 0.0, **kw})


def rbg_key(seed):
  """Dropout keys: "rbg" compiles ~5x faster than threefry on CPU (one RngBitGenerator op)."""
  return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def model_and_params():
  model = Transformer(small_cfg())
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ENC, DEC_IN, DEC_TGT)["params"]
  return model, params


@pytest.fixture(scope="module")
def loss_and_grad():
  """One compiled value_and_grad of the training loss (dropout 0.1), shared by two tests."""
  model = Transformer(small_cfg(dropout_rate=0.1))
  batch = {
      "encoder_input_tokens": ENC,
      "decoder_input_tokens": DEC_IN,
      "decoder_target_tokens": DEC_TGT,
  }
  grad_fn = jax.jit(jax.value_and_grad(make_loss_fn(model), has_aux=True))
  return lambda params, rng: grad_fn(params, batch, rng)


# ------------------------------------------------------------------ parameter names and shapes
def expected_t5x_shapes(vocab, emb, heads, head_dim, mlp, n_enc, n_dec):
  """T5X's examples/t5 parameter table, written out by hand."""
  hd = heads * head_dim
  attn = lambda prefix: {
      f"{prefix}/query/kernel": (emb, hd),
      f"{prefix}/key/kernel": (emb, hd),
      f"{prefix}/value/kernel": (emb, hd),
      f"{prefix}/out/kernel": (hd, emb),
  }
  mlp_ = lambda prefix: {
      f"{prefix}/wi_0/kernel": (emb, mlp),
      f"{prefix}/wi_1/kernel": (emb, mlp),
      f"{prefix}/wo/kernel": (mlp, emb),
  }
  table = {
      "token_embedder/embedding": (vocab, emb),
      "encoder/relpos_bias/rel_embedding": (heads, 32),
      "encoder/encoder_norm/scale": (emb,),
      "decoder/relpos_bias/rel_embedding": (heads, 32),
      "decoder/decoder_norm/scale": (emb,),
      "decoder/logits_dense/kernel": (emb, vocab),
  }
  for i in range(n_enc):
    p = f"encoder/layers_{i}"
    table[f"{p}/pre_attention_layer_norm/scale"] = (emb,)
    table[f"{p}/pre_mlp_layer_norm/scale"] = (emb,)
    table.update(attn(f"{p}/attention"))
    table.update(mlp_(f"{p}/mlp"))
  for i in range(n_dec):
    p = f"decoder/layers_{i}"
    for norm in (
        "pre_self_attention_layer_norm",
        "pre_cross_attention_layer_norm",
        "pre_mlp_layer_norm",
    ):
      table[f"{p}/{norm}/scale"] = (emb,)
    table.update(attn(f"{p}/self_attention"))
    table.update(attn(f"{p}/encoder_decoder_attention"))
    table.update(mlp_(f"{p}/mlp"))
  return table


def shape_table(params):
  return {"/".join(k): tuple(v.shape) for k, v in flatten_dict(params).items()}


def test_tiny_parameter_names_and_shapes_match_t5x():
  cfg = get_config("tiny")
  assert (cfg.vocab_size, cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim) == (
      32128,
      8,
      4,
      3,
      16,
  )
  shapes = jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0), ENC, DEC_IN)["params"]
  assert shape_table(shapes) == expected_t5x_shapes(32128, 8, 4, 3, 16, 2, 2)
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(shapes))


def test_mini_parameter_count():
  shapes = jax.eval_shape(Transformer(get_config("mini")).init, jax.random.PRNGKey(0), ENC, DEC_IN)[
      "params"
  ]
  n = sum(math.prod(v.shape) for v in jax.tree_util.tree_leaves(shapes))
  # 384*256 embed + 384*256 logits + 2*4*32 relpos + 9 norms... computed from the table:
  assert n == sum(math.prod(s) for s in expected_t5x_shapes(384, 256, 4, 64, 1024, 4, 4).values())
  assert 9.0e6 < n < 10.0e6  # the benchmark's "9.6M-parameter" t5-mini


def test_logits_via_embedding_drops_logits_dense():
  cfg = small_cfg(logits_via_embedding=True)
  shapes = jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0), ENC, DEC_IN)["params"]
  assert "decoder/logits_dense/kernel" not in shape_table(shapes)


def test_t5x_shaped_checkpoint_loads_and_every_leaf_is_used(model_and_params, loss_and_grad):
  model, _ = model_and_params
  table = expected_t5x_shapes(32, 8, 4, 3, 16, 2, 2)
  rng = np.random.default_rng(0)
  ckpt = unflatten_dict(
      {tuple(k.split("/")): (0.3 * rng.normal(size=s)).astype(np.float32) for k, s in table.items()}
  )
  out = model.apply({"params": ckpt}, ENC, DEC_IN, DEC_TGT)
  assert out.logits.shape == (2, 5, 32) and np.all(np.isfinite(out.logits))
  # Every checkpoint leaf influences the loss (nothing loaded is silently ignored).
  (loss, _), grads = loss_and_grad(ckpt, rbg_key(0))
  assert np.isfinite(float(loss))
  unused = [k for k, g in shape_table_values(grads).items() if not np.any(g != 0)]
  assert unused == []
  # A checkpoint with a missing leaf is rejected.
  broken = unflatten_dict(
      {
          tuple(k.split("/")): v
          for k, v in flatten_dict(ckpt, sep="/").items()
          if k != "encoder/encoder_norm/scale"
      }
  )
  with pytest.raises(flax.errors.ScopeParamNotFoundError, match="encoder_norm"):
    model.apply({"params": broken}, ENC, DEC_IN, DEC_TGT)


def shape_table_values(params):
  return {"/".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}


# ------------------------------------------------------------------ relative position buckets
def reference_bucket(relative_position, bidirectional, num_buckets=32, max_distance=128):
  """The T5 paper's bucketing, one scalar at a time in float64."""
  offset = 0
  if bidirectional:
    num_buckets //= 2
    if relative_position > 0:  # key after the query
      offset = num_buckets
    distance = abs(relative_position)
  else:
    distance = max(-relative_position, 0)
  exact = num_buckets // 2
  if distance < exact:
    return offset + distance
  # logarithmic buckets: exact .. num_buckets-1 cover distances exact .. max_distance
  frac = math.log(distance / exact) / math.log(max_distance / exact)
  return offset + min(exact + int(math.floor(frac * (num_buckets - exact) + 1e-9)), num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket_matches_reference(bidirectional):
  rel = np.arange(-400, 401)
  got = relative_position_bucket(rel, bidirectional)
  want = np.array([reference_bucket(int(r), bidirectional) for r in rel])
  np.testing.assert_array_equal(got, want)
  assert got.min() == 0 and got.max() == 31


def test_relative_position_bucket_landmarks():
  b = lambda r, bi: int(relative_position_bucket(np.array([r]), bi)[0])
  # Bidirectional: 8 exact buckets per side, log buckets up to 128, then saturate.
  assert [b(-r, True) for r in (0, 1, 7, 8, 127, 128, 1000)] == [0, 1, 7, 8, 15, 15, 15]
  assert [b(r, True) for r in (1, 7, 8, 1000)] == [17, 23, 24, 31]
  # Causal: 16 exact buckets, future positions share bucket 0.
  assert [b(-r, False) for r in (0, 15, 16, 127, 128)] == [0, 15, 16, 31, 31]
  assert b(5, False) == 0


# ------------------------------------------------------------------ masking
def test_output_structure(model_and_params):
  model, params = model_and_params
  out = model.apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  assert isinstance(out, T5Output)
  assert out.logits.shape == (2, 5, 32) and out.logits.dtype == jnp.float32
  assert len(out.encoder_hidden_states) == 3 and len(out.decoder_hidden_states) == 3
  assert out.encoder_hidden_states[0].shape == (2, 8, 8)
  assert [w.shape for w in out.encoder_attention_weights] == [(2, 4, 8, 8)] * 2
  assert [w.shape for w in out.decoder_attention_weights] == [(2, 4, 5, 5)] * 2
  assert [w.shape for w in out.cross_attention_weights] == [(2, 4, 5, 8)] * 2
  np.testing.assert_array_equal(out.mask, ENC > 0)
  np.testing.assert_array_equal(out.decoder_mask, DEC_TGT > 0)
  # The embedding output is the raw (unscaled) token embedding.
  np.testing.assert_array_equal(
      out.encoder_hidden_states[0], params["token_embedder"]["embedding"][ENC]
  )
  # The last hidden state is the encoder_norm output (what the decoder attends to).
  enc = model.apply({"params": params}, ENC, method=Transformer.encode)
  np.testing.assert_array_equal(enc.encoded, out.encoder_hidden_states[-1])


def test_decoder_is_causal(model_and_params):
  model, params = model_and_params
  apply = jax.jit(lambda d: model.apply({"params": params}, ENC, d, DEC_TGT).logits)
  base = apply(DEC_IN)
  changed = apply(DEC_IN.at[0, 3].set(29))
  np.testing.assert_array_equal(base[0, :3], changed[0, :3])  # bit-identical before pos 3
  assert np.max(np.abs(base[0, 3:] - changed[0, 3:])) > 1e-4
  np.testing.assert_array_equal(base[1], changed[1])
  w = model.apply({"params": params}, ENC, DEC_IN, DEC_TGT).decoder_attention_weights
  future = np.triu(np.ones((5, 5), bool), k=1)
  for layer in w:
    assert np.all(np.asarray(layer)[:, :, future] == 0)


def test_long_decoder_matches_float64_reference_past_bucket_boundary():
  """48 decoder positions: causal distances 9..47 fall in buckets where the decoder's
  unidirectional scheme (16 exact, log to 128) and the encoder's bidirectional one differ."""
  from normgrowth_jax.models.hf_t5 import t5x_to_hf  # pylint: disable=g-import-not-at-top
  from t5_reference import t5_forward  # pylint: disable=g-import-not-at-top

  cfg = small_cfg()
  model = Transformer(cfg)
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), _random_params(model, 5))
  rng = np.random.default_rng(5)
  dec_in = np.concatenate([np.zeros((2, 1), int), rng.integers(2, 32, size=(2, 47))], axis=1)
  dec_tgt = np.concatenate([dec_in[:, 1:], np.ones((2, 1), int)], axis=1)
  with jax.default_matmul_precision("float32"):
    out = jax.jit(model.apply)({"params": params}, ENC, dec_in, dec_tgt)
  hf_cfg = dict(
      d_model=cfg.emb_dim,
      d_kv=cfg.head_dim,
      num_heads=cfg.num_heads,
      num_layers=cfg.num_encoder_layers,
      num_decoder_layers=cfg.num_decoder_layers,
      feed_forward_proj="gated-gelu",
      layer_norm_epsilon=1e-6,
      relative_attention_num_buckets=32,
      relative_attention_max_distance=128,
      tie_word_embeddings=False,
  )
  ref = t5_forward(t5x_to_hf(params, cfg), hf_cfg, np.asarray(ENC), dec_in)
  assert len(out.decoder_hidden_states) == len(ref["decoder_hidden_states"]) == 3
  for got, want in zip(
      out.decoder_hidden_states[1:] + (out.logits,),
      ref["decoder_hidden_states"][1:] + [ref["logits"]],
  ):
    np.testing.assert_allclose(
        np.asarray(got, np.float64), want, rtol=1e-4, atol=1e-4 * np.abs(want).max()
    )


def test_encoder_padding_is_masked(model_and_params):
  model, params = model_and_params
  out = model.apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  for layer in out.encoder_attention_weights + out.cross_attention_weights:
    np.testing.assert_array_equal(np.asarray(layer)[1, :, :, 5:], 0.0)
  # Extra padding changes nothing for real tokens (compared at float32 precision: the two
  # lengths are different programs, whose TF32 products on a GPU differ by ~1e-3).
  longer = jnp.pad(ENC, ((0, 0), (0, 4)))
  with jax.default_matmul_precision("float32"):
    out = model.apply({"params": params}, ENC, DEC_IN, DEC_TGT)
    out2 = model.apply({"params": params}, longer, DEC_IN, DEC_TGT)
  np.testing.assert_allclose(out2.logits, out.logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      out2.encoder_hidden_states[-1][:, :8], out.encoder_hidden_states[-1], rtol=1e-5, atol=1e-5
  )


def test_packed_examples_equal_unpacked(model_and_params):
  model, params = model_and_params
  # Two examples packed into one row (same shapes as ENC / DEC_IN, so eager ops are cached).
  ex1 = dict(enc=[3, 4, 5, 1], dec_in=[0, 7, 8], tgt=[7, 8, 1])
  ex2 = dict(enc=[6, 9, 1], dec_in=[0, 10], tgt=[10, 1])
  pad = lambda v, n: v + [0] * (n - len(v))
  row = lambda exs, key, n: pad(sum((e[key] for e in exs), []), n)
  segs = lambda exs, key, n: pad(sum(([k + 1] * len(e[key]) for k, e in enumerate(exs)), []), n)

  def run(rows):
    enc = jnp.array([row(r, "enc", 8) for r in rows])
    dec_in = jnp.array([row(r, "dec_in", 5) for r in rows])
    tgt = jnp.array([row(r, "tgt", 5) for r in rows])
    enc_seg = jnp.array([segs(r, "enc", 8) for r in rows])
    dec_seg = jnp.array([segs(r, "tgt", 5) for r in rows])
    return model.apply({"params": params}, enc, dec_in, tgt, enc_seg, dec_seg).logits

  packed_and_ex2 = run([[ex1, ex2], [ex2]])
  ex1_alone = run([[ex1], [ex2]])
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(packed_and_ex2[0, :3], ex1_alone[0, :3], **tol)
  np.testing.assert_allclose(packed_and_ex2[0, 3:5], packed_and_ex2[1, :2], **tol)
  # Without segment ids the two examples would see each other.
  enc = jnp.array([row([ex1, ex2], "enc", 8)] * 2)
  leaky = model.apply(
      {"params": params},
      enc,
      jnp.array([row([ex1, ex2], "dec_in", 5)] * 2),
      jnp.array([row([ex1, ex2], "tgt", 5)] * 2),
  ).logits
  assert np.max(np.abs(leaky[0, 3:5] - packed_and_ex2[1, :2])) > 1e-4


# ------------------------------------------------------------------ loss
def np_loss(logits, targets, weights, z_loss, factor):
  logits = logits.astype(np.float64)
  m = logits.max(-1, keepdims=True)
  log_z = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  tgt = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  per = log_z - tgt + z_loss * log_z**2
  total, total_z = (per * weights).sum(), (z_loss * log_z**2 * weights).sum()
  acc = ((logits.argmax(-1) == targets) * weights).sum() / weights.sum()
  if factor is not None:
    total, total_z = total / factor, total_z / factor
  return total, total_z, acc, weights.sum()


@pytest.mark.parametrize("factor", [None, 37.0])
@pytest.mark.parametrize("explicit_weights", [False, True])
def test_loss_matches_float64_numpy(factor, explicit_weights):
  rng = np.random.default_rng(1)
  logits = (rng.normal(size=(3, 7, 13)) * 4).astype(np.float32)
  targets = rng.integers(0, 13, size=(3, 7))
  targets[:, -2:] = 0
  weights = rng.uniform(0.5, 2, size=(3, 7)) if explicit_weights else (targets > 0) * 1.0
  got = cross_entropy_with_z_loss(
      jnp.asarray(logits),
      jnp.asarray(targets),
      jnp.asarray(weights, jnp.float32) if explicit_weights else None,
      1e-4,
      factor,
  )
  want = np_loss(logits, targets, weights, 1e-4, factor)
  for g, w in zip(got, want):
    np.testing.assert_allclose(float(g), w, rtol=2e-6)
  assert float(got[1]) > 0


def test_adamw_steps_reduce_loss(model_and_params, loss_and_grad):
  _, params = model_and_params
  opt = optax.adamw(3e-2)
  state = opt.init(params)

  @jax.jit
  def update(grads, state, params):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  losses = []
  for i in range(25):
    (loss, metrics), grads = loss_and_grad(params, rbg_key(i))
    params, state = update(grads, state, params)
    losses.append(float(loss))
  assert float(metrics["weight_sum"]) == 8.0
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses


def test_dropout_needs_rng_and_changes_output(model_and_params):
  _, params = model_and_params
  model = Transformer(small_cfg(dropout_rate=0.5))
  det = model.apply({"params": params}, ENC, DEC_IN, DEC_TGT).logits
  a = model.apply(
      {"params": params}, ENC, DEC_IN, DEC_TGT, enable_dropout=True, rngs={"dropout": rbg_key(1)}
  ).logits
  assert np.max(np.abs(a - det)) > 1e-3
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    model.apply({"params": params}, ENC, DEC_IN, DEC_TGT, enable_dropout=True)


def test_bfloat16_runs_with_float32_logits(model_and_params):
  ref_model, params = model_and_params
  model = Transformer(small_cfg(dtype="bfloat16", float32_attention_logits=True))
  out = model.apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  ref = ref_model.apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  assert out.logits.dtype == jnp.float32
  assert out.encoder_hidden_states[1].dtype == jnp.bfloat16
  np.testing.assert_allclose(out.logits, ref.logits, atol=0.15 * float(jnp.std(ref.logits)))


# ------------------------------------------------------------------ saturated limit
def test_saturated_runs_and_gives_hard_attention(model_and_params):
  model, params = model_and_params
  out = model.apply({"params": params}, ENC, DEC_IN, DEC_TGT, saturated=True)
  assert out.logits.shape == (2, 5, 32) and np.all(np.isfinite(out.logits))
  for w in out.encoder_attention_weights:
    w = np.asarray(w)
    real_rows = w[0]  # example 0 has no padding: every row is a distribution
    np.testing.assert_allclose(real_rows.sum(-1), 1.0, rtol=1e-6)
    # hard attention: each weight is 0 or 1/k for k tied maximisers
    nz = real_rows[real_rows > 0]
    k = np.round(1 / nz)
    np.testing.assert_allclose(nz, 1 / k, rtol=1e-6)
  future = np.triu(np.ones((5, 5), bool), k=1)
  for w in out.decoder_attention_weights:
    assert np.all(np.asarray(w)[:, :, future] == 0)
  # encode -> decode in limit mode equals the one-call limit.
  enc = model.apply({"params": params}, ENC, saturated=True, method=Transformer.encode)
  dec = model.apply(
      {"params": params},
      enc.encoded,
      ENC,
      DEC_IN,
      DEC_TGT,
      saturated=True,
      method=Transformer.decode,
  )
  np.testing.assert_array_equal(dec.logits, out.logits)
  with pytest.raises(ValueError, match="enable_dropout"):
    model.apply({"params": params}, ENC, DEC_IN, saturated=True, enable_dropout=True)


def _cosine_per_layer(finite, limit, mask):
  sims = []
  for f, s in zip(finite, limit):
    f, s = np.asarray(f, np.float64), np.asarray(s, np.float64)
    cos = (f * s).sum(-1) / (np.linalg.norm(f, axis=-1) * np.linalg.norm(s, axis=-1))
    sims.append(cos[mask].mean())
  return np.array(sims)


def test_finite_rho_approaches_saturated_limit_float64():
  with jax.enable_x64(True):
    cfg = get_config(
        "tiny", vocab_size=32, dropout_rate=0.0, dtype="float64", emb_dim=16, head_dim=4, mlp_dim=32
    )
    model = Transformer(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(3), ENC, DEC_IN)["params"]
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
    encode = jax.jit(
        lambda p, saturated=False: model.apply(
            {"params": p}, ENC, saturated=saturated, method=Transformer.encode
        ),
        static_argnames="saturated",
    )
    limit = encode(params, saturated=True).hidden_states
    mask = np.asarray(ENC > 0)
    curve = []
    for rho in (1e1, 1e2, 1e3, 1e4):
      scaled = jax.tree_util.tree_map(lambda p: p * rho, params)
      curve.append(_cosine_per_layer(encode(scaled).hidden_states, limit, mask))
    curve = np.array(curve)  # [rho, layer]
  np.testing.assert_allclose(curve[:, 0], 1.0, rtol=1e-12)  # embedding: exactly rho * E
  assert np.all(curve[-1] > 0.9999), curve
  assert np.all(np.diff(curve.min(axis=1)) >= -1e-9), curve  # the worst layer only improves
  assert curve[0].min() < curve[-1].min()


def test_one_hot_bias_lookup_equals_gather_and_its_gradient():
  """The plain-mode bias lookup (a one-hot matmul, fast to differentiate) is the gather."""
  from normgrowth_jax.models.t5 import _one_hot_lookup

  rng = np.random.default_rng(0)
  table = jnp.asarray(rng.normal(size=(3, 32)), jnp.float32)
  buckets = rng.integers(0, 32, size=(5, 7))
  np.testing.assert_allclose(
      _one_hot_lookup(table, buckets), jnp.take(table, buckets, axis=1), rtol=1e-6, atol=1e-6
  )
  g = jax.grad(lambda t: jnp.sum(_one_hot_lookup(t, buckets) ** 2))(table)
  g_ref = jax.grad(lambda t: jnp.sum(jnp.take(t, buckets, axis=1) ** 2))(table)
  np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)


def _random_params(model, seed):
  """Generic random float64 params of `model`'s tree (tracing only: no init compilation)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), ENC, DEC_IN)["params"]
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = path[-1].key
    if name == "scale":
      return 1 + 0.3 * rng.normal(size=s.shape)
    return rng.normal(size=s.shape) / (np.sqrt(s.shape[0]) if name == "kernel" else 1)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(mlp_activations=("relu",), logits_via_embedding=True)],
    ids=["t5.1.1", "t5v1.0"],
)
def test_finite_rho_approaches_saturated_limit_decoder_float64(overrides):
  """The decoder's limit (self + cross attention, logits) is the rho -> inf limit too."""
  with jax.enable_x64(True):
    cfg = get_config(
        "tiny",
        vocab_size=32,
        dropout_rate=0.0,
        dtype="float64",
        emb_dim=16,
        head_dim=4,
        mlp_dim=32,
        **overrides,
    )
    model = Transformer(cfg)
    params = _random_params(model, seed=4)

    def compiled(saturated):  # LLVM optimisation off: compiles ~2x faster, runs once
      fn = lambda p: model.apply({"params": p}, ENC, DEC_IN, DEC_TGT, saturated=saturated)
      return jax.jit(fn).lower(params).compile({"xla_backend_optimization_level": 0})

    limit, finite = compiled(True)(params), compiled(False)
    states = lambda out: (out.encoder_hidden_states + out.decoder_hidden_states + (out.logits,))
    n_enc = len(limit.encoder_hidden_states)
    masks = [np.asarray(ENC > 0)] * n_enc + [np.asarray(DEC_TGT > 0)] * (len(states(limit)) - n_enc)
    curve = []
    for rho in (1e1, 1e3, 1e4):
      out = finite(jax.tree_util.tree_map(lambda p: p * rho, params))
      curve.append(
          [_cosine_per_layer([f], [s], m)[0] for f, s, m in zip(states(out), states(limit), masks)]
      )
    curve = np.array(curve)  # [rho, encoder states + decoder states + logits]
  np.testing.assert_allclose(curve[:, [0, n_enc]], 1.0, rtol=1e-12)  # embeddings: rho * E
  assert np.all(curve[-1] > 0.9999), curve
  assert curve[0].min() < curve[-1].min(), curve
