"""track_norms / read_trace against an independent float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normgrowth_jax import norms, tracking


def _params(seed=0, dtype=jnp.float32):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s), dtype)
  return {
      "encoder": {
          "layers_0": {"w": f(6, 5), "b": f(5)},
          "layers_1": {"w": f(5, 5)},
          "token_embedder": {"embedding": f(7, 5)},
      },
      "decoder": {"layers": {"w": f(3, 4, 2)}},
  }  # scanned stack of 3 layers


def _f64(tree):
  return [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(tree)]


def _angle(theta, delta):
  """Kahan's 2*atan2(|u - v|, |u + v|), float64: independent of the hook's method."""
  u = theta / np.linalg.norm(theta)
  w = theta + delta
  v = w / np.linalg.norm(w)
  return 2 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v))


def _ref_row(theta, delta, new, mask=None):
  """theta, delta, new: lists of float64 leaves; mask: which leaves count."""
  mask = mask or [True] * len(theta)
  t = np.concatenate([x for x, m in zip(theta, mask) if m])
  d = np.concatenate([x for x, m in zip(delta, mask) if m])
  n = np.concatenate([x for x, m in zip(new, mask) if m])
  ang = _angle(t, d)
  return {
      "param_norm": np.linalg.norm(n),
      "update_norm": np.linalg.norm(d),
      "alignment": t @ d / np.linalg.norm(t) / np.linalg.norm(d),
      "direction_angle": ang,
      "direction_cos": np.cos(ang),
  }


def _run(opt, params, grads_fn, steps, jit=True):
  """Trains; returns final state and the per-step (theta, delta, new) in float64."""
  state = opt.init(params)
  step = jax.jit(opt.update) if jit else opt.update
  seen = []
  for t in range(steps):
    updates, state = step(grads_fn(t, params), state, params)
    new = optax.apply_updates(params, updates)
    seen.append((_f64(params), _f64(updates), _f64(new)))
    params = new
  return state, seen, params


def _grads(t, params):
  r = np.random.default_rng(100 + t)
  return jax.tree.map(lambda x: jnp.asarray(r.normal(size=x.shape), x.dtype), params)


def _check(trace, seen, steps, mask=None, rtol=1e-5):
  assert trace["step"].tolist() == steps
  for i, s in enumerate(steps):
    ref = _ref_row(*seen[s - 1], mask)
    for k in ("param_norm", "update_norm", "direction_angle"):
      np.testing.assert_allclose(trace[k][i], ref[k], rtol=rtol, err_msg=f"{k} at step {s}")
    for k in ("alignment", "direction_cos"):
      np.testing.assert_allclose(trace[k][i], ref[k], rtol=0, atol=1e-5, err_msg=k)
    assert not trace["nonfinite"][i]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matches_float64_reference_over_steps(dtype):
  params = _params(0, dtype)
  opt = optax.chain(optax.adamw(1e-2, weight_decay=0.1), tracking.track_norms())
  state, seen, _ = _run(opt, params, _grads, 6)
  trace = tracking.read_trace(state)
  _check(trace, seen, [1, 2, 3, 4, 5, 6])
  assert trace["param_norm"].dtype == np.float32


def test_paper_filter_and_layer_groups():
  params = _params(1)
  paths = norms.leaf_paths(params)
  mask = [norms.paper_filter(p, x) for p, x in norms.named_leaves(params)]
  opt = optax.chain(
      optax.sgd(0.05, momentum=0.9),
      tracking.track_norms(param_filter="paper", groups="layers", every=2),
  )
  state, seen, _ = _run(opt, params, _grads, 6)
  trace = tracking.read_trace(state)
  _check(trace, seen, [2, 4, 6], mask)
  assert sorted(k for k in trace if k.startswith("param_norm/")) == [
      "param_norm/encoder/layers_0",
      "param_norm/encoder/layers_1",
  ]
  # all params, layer groups incl. the scanned decoder stack split along axis 0
  opt = optax.chain(optax.sgd(0.05), tracking.track_norms(groups="layers"))
  state, seen, _ = _run(opt, params, _grads, 3)
  trace = tracking.read_trace(state)
  stack = paths.index("decoder/layers/w")
  for i, s in enumerate(trace["step"]):
    theta, delta, new = seen[s - 1]
    for layer in range(3):
      t = theta[stack].reshape(3, 8)[layer]
      d = delta[stack].reshape(3, 8)[layer]
      n = new[stack].reshape(3, 8)[layer]
      np.testing.assert_allclose(
          trace[f"param_norm/decoder/layers_{layer}"][i], np.linalg.norm(n), rtol=1e-5
      )
      np.testing.assert_allclose(
          trace[f"direction_angle/decoder/layers_{layer}"][i], _angle(t, d), rtol=1e-5
      )
    enc0 = [j for j, p in enumerate(paths) if p.startswith("encoder/layers_0/")]
    np.testing.assert_allclose(
        trace["param_norm/encoder/layers_0"][i],
        np.linalg.norm(np.concatenate([new[j] for j in enc0])),
        rtol=1e-5,
    )


def test_layer_columns_t5_base_twelve_layers():
  """T5-base's encoder/layers_0 .. layers_11: a column per layer, 10 and 11 included, against
  float64; T5Config.scan_layers' stack (encoder/layers, leading axis 12) gives the same columns."""
  r = np.random.default_rng(3)
  f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
  params = {
      "encoder": {
          **{
              f"layers_{i}": {
                  "attention": {"query": {"kernel": f(4, 4)}},
                  "mlp": {"wo": {"kernel": f(6, 4)}},
              }
              for i in range(12)
          },
          "encoder_norm": {"scale": f(4)},
      }
  }
  hook = lambda: tracking.track_norms(param_filter="paper", groups="layers", anchor_every=2)
  state, seen, _ = _run(optax.chain(optax.adam(3e-2), hook()), params, _grads, 4)
  trace = tracking.read_trace(state)
  want = sorted(f"encoder/layers_{i}" for i in range(12))
  for q in ("param_norm", "direction_angle", "anchor_angle"):
    assert sorted(k[len(q) + 1 :] for k in trace if k.startswith(q + "/")) == want
  paths = norms.leaf_paths(params)
  for layer in ("encoder/layers_10", "encoder/layers_11"):
    idx = [j for j, p in enumerate(paths) if p.startswith(layer + "/")]
    for i, s in enumerate(trace["step"]):
      theta, delta, new = (np.concatenate([v[j] for j in idx]) for v in seen[s - 1])
      np.testing.assert_allclose(trace[f"param_norm/{layer}"][i], np.linalg.norm(new), rtol=1e-5)
      np.testing.assert_allclose(
          trace[f"direction_angle/{layer}"][i], _angle(theta, delta), rtol=1e-5
      )
  stack = lambda tree: {
      "encoder": {
          "layers": jax.tree.map(
              lambda *xs: jnp.stack(xs), *[tree["encoder"][f"layers_{i}"] for i in range(12)]
          ),
          "encoder_norm": tree["encoder"]["encoder_norm"],
      }
  }
  state_s, _, _ = _run(
      optax.chain(optax.adam(3e-2), hook()), stack(params), lambda t, _: stack(_grads(t, params)), 4
  )
  trace_s = tracking.read_trace(state_s)
  assert sorted(trace_s) == sorted(trace)
  for k in trace:
    np.testing.assert_allclose(trace_s[k], trace[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_tiny_relative_update_angle():
  """||delta|| = 1e-7 ||theta||: float32 1 - cos is 0 here, the recorded angle is not."""
  params = _params(2)
  norm = float(norms.global_norm(params))

  def grads(t, p):
    g = _grads(t, p)
    return jax.tree.map(lambda x: x * (1e-7 * norm / float(norms.global_norm(g))), g)

  hook = tracking.track_norms()
  state = hook.init(params)
  seen = []
  for t in range(3):
    delta = grads(t, params)
    _, state = jax.jit(hook.update)(delta, state, params)
    seen.append((_f64(params), _f64(delta), _f64(optax.apply_updates(params, delta))))
    params = optax.apply_updates(params, delta)
  trace = tracking.read_trace(state)
  for i in range(3):
    ref = _ref_row(*seen[i])
    np.testing.assert_allclose(trace["direction_angle"][i], ref["direction_angle"], rtol=1e-5)
    np.testing.assert_allclose(trace["update_norm"][i], ref["update_norm"], rtol=1e-5)
    assert 5e-8 < trace["direction_angle"][i] < 2e-7


def test_nested_inject_hyperparams_and_multisteps():
  params = _params(3)
  inner = optax.inject_hyperparams(
      lambda learning_rate: optax.chain(optax.adam(learning_rate), tracking.track_norms())
  )(learning_rate=1e-2)
  opt = optax.MultiSteps(optax.chain(optax.clip_by_global_norm(1.0), inner), every_k_schedule=2)
  state = opt.init(params)
  seen = []
  step = jax.jit(opt.update)
  for t in range(6):
    updates, state = step(_grads(t, params), state, params)
    new = optax.apply_updates(params, updates)
    if t % 2 == 1:  # MultiSteps applies the inner update every 2nd call
      seen.append((_f64(params), _f64(updates), _f64(new)))
    params = new
  trace = tracking.read_trace(state)
  _check(trace, seen, [1, 2, 3])


def test_ring_buffer_wrap_returns_last_rows_in_step_order():
  params = _params(4)
  opt = optax.chain(optax.sgd(0.1), tracking.track_norms(every=2, history_size=3))
  state, seen, _ = _run(opt, params, _grads, 11)
  trace = tracking.read_trace(state)
  _check(trace, seen, [6, 8, 10])


def test_nonfinite_flagged_at_first_step():
  params = _params(5)

  def grads(t, p):
    g = _grads(t, p)
    if t == 3:  # update of step 4 holds a NaN in an excluded (embedding) leaf
      g["encoder"]["token_embedder"]["embedding"] = (
          g["encoder"]["token_embedder"]["embedding"].at[0, 0].set(jnp.nan)
      )
    return g

  opt = optax.chain(optax.sgd(0.1), tracking.track_norms(param_filter="paper", every=3))
  state, _, _ = _run(opt, params, grads, 7)
  trace = tracking.read_trace(state)
  assert trace["step"].tolist() == [3, 4, 6]
  assert trace["nonfinite"].tolist() == [False, True, True]
  assert np.isfinite(trace["param_norm"][0])
  assert tracking.first_nonfinite_step(state) == 4

  opt = optax.chain(optax.sgd(0.1), tracking.track_norms())
  state, _, _ = _run(opt, params, _grads, 2)
  assert tracking.first_nonfinite_step(state) is None


def test_anchor_cosine_checkpoint_to_checkpoint():
  params = _params(6)
  opt = optax.chain(optax.adam(3e-2), tracking.track_norms(every=3, anchor_every=3))
  state, seen, _ = _run(opt, params, _grads, 9)
  trace = tracking.read_trace(state)
  assert trace["anchor_step"].tolist() == [0, 3, 6]
  for i, s in enumerate(trace["step"]):
    a = np.concatenate(seen[s - 3][0])  # theta_{s-3}
    n = np.concatenate(seen[s - 1][2])  # theta_s
    np.testing.assert_allclose(trace["anchor_angle"][i], _angle(a, n - a), rtol=1e-5)
    np.testing.assert_allclose(
        trace["anchor_cos"][i], a @ n / np.linalg.norm(a) / np.linalg.norm(n), atol=1e-6
    )
  # without the anchor option the state holds no copy of the params: one [] placeholder,
  # not (), which a checkpointer may drop (tests/test_checkpoint_empty_nodes.py)
  plain = tracking.track_norms().init(params)
  assert np.shape(plain.anchor) == ()
  assert sum(x.size for x in jax.tree_util.tree_leaves(plain)) < 8192 * 10


def test_anchor_angle_per_group():
  """anchor_angle/<g>: the checkpoint-to-checkpoint angle of each layer (Stacked slices too)."""
  params = _params(7)
  opt = optax.chain(
      optax.adam(3e-2), tracking.track_norms(groups="layers", every=3, anchor_every=3)
  )
  state, seen, _ = _run(opt, params, _grads, 6)
  trace = tracking.read_trace(state)
  # leaves in order: decoder/layers/w [3, 4, 2] (stacked), encoder/layers_0/{b, w},
  # encoder/layers_1/w, encoder/token_embedder/embedding
  pick = {
      "encoder/layers_0": lambda v: np.concatenate([v[1], v[2]]),
      "encoder/layers_1": lambda v: v[3],
      "decoder/layers_2": lambda v: v[0].reshape(3, 8)[2],
  }
  for i, s in enumerate(trace["step"]):
    for g, f in pick.items():
      a, n = f(seen[s - 3][0]), f(seen[s - 1][2])
      np.testing.assert_allclose(
          trace[f"anchor_angle/{g}"][i], _angle(a, n - a), rtol=1e-5, err_msg=g
      )
  assert "anchor_angle/encoder/token_embedder" not in trace
  without = tracking.read_trace(
      _run(optax.chain(optax.adam(3e-2), tracking.track_norms(groups="layers")), params, _grads, 1)[
          0
      ]
  )
  assert not any(k.startswith("anchor") for k in without)


def test_float32_cast_and_orbax_round_trip(tmp_path):
  import orbax.checkpoint as ocp

  params = _params(7)
  opt = optax.chain(optax.sgd(0.05, momentum=0.9), tracking.track_norms(every=2))
  step = jax.jit(opt.update)
  state = opt.init(params)
  p = params
  for t in range(4):
    u, state = step(_grads(t, p), state, p)
    p = optax.apply_updates(p, u)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "ckpt", state)
  ckpt.wait_until_finished()
  restored = ckpt.restore(tmp_path / "ckpt", state)
  cast = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), restored)  # what T5X does
  full = state
  p_full, p_cast = p, p
  for t in range(4, 8):
    u, full = step(_grads(t, p_full), full, p_full)
    p_full = optax.apply_updates(p_full, u)
    u, cast2 = step(_grads(t, p_cast), cast, p_cast)
    assert cast2[1].count.dtype == jnp.float32 == cast[1].count.dtype  # dtype kept
    p_cast = optax.apply_updates(p_cast, u)
    cast = cast2
  a, b = tracking.read_trace(full), tracking.read_trace(cast)
  assert a["step"].tolist() == b["step"].tolist() == [2, 4, 6, 8]
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k], float), np.asarray(b[k], float), rtol=1e-6)
  # a restore without a target (plain dicts) is still found
  raw = ckpt.restore(tmp_path / "ckpt")
  np.testing.assert_array_equal(tracking.read_trace(raw)["step"], [2, 4])


@pytest.mark.slow
def test_real_small_lm_training_matches_reference():
  from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig, lm_loss

  cfg = SmallLMConfig(vocab_size=32, num_layers=2, d_model=16, d_ff=32, num_heads=2, max_len=8)
  model = SmallLM(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 32, size=(4, 8)))
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  opt = optax.chain(
      optax.adamw(1e-2, weight_decay=0.01),
      tracking.track_norms(param_filter="paper", groups="layers"),
  )

  @jax.jit
  def train_step(params, state):
    grads = jax.grad(lambda p: lm_loss(model.apply({"params": p}, tokens).logits, tokens))(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, updates

  state = opt.init(params)
  seen = []
  for _ in range(4):
    new, state, updates = train_step(params, state)
    seen.append((_f64(params), _f64(updates), _f64(new)))
    params = new
  mask = [norms.paper_filter(p, x) for p, x in norms.named_leaves(params)]
  trace = tracking.read_trace(state)
  _check(trace, seen, [1, 2, 3, 4], mask)
  assert {k for k in trace if k.startswith("param_norm/")} == {
      "param_norm/encoder/layers_0",
      "param_norm/encoder/layers_1",
  }
  assert trace["param_norm"][-1] > trace["param_norm"][0]


@pytest.mark.parametrize("every", [1, 3])
def test_updates_pass_through_bit_for_bit(every):
  """The hook ties its reads to the returned updates; the values never change (not even
  denormals, which XLA CPU arithmetic would flush)."""
  params = _params(8)
  hook = tracking.track_norms(param_filter="paper", groups="layers", every=every)
  state = hook.init(params)
  step = jax.jit(hook.update)
  for t in range(4):
    upd = _grads(t, params)
    upd["encoder"]["layers_0"]["b"] = jnp.array([-0.0, 0.0, jnp.inf, -jnp.inf, 1e-45], jnp.float32)
    if t == 2:
      upd["encoder"]["token_embedder"]["embedding"] = (
          upd["encoder"]["token_embedder"]["embedding"].at[1, 2].set(jnp.nan)
      )
    out, state = step(upd, state, params)
    for a, b in zip(jax.tree_util.tree_leaves(upd), jax.tree_util.tree_leaves(out)):
      np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


def test_step_row_from_updates_or_new_params_matches_hook_and_float64():
  params = _params(9)
  mask = [norms.paper_filter(p, x) for p, x in norms.named_leaves(params)]
  opt = optax.chain(
      optax.adamw(1e-2, weight_decay=0.1),
      tracking.track_norms(param_filter="paper", groups="layers"),
  )
  state, seen, _ = _run(opt, params, _grads, 1)
  hook_row = {k: v[0] for k, v in tracking.read_trace(state).items()}
  updates = jax.tree.map(
      lambda x, d: jnp.asarray(d.reshape(x.shape), x.dtype),
      params,
      jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), seen[0][1]),
  )
  new = optax.apply_updates(params, updates)
  ref = _ref_row(*seen[0], mask)
  kw = dict(param_filter="paper", groups="layers")
  for row in (
      jax.jit(lambda p, u: tracking.step_row(p, u, **kw))(params, updates),
      jax.jit(lambda p, n: tracking.step_row(p, new_params=n, **kw))(params, new),
  ):
    assert set(row) == set(hook_row) - {"step"}
    for k in ("param_norm", "update_norm", "direction_angle"):
      np.testing.assert_allclose(float(row[k]), ref[k], rtol=1e-5, err_msg=k)
    for k in ("alignment", "direction_cos"):
      np.testing.assert_allclose(float(row[k]), ref[k], atol=1e-5, err_msg=k)
    for k in row:
      np.testing.assert_allclose(float(row[k]), float(hook_row[k]), rtol=2e-5, atol=1e-7, err_msg=k)
    assert float(row["nonfinite"]) == 0.0
  bad = jax.tree.map(lambda x: x, params)
  bad["encoder"]["token_embedder"]["embedding"] = (
      bad["encoder"]["token_embedder"]["embedding"].at[0, 0].set(jnp.inf)
  )  # an unfiltered param
  assert float(tracking.step_row(bad, updates, **kw)["nonfinite"]) == 1.0
  with pytest.raises(ValueError, match="exactly one of"):
    tracking.step_row(params, updates, new_params=new)
