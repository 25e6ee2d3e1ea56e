"""The Adafactor probe: T5's Adafactor unchanged, and its records against a float64 reference."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normgrowth_jax import adafactor_probe, optimizers


def _grads(rng, shapes, steps):
  """Heavy-tailed gradients whose size changes from step to step, some entries exactly 0."""
  out = []
  for t in range(steps):
    g = {}
    for k, shape in shapes.items():
      x = rng.standard_t(2, size=shape) * 10.0 ** rng.uniform(-2, 1)
      x[rng.uniform(size=shape) < 0.2] = 0.0
      g[k] = x.astype(np.float32)
    out.append(g)
  return out


SHAPES = {"w": (6, 5), "b": (5,), "e": (9, 4)}


def _np_records(grads, factored_keys, decay=0.8, eps=1e-30):
  """Float64: per step and tensor (RMS(u), mean g^2 / mean v_hat, share of zero entries)."""
  state, out = {}, []
  for t, g in enumerate(grads):
    beta = 1.0 - (t + 1.0) ** (-decay)
    rec = {}
    for k, x in g.items():
      x = x.astype(np.float64)
      g2 = x * x + eps
      if k in factored_keys:
        vr, vc = state.get(k, (0.0, 0.0))
        vr = beta * vr + (1 - beta) * g2.mean(axis=1)
        vc = beta * vc + (1 - beta) * g2.mean(axis=0)
        state[k] = (vr, vc)
        vhat = np.outer(vr, vc) / vr.mean()
      else:
        v = beta * state.get(k, 0.0) + (1 - beta) * g2
        state[k] = v
        vhat = v
      u = x / np.sqrt(vhat)
      rec[k] = (np.sqrt(np.mean(u * u)), np.mean(x * x) / np.mean(vhat), np.mean(x == 0))
    out.append(rec)
  return out


@pytest.mark.parametrize("min_dim", [2, 128])  # every matrix factored, or none
def test_updates_equal_t5_adafactor_and_records_match_float64(min_dim):
  rng = np.random.default_rng(0)
  params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}
  grads = _grads(rng, SHAPES, 7)
  lr = optimizers.rsqrt_schedule(warmup_steps=2)
  probed = adafactor_probe.adafactor_t5_probed(lr, history_size=16, min_dim_size_to_factor=min_dim)
  plain = optimizers.adafactor_t5(lr, min_dim_size_to_factor=min_dim)
  s_probed, s_plain = probed.init(params), plain.init(params)
  p_probed = p_plain = params
  for g in grads:
    g = {k: jnp.asarray(v) for k, v in g.items()}
    u1, s_probed = probed.update(g, s_probed, p_probed)
    u2, s_plain = plain.update(g, s_plain, p_plain)
    for k in SHAPES:
      np.testing.assert_array_equal(np.asarray(u1[k]), np.asarray(u2[k]))
    p_probed, p_plain = optax.apply_updates(p_probed, u1), optax.apply_updates(p_plain, u2)

  probe = adafactor_probe.read_probe(s_probed)
  factored = {k for k in SHAPES if min_dim == 2 and len(SHAPES[k]) == 2}
  assert {k for k, f in probe.factored.items() if f} == factored
  assert probe.steps.tolist() == list(range(7))
  ref = _np_records(grads, factored)
  for t, rec in enumerate(ref):
    for k, (rms_u, scale, zero) in rec.items():
      np.testing.assert_allclose(probe.rms_u[k][t], rms_u, rtol=2e-5)
      np.testing.assert_allclose(probe.scale[k][t], scale, rtol=2e-5)
      np.testing.assert_allclose(probe.zero_frac[k][t], zero, rtol=1e-6)
  np.testing.assert_allclose(probe.shape_factor["w"], probe.rms_u["w"] ** 2 / probe.scale["w"])


def test_a_steady_gradient_has_rms_scale_and_shape_one_and_a_shrinking_one_less():
  params = {"w": jnp.ones((4, 3))}
  tx = adafactor_probe.adafactor_t5_probed(0.1, history_size=8)
  state = tx.init(params)
  g = jnp.asarray(np.arange(1.0, 13.0).reshape(4, 3), jnp.float32)
  for t in range(8):  # steady for 4 steps, then halved every step
    _, state = tx.update({"w": g * (0.5 ** max(0, t - 3))}, state, params)
  probe = adafactor_probe.read_probe(state)
  np.testing.assert_allclose(probe.rms_u["w"][:4], 1.0, rtol=1e-6)
  np.testing.assert_allclose(probe.scale["w"][:4], 1.0, rtol=1e-6)
  assert np.all(np.diff(probe.rms_u["w"][3:]) < 0) and probe.rms_u["w"][-1] < 0.6
  np.testing.assert_allclose(probe.shape_factor["w"], 1.0, rtol=1e-5)  # uniform: shape 1


def test_every_and_the_ring_buffer_keep_the_newest_records_in_order():
  params = {"w": jnp.ones((2, 2))}
  tx = adafactor_probe.adafactor_t5_probed(0.1, history_size=3, every=2)
  state = tx.init(params)
  for t in range(8):
    _, state = tx.update({"w": jnp.full((2, 2), float(t + 1))}, state, params)
  probe = adafactor_probe.read_probe(state)
  assert probe.steps.tolist() == [2, 4, 6]  # steps 0, 2, 4, 6 recorded; 3 slots keep the last
  assert probe.rms_u["w"].shape == (3,)


def test_read_probe_names_the_fix_without_a_probe():
  tx = optimizers.adafactor_t5(0.1)
  with pytest.raises(ValueError, match="adafactor_t5_probed"):
    adafactor_probe.read_probe(tx.init({"w": jnp.ones((2, 2))}))
  with pytest.raises(ValueError, match="history_size"):
    adafactor_probe.probed_factored_rms(history_size=0)
