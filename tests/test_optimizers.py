"""Optimizers against float64 NumPy references of T5's recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normgrowth_jax import optimizers, tracking


def _np_rsqrt(t, base=1.0, warmup=10_000):
  return base / np.sqrt(np.maximum(np.float64(t), warmup))


def test_rsqrt_schedule_matches_float64_reference():
  sched = optimizers.rsqrt_schedule(base_learning_rate=1.0, warmup_steps=10_000)
  for t in [0, 1, 9_999, 10_000, 10_001, 40_000, 2**19]:
    np.testing.assert_allclose(float(sched(t)), _np_rsqrt(t), rtol=1e-6)
  sched = optimizers.rsqrt_schedule(base_learning_rate=0.5, warmup_steps=3)
  np.testing.assert_allclose(float(sched(12)), 0.5 / np.sqrt(12.0), rtol=1e-6)
  with pytest.raises(ValueError, match="warmup_steps"):
    optimizers.rsqrt_schedule(warmup_steps=0)


def _np_adafactor(
    params, grads_seq, lrs, factor, clip=1.0, decay=0.8, eps1=1e-30, eps2=1e-3, fixed_rms=None
):
  """T5's Adafactor (Shazeer & Stern 2018, Alg. 4 + T5 settings) in float64; with
  ``fixed_rms`` the clipping is replaced by scaling u to that RMS (matrices)."""
  p = params.astype(np.float64)
  vr = vc = v = None
  out = []
  for t, (g, lr) in enumerate(zip(grads_seq, lrs)):
    g = g.astype(np.float64)
    beta2 = 1.0 - (t + 1.0) ** (-decay)
    g2 = g * g + eps1
    if factor:
      r, c = g2.mean(axis=1), g2.mean(axis=0)
      vr = r * (1 - beta2) if vr is None else beta2 * vr + (1 - beta2) * r
      vc = c * (1 - beta2) if vc is None else beta2 * vc + (1 - beta2) * c
      vhat = np.outer(vr, vc) / vr.mean()
    else:
      v = g2 * (1 - beta2) if v is None else beta2 * v + (1 - beta2) * g2
      vhat = v
    u = g / np.sqrt(vhat)
    if fixed_rms is None:
      u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
    else:
      u = u * fixed_rms / np.sqrt(np.mean(u * u))
    step = lr * max(np.sqrt(np.mean(p * p)), eps2) * u
    p = p - step
    out.append(p.copy())
  return out


@pytest.mark.parametrize("factor", [True, False])
def test_adafactor_t5_matches_float64_reference(factor):
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=(6, 5)).astype(np.float32)
  # Large gradients in step 0 make the RMS clipping bind (the first Adafactor
  # update has RMS exactly 1 for a single entry; spread values so it exceeds 1).
  grads = [rng.normal(size=(6, 5)).astype(np.float32) * s for s in (30.0, 1.0, 0.01)]
  sched = optimizers.rsqrt_schedule(warmup_steps=2)
  tx = optax.inject_hyperparams(
      lambda learning_rate: optimizers.adafactor_t5(
          learning_rate, min_dim_size_to_factor=2 if factor else 128
      )
  )(learning_rate=sched)
  params = jnp.asarray(p0)
  state = tx.init(params)
  ref = _np_adafactor(p0, grads, [_np_rsqrt(t, warmup=2) for t in range(3)], factor)
  for t, g in enumerate(grads):
    upd, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, upd)
    np.testing.assert_allclose(np.asarray(params), ref[t], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(
        float(optimizers.applied_learning_rate(state)), _np_rsqrt(t, warmup=2), rtol=1e-6
    )


@pytest.mark.parametrize("factor", [True, False])
@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_adafactor_fixed_ratio_matches_float64_reference(factor, ratio):
  rng = np.random.default_rng(2)
  p0 = rng.normal(size=(6, 5)).astype(np.float32)
  grads = [rng.normal(size=(6, 5)).astype(np.float32) * s for s in (30.0, 1.0, 0.01, 1e-4)]
  lrs = [_np_rsqrt(t, warmup=2) for t in range(len(grads))]
  tx = optimizers.adafactor_fixed_ratio(
      optimizers.rsqrt_schedule(warmup_steps=2),
      update_rms=ratio,
      min_dim_size_to_factor=2 if factor else 128,
  )
  params = jnp.asarray(p0)
  state = tx.init(params)
  ref = _np_adafactor(p0, grads, lrs, factor, fixed_rms=ratio)
  prev = p0.astype(np.float64)
  for t, g in enumerate(grads):
    upd, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, upd)
    np.testing.assert_allclose(np.asarray(params), ref[t], rtol=2e-5, atol=1e-6)
    # The ratio ||delta|| / (lr ||theta||) is held at `ratio` on every step, tiny gradients too.
    delta = np.asarray(upd, np.float64)
    np.testing.assert_allclose(
        np.linalg.norm(delta) / (lrs[t] * np.linalg.norm(prev)), ratio, rtol=1e-5
    )
    prev = ref[t]


def test_adafactor_fixed_ratio_keeps_adafactors_direction_and_its_vectors():
  rng = np.random.default_rng(3)
  params = {
      "w": jnp.asarray(rng.normal(size=(200, 130)), jnp.float32),  # factored
      "v": jnp.asarray(rng.normal(size=(7, 3)), jnp.float32),  # unfactored
      "scale": jnp.asarray(rng.normal(size=(9,)), jnp.float32),
  }
  t5 = optimizers.adafactor_t5(learning_rate=0.1)
  fixed = optimizers.adafactor_fixed_ratio(learning_rate=0.1, update_rms=1.0)
  s_t5, s_fixed = t5.init(params), fixed.init(params)
  for step in range(3):
    g = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=p.shape) * 10.0**-step, jnp.float32), params
    )
    u_t5, s_t5 = t5.update(g, s_t5, params)
    u_fixed, s_fixed = fixed.update(g, s_fixed, params)
    for name in ("w", "v"):
      a, b = (np.asarray(u[name], np.float64).ravel() for u in (u_t5, u_fixed))
      np.testing.assert_allclose(a @ b / np.linalg.norm(a) / np.linalg.norm(b), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(u_t5["scale"]), np.asarray(u_fixed["scale"]))


@pytest.mark.parametrize("size", [1.0, 1e-20, 1e30])
def test_normalize_block_rms_reaches_its_target_whatever_the_update_size(size):
  # 1e-20: the squares underflow to 0 in float32; dividing by that 0 once sent a vanishing
  # decoder relative-position gradient to RMS ~1e16 and the run to inf.
  rng = np.random.default_rng(0)
  u = jnp.asarray(rng.normal(size=(8, 5)) * size, jnp.float32)
  tx = optimizers.normalize_block_rms(0.5)
  out, _ = tx.update({"w": u, "zero": jnp.zeros((3, 3))}, tx.init(None))
  w = np.asarray(out["w"], np.float64)
  np.testing.assert_allclose(np.sqrt(np.mean(w**2)), 0.5, rtol=1e-6)
  ref = np.asarray(u, np.float64)
  np.testing.assert_allclose(w, ref * (0.5 / np.sqrt(np.mean(ref**2))), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out["zero"]), 0.0)


def test_adafactor_clipping_caps_update_rms():
  # One step: the unclipped factored update of a rank-1-ish gradient has RMS > 1.
  g = np.zeros((4, 4), np.float32)
  g[0, 0] = 1.0
  g[1:, 1:] = 1e-3
  tx = optimizers.adafactor_t5(
      learning_rate=1.0, multiply_by_parameter_scale=False, min_dim_size_to_factor=2
  )
  upd, _ = tx.update(jnp.asarray(g), tx.init(jnp.zeros((4, 4))), jnp.zeros((4, 4)))
  np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(upd, np.float64) ** 2)), 1.0, rtol=1e-5)
  tx_off = optimizers.adafactor_t5(
      learning_rate=1.0,
      multiply_by_parameter_scale=False,
      min_dim_size_to_factor=2,
      clipping_threshold=None,
  )
  upd_off, _ = tx_off.update(jnp.asarray(g), tx_off.init(jnp.zeros((4, 4))), jnp.zeros((4, 4)))
  assert np.sqrt(np.mean(np.asarray(upd_off) ** 2)) > 1.5


def test_adamw_paper_matches_pytorch_rule():
  rng = np.random.default_rng(1)
  p0 = rng.normal(size=(5,))
  grads = [rng.normal(size=(5,)) for _ in range(3)]
  tx = optimizers.adamw_paper()
  params = jnp.asarray(p0, jnp.float32)
  state = tx.init(params)
  p, m, v = p0.copy(), np.zeros(5), np.zeros(5)
  for t, g in enumerate(grads, start=1):
    upd, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
    params = optax.apply_updates(params, upd)
    # torch.optim.AdamW: decay first, then the Adam step.
    p = p * (1 - 1e-3 * 1e-2)
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    mhat, vhat = m / (1 - 0.9**t), v / (1 - 0.999**t)
    p = p - 1e-3 * mhat / (np.sqrt(vhat) + 1e-8)
    np.testing.assert_allclose(np.asarray(params), p, rtol=1e-5, atol=1e-7)


def _tiny_tree():
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  return {
      "token_embedder": {"embedding": jax.random.normal(k[0], (8, 4))},
      "encoder": {
          "layers_0": {"mlp": {"wo": {"kernel": jax.random.normal(k[1], (4, 4))}}},
          "layers_1": {"mlp": {"wo": {"kernel": jax.random.normal(k[2], (4, 4))}}},
          "encoder_norm": {"scale": jnp.ones((4,))},
      },
      "decoder": {"logits_dense": {"kernel": jax.random.normal(k[3], (4, 8))}},
  }


def test_make_optimizer_puts_hook_last_with_paper_filter():
  params = _tiny_tree()
  tx = optimizers.make_optimizer(optimizers.adamw_paper, 1e-2)
  state = tx.init(params)
  assert isinstance(state, tuple) and len(state) == 2
  grads = jax.tree.map(jnp.ones_like, params)
  upd, state = tx.update(grads, state, params)
  new = optax.apply_updates(params, upd)
  trace = tracking.read_trace(state)
  enc = [
      new["encoder"]["layers_0"]["mlp"]["wo"]["kernel"],
      new["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
      new["encoder"]["encoder_norm"]["scale"],
  ]
  enc_old = [
      params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"],
      params["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
      params["encoder"]["encoder_norm"]["scale"],
  ]
  # The hook sees the final update (incl. weight decay) and only encoder, non-embedding leaves.
  want_upd = np.sqrt(
      sum(np.sum((np.asarray(a, np.float64) - np.asarray(b)) ** 2) for a, b in zip(enc, enc_old))
  )
  np.testing.assert_allclose(trace["update_norm"][-1], want_upd, rtol=1e-4)
  assert any(k.startswith("param_norm/") and "layers_1" in k for k in trace)
  np.testing.assert_allclose(float(optimizers.applied_learning_rate(state)), 1e-2, rtol=1e-6)


def test_make_optimizer_defaults_to_t5_recipe():
  tx = optimizers.make_optimizer()
  state = tx.init(_tiny_tree())
  np.testing.assert_allclose(float(optimizers.applied_learning_rate(state)), 0.01, rtol=1e-6)


def _layer_tree(rng, n_layers=3):
  """An unrolled T5-like tree: matrices per layer (one factored), a vector, a shared norm."""

  def layer(scale):
    return {
        "attention": {"query": {"kernel": rng.normal(size=(6, 5)) * scale}},
        "mlp": {"wi": {"kernel": rng.normal(size=(8, 7)) * scale}},
        "pre_mlp_layer_norm": {"scale": rng.normal(size=(6,)) * scale},
    }

  tree = {"encoder": {f"layers_{i}": layer(10.0**-i) for i in range(n_layers)}}
  tree["encoder"]["encoder_norm"] = {"scale": rng.normal(size=(6,))}
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def test_layerwise_adafactor_on_a_scanned_stack_equals_the_unrolled_layers():
  from normgrowth_jax.models import t5_scan

  rng = np.random.default_rng(4)
  params = _layer_tree(rng)
  base = lambda: optimizers.adafactor_t5(0.1, min_dim_size_to_factor=7)  # noqa: E731
  unrolled, scanned = base(), optimizers.layerwise(base())
  plain = base()  # Adafactor on the stacked leaves as if each were one tensor
  p_u, p_s = params, t5_scan.scan_params(params)
  s_u, s_s, s_p = unrolled.init(p_u), scanned.init(p_s), plain.init(p_s)
  for step in range(3):
    g = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=p.shape) * 10.0**step, jnp.float32), params
    )
    u_u, s_u = unrolled.update(g, s_u, p_u)
    u_s, s_s = scanned.update(t5_scan.scan_params(g), s_s, p_s)
    u_p, s_p = plain.update(t5_scan.scan_params(g), s_p, p_s)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
        u_u,
        t5_scan.unscan_params(u_s),
    )
    # Without layerwise the clipping and parameter scale mix the layers (scales 1, 0.1, 0.01).
    assert not np.allclose(
        np.asarray(u_u["encoder"]["layers_2"]["mlp"]["wi"]["kernel"]),
        np.asarray(u_p["encoder"]["layers"]["mlp"]["wi"]["kernel"][2]),
        rtol=1e-2,
    )
    p_u, p_s = optax.apply_updates(p_u, u_u), optax.apply_updates(p_s, u_s)


def test_make_optimizer_on_scanned_params_records_per_layer_norms():
  from normgrowth_jax.models import t5_scan

  params = t5_scan.scan_params(_layer_tree(np.random.default_rng(5)))
  tx = optimizers.make_optimizer(optimizers.adafactor_t5, 0.1, param_filter="all")
  state = tx.init(params)
  updates, state = tx.update(params, state, params)
  assert float(optimizers.applied_learning_rate(state)) == pytest.approx(0.1)
  row = tracking.read_trace(state)
  assert {f"param_norm/encoder/layers_{i}" for i in range(3)} <= set(row)


def test_layerwise_leaves_an_unscanned_tree_to_the_optimizer_itself():
  params = _layer_tree(np.random.default_rng(6))
  tx = optimizers.adafactor_t5(0.1)
  wrapped = optimizers.layerwise(tx)
  assert jax.tree_util.tree_structure(wrapped.init(params)) == jax.tree_util.tree_structure(
      tx.init(params)
  )
