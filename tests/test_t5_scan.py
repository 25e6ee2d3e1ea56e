"""Scanned T5 layers (`T5Config.scan_layers`) equal unrolled ones; the params converter; remat and
`jax.nn.dot_product_attention` options (tiny configs; CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from normgrowth_jax import norms, saturation
from normgrowth_jax.analysis import checkpoints as ackpt
from normgrowth_jax.models import t5
from normgrowth_jax.models.t5_scan import is_scanned, scan_params, unscan_params

# Row 1 has encoder and decoder padding (fully masked query rows).
ENC = jnp.array([[3, 7, 5, 9, 4, 2, 8, 1], [6, 2, 2, 11, 1, 0, 0, 0]])
DEC_IN = jnp.array([[0, 12, 13, 14, 15], [0, 16, 17, 0, 0]])
DEC_TGT = jnp.array([[12, 13, 14, 15, 1], [16, 17, 1, 0, 0]])
BATCH = {
    "encoder_input_tokens": ENC,
    "decoder_input_tokens": DEC_IN,
    "decoder_target_tokens": DEC_TGT,
}


def cfg_of(**kw):
  """Tiny's widths, 3 encoder and 2 decoder layers (the stacks differ in depth)."""
  return t5.get_config(
      "tiny",
      **{
          "vocab_size": 32,
          "dropout_rate": 0.0,
          "num_encoder_layers": 3,
          "num_decoder_layers": 2,
          **kw,
      },
  )


@pytest.fixture(scope="module")
def unrolled_params():
  model = t5.Transformer(cfg_of())
  return jax.jit(model.init)(jax.random.PRNGKey(0), ENC, DEC_IN, DEC_TGT)["params"]


def flat(tree):
  return {"/".join(k): np.asarray(v) for k, v in flatten_dict(tree).items()}


def assert_close(a, b, rtol=2e-5, atol=2e-6):
  fa, fb = flat(a), flat(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=k)


def grads_of(cfg, params, rng=None):
  """Loss and gradients at float32 matmul precision: the variants compared here fuse their
  products differently, which TF32 (a GPU's default) turns into 1e-3 differences."""
  loss_fn = t5.make_loss_fn(t5.Transformer(cfg), enable_dropout=rng is not None)
  with jax.default_matmul_precision("float32"):
    (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        params, BATCH, jax.random.PRNGKey(0) if rng is None else rng
    )
  return loss, grads


# ---------------------------------------------------------------------------- the converter
def test_converter_round_trip_is_exact(unrolled_params):
  scanned = scan_params(unrolled_params)
  assert is_scanned(scanned) and not is_scanned(unrolled_params)
  assert scanned["encoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (3, 16, 8)
  assert scanned["decoder"]["layers"]["self_attention"]["query"]["kernel"].shape == (2, 8, 12)
  np.testing.assert_array_equal(
      scanned["encoder"]["layers"]["attention"]["key"]["kernel"][2],
      unrolled_params["encoder"]["layers_2"]["attention"]["key"]["kernel"],
  )
  back = unscan_params(scanned)
  assert sorted(flat(back)) == sorted(flat(unrolled_params))
  for k, v in flat(unrolled_params).items():
    np.testing.assert_array_equal(flat(back)[k], v, err_msg=k)
  again = flat(scan_params(back))
  for k, v in flat(scanned).items():
    np.testing.assert_array_equal(again[k], v, err_msg=k)
  numpy_tree = jax.tree_util.tree_map(np.asarray, unrolled_params)
  assert isinstance(scan_params(numpy_tree)["encoder"]["layers"]["mlp"]["wo"]["kernel"], np.ndarray)
  with pytest.raises(ValueError, match="already scanned"):
    scan_params(scanned)


def test_converter_rejects_missing_layers(unrolled_params):
  holed = dict(
      unrolled_params,
      encoder={k: v for k, v in unrolled_params["encoder"].items() if k != "layers_1"},
  )
  with pytest.raises(ValueError, match=r"layers \[0, 2\]"):
    scan_params(holed)


def test_scanned_init_has_the_converted_tree(unrolled_params):
  shapes = jax.eval_shape(
      t5.Transformer(cfg_of(scan_layers=True)).init, jax.random.PRNGKey(0), ENC, DEC_IN, DEC_TGT
  )["params"]
  expected = {k: v.shape for k, v in flat(scan_params(unrolled_params)).items()}
  assert {k: v.shape for k, v in flatten_dict(shapes, sep="/").items()} == expected


# ---------------------------------------------------------------------------- scanned == unrolled
def test_scanned_outputs_equal_unrolled(unrolled_params):
  unrolled = t5.Transformer(cfg_of()).apply({"params": unrolled_params}, ENC, DEC_IN, DEC_TGT)
  scanned = t5.Transformer(cfg_of(scan_layers=True)).apply(
      {"params": scan_params(unrolled_params)}, ENC, DEC_IN, DEC_TGT
  )
  assert len(scanned.encoder_hidden_states) == 4 and len(scanned.cross_attention_weights) == 2
  for a, b in zip(jax.tree_util.tree_leaves(unrolled), jax.tree_util.tree_leaves(scanned)):
    np.testing.assert_allclose(
        np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2e-5, atol=2e-6
    )


@pytest.fixture(scope="module")
def reference_grads(unrolled_params):
  """{scan_layers: (loss, gradients)} without dropout, on the same (converted) parameters."""
  return {
      scan: grads_of(
          cfg_of(scan_layers=scan), scan_params(unrolled_params) if scan else unrolled_params
      )
      for scan in (False, True)
  }


def test_scanned_gradients_equal_unrolled(reference_grads):
  loss_u, grads_u = reference_grads[False]
  loss_s, grads_s = reference_grads[True]
  np.testing.assert_allclose(float(loss_s), float(loss_u), rtol=1e-6)
  assert_close(grads_s, scan_params(grads_u))


def test_saturated_limit_of_scanned_params_equals_unrolled(unrolled_params):
  """The limit runs the scanned stack layer by layer; it equals the unrolled limit exactly."""
  unrolled = t5.Transformer(cfg_of()).apply(
      {"params": unrolled_params}, ENC, DEC_IN, DEC_TGT, saturated=True
  )
  scanned = t5.Transformer(cfg_of(scan_layers=True)).apply(
      {"params": scan_params(unrolled_params)}, ENC, DEC_IN, DEC_TGT, saturated=True
  )
  for a, b in zip(jax.tree_util.tree_leaves(unrolled), jax.tree_util.tree_leaves(scanned)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_saturation_similarity_of_scanned_params_equals_unrolled(unrolled_params):
  def per_layer(cfg):
    model = t5.Transformer(cfg)
    return lambda p: model.apply({"params": p}, ENC, DEC_IN).encoder_hidden_states[1:]

  mask = ENC > 0
  unrolled = saturation.saturation_similarity(per_layer(cfg_of()), unrolled_params, 100.0, mask)
  scanned = saturation.saturation_similarity(
      per_layer(cfg_of(scan_layers=True)), scan_params(unrolled_params), 100.0, mask
  )
  assert unrolled.shape == (3,)
  np.testing.assert_allclose(np.asarray(scanned), np.asarray(unrolled), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- per-layer readers
def test_layer_groups_of_scanned_params_equal_unrolled(unrolled_params):
  """The hook's groups and the checkpoint readers' per-layer norms split the scanned stacks."""
  scanned = scan_params(unrolled_params)
  by_u = norms.grouped_global_norm(unrolled_params, norms.layer_groups, "paper")
  by_s = norms.grouped_global_norm(scanned, norms.layer_groups, "paper")
  assert sorted(by_s) == sorted(by_u) == [f"encoder/layers_{i}" for i in range(3)]
  for g in by_u:
    np.testing.assert_allclose(float(by_s[g]), float(by_u[g]), rtol=1e-6)
  read_u = ackpt.param_norms(flat(unrolled_params))
  read_s = ackpt.param_norms(flat(scanned))
  assert sorted(read_s) == sorted(read_u) and "param_norm/decoder/layers_1" in read_s
  for k in read_u:
    np.testing.assert_allclose(read_s[k], read_u[k], rtol=1e-12)


# ---------------------------------------------------------------------------- remat, attention, dtype
@pytest.fixture(scope="module")
def scanned_dropout_grads(unrolled_params):
  """Loss and gradients of the scanned model with dropout 0.1 (the remat tests' reference)."""
  return grads_of(
      cfg_of(scan_layers=True, dropout_rate=0.1),
      scan_params(unrolled_params),
      jax.random.key(1, impl="rbg"),
  )


@pytest.mark.parametrize("policy", ["full", "minimal", "dots_saveable"])
def test_remat_keeps_loss_and_gradients(unrolled_params, scanned_dropout_grads, policy):
  loss, grads = scanned_dropout_grads
  loss_r, grads_r = grads_of(
      cfg_of(scan_layers=True, dropout_rate=0.1, remat_policy=policy),
      scan_params(unrolled_params),
      jax.random.key(1, impl="rbg"),
  )
  np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
  assert_close(grads_r, grads)


def test_remat_of_unrolled_layers_keeps_gradients(unrolled_params, reference_grads):
  _, grads = reference_grads[False]
  _, grads_r = grads_of(cfg_of(remat_policy="full"), unrolled_params)
  assert_close(grads_r, grads)


@pytest.mark.parametrize("scan", [False, True])
def test_dot_product_attention_equals_einsum_path(unrolled_params, reference_grads, scan):
  params = scan_params(unrolled_params) if scan else unrolled_params
  xla = t5.Transformer(cfg_of(scan_layers=scan)).apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  dpa_cfg = cfg_of(scan_layers=scan, attention_impl="dot_product_attention")
  dpa = t5.Transformer(dpa_cfg).apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  real = np.asarray(DEC_TGT > 0)
  np.testing.assert_allclose(
      np.asarray(dpa.logits)[real], np.asarray(xla.logits)[real], rtol=2e-5, atol=2e-6
  )
  assert dpa.encoder_attention_weights == () and dpa.cross_attention_weights == ()
  # Padding rows aside (their outputs reach no real token), the loss and gradients agree.
  loss_x, grads_x = reference_grads[scan]
  loss_d, grads_d = grads_of(dpa_cfg, params)
  np.testing.assert_allclose(float(loss_d), float(loss_x), rtol=1e-6)
  assert_close(grads_d, grads_x)


def test_dot_product_attention_refuses_attention_dropout(unrolled_params):
  model = t5.Transformer(cfg_of(attention_impl="dot_product_attention", dropout_rate=0.1))
  with pytest.raises(ValueError, match="no attention dropout"):
    model.apply(
        {"params": unrolled_params},
        ENC,
        DEC_IN,
        DEC_TGT,
        enable_dropout=True,
        rngs={"dropout": jax.random.PRNGKey(0)},
    )


def test_bfloat16_scanned_activations_with_float32_params(unrolled_params):
  cfg = cfg_of(scan_layers=True, dtype="bfloat16")
  shapes = jax.eval_shape(t5.Transformer(cfg).init, jax.random.PRNGKey(0), ENC, DEC_IN)
  assert {v.dtype for v in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
  params = scan_params(unrolled_params)
  out = t5.Transformer(cfg).apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  ref = t5.Transformer(cfg_of(scan_layers=True)).apply({"params": params}, ENC, DEC_IN, DEC_TGT)
  assert out.logits.dtype == jnp.float32
  assert out.encoder_hidden_states[1].dtype == jnp.bfloat16
  real = np.asarray(DEC_TGT > 0)
  err = np.abs(np.asarray(out.logits) - np.asarray(ref.logits))[real].max()
  assert 0 < err < 0.05 * np.abs(np.asarray(ref.logits)[real]).max()
  _, grads = grads_of(cfg, params)
  assert {v.dtype for v in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}


def test_config_rejects_unknown_options():
  with pytest.raises(ValueError, match="remat_policy"):
    cfg_of(remat_policy="sometimes")
  with pytest.raises(ValueError, match="attention_impl"):
    cfg_of(attention_impl="flash")


def test_scanned_model_cannot_initialise_in_the_limit():
  model = t5.Transformer(cfg_of(scan_layers=True))
  with pytest.raises(ValueError, match="saturated=False"):
    model.init(jax.random.PRNGKey(0), ENC, DEC_IN, DEC_TGT, saturated=True)
