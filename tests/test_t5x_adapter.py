"""The T5X adapter. Without T5X: step_quantities and the import guard. With T5X installed
(from its repository; CI has none, so those tests skip): NormMetricsComputer inside a jitted
step with T5X's Adafactor, and TrackedOptimizer's state, partitioning and state dict."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normgrowth_jax.t5x as ng_t5x
from normgrowth_jax import tracking


def _params(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  return {
      "encoder": {
          "layers_0": {"mlp": {"wi": {"kernel": jax.random.normal(k[0], (8, 16))}}},
          "layers_1": {"mlp": {"wo": {"kernel": jax.random.normal(k[1], (16, 8))}}},
      },
      "decoder": {"layers_0": {"mlp": {"wo": {"kernel": jax.random.normal(k[2], (16, 8))}}}},
      "token_embedder": {"embedding": jax.random.normal(k[3], (32, 8))},
  }


def test_step_quantities_matches_track_norms_and_float64():
  """Same row as the optax hook for the same update; float64 NumPy reference."""
  params = _params()
  grads = jax.tree.map(lambda x: jnp.cos(3.0 * x), params)
  tx = optax.chain(optax.sgd(0.05), tracking.track_norms("paper", "layers", history_size=4))
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  q = jax.jit(lambda a, b: ng_t5x.step_quantities(a, b, "paper", "layers"))(params, new)
  row = {k: v[0] for k, v in tracking.read_trace(state).items()}
  for k in (
      "param_norm",
      "update_norm",
      "alignment",
      "direction_angle",
      "param_norm/encoder/layers_1",
      "direction_angle/encoder/layers_0",
  ):
    np.testing.assert_allclose(float(q[k]), row[k], rtol=2e-5, err_msg=k)
  enc = lambda t: np.concatenate(
      [
          np.asarray(t["encoder"][l]["mlp"][m]["kernel"], np.float64).ravel()
          for l, m in (("layers_0", "wi"), ("layers_1", "wo"))
      ]
  )
  a, b = enc(params), enc(new)
  d = b - a
  np.testing.assert_allclose(float(q["param_norm"]), np.linalg.norm(b), rtol=1e-6)
  np.testing.assert_allclose(
      float(q["alignment"]), d @ a / np.linalg.norm(d) / np.linalg.norm(a), rtol=1e-4
  )
  np.testing.assert_allclose(
      float(q["direction_cos"]), a @ b / np.linalg.norm(a) / np.linalg.norm(b), rtol=1e-6
  )
  assert float(q["nonfinite"]) == 0.0
  assert not any(k.startswith("param_norm/decoder") for k in q)  # paper filter


def test_import_guard_names_the_fix():
  if ng_t5x.t5x_available():
    pytest.skip("T5X is installed")
  with pytest.raises(ImportError, match="github.com/google-research/t5x"):
    ng_t5x.NormMetricsComputer  # noqa: B018
  with pytest.raises(ImportError, match="pip install"):
    ng_t5x.TrackedOptimizer  # noqa: B018
  with pytest.raises(AttributeError):
    ng_t5x.NoSuchThing  # noqa: B018


# ----------------------------------------------------------------------------- real T5X


def test_metrics_computer_in_jitted_step_with_t5x_adafactor():
  pytest.importorskip("t5x.trainer")
  import clu.metrics
  from t5x import adafactor, train_state as train_state_lib

  params = _params()
  opt_def = ng_t5x.TrackedOptimizer(adafactor.Adafactor(decay_rate=0.8), every=1, history_size=8)
  state = train_state_lib.FlaxOptimTrainState(opt_def.create(params))
  wmc = ng_t5x.NormMetricsComputer(
      learning_rate_fn=lambda s: 1.0 / jnp.sqrt(jnp.maximum(s, 100).astype(jnp.float32))
  )

  @jax.jit
  def step(state):
    grads = jax.tree.map(lambda x: jnp.sin(x), state.params)
    new = state.apply_gradient(grads, learning_rate=wmc.learning_rate_fn(state.step))
    return new, wmc.compute_metrics(grads, state, new)

  metrics = None
  for _ in range(3):
    old = state
    state, m = step(state)
    metrics = (
        m
        if metrics is None
        else jax.tree.map(
            lambda a, b: a.merge(b), metrics, m, is_leaf=lambda x: isinstance(x, clu.metrics.Metric)
        )
    )
  assert all(isinstance(v, clu.metrics.LastValue) for v in metrics.values())
  last = ng_t5x.step_quantities(old.params, state.params)
  np.testing.assert_allclose(
      float(metrics["norms/param_norm"].compute()), float(last["param_norm"]), rtol=1e-6
  )  # last value, no average
  assert float(metrics["norms/learning_rate"].compute()) == pytest.approx(0.1)
  trace = tracking.read_trace(state.param_states)
  assert trace["step"].tolist() == [1, 2, 3]
  np.testing.assert_allclose(trace["param_norm"][-1], float(last["param_norm"]), rtol=1e-5)


def test_tracked_optimizer_axes_and_state_dict_round_trip():
  pytest.importorskip("t5x.optimizers")
  from flax.core import frozen_dict
  from t5x import adafactor, optimizers, partitioning

  params = frozen_dict.freeze(_params())
  opt_def = ng_t5x.TrackedOptimizer(adafactor.Adafactor(), history_size=4)
  opt = opt_def.create(params)
  axes = jax.tree.map(lambda x: partitioning.PartitionSpec(*([None] * x.ndim)), params)
  opt_def.set_param_axes(axes)
  derived = opt_def.derive_logical_axes(opt, axes)
  trace_axes = jax.tree_util.tree_leaves(
      derived.state.param_states["norm_trace"], is_leaf=lambda x: x is None
  )
  assert all(a is None for a in trace_axes)  # replicated
  sd = opt.state_dict()
  assert "norm_trace" in sd["state"]["param_states"]
  restored = opt.restore_state(sd)
  assert isinstance(restored.state.param_states["norm_trace"], tracking.NormTrace)
  # The optax path needs no registration: a NormTrace is not an "...State" NamedTuple.
  chain = optimizers.chain([optax.adamw(1e-3), tracking.track_norms(history_size=4)])
  copt = chain.create(params)
  chain.derive_logical_axes(copt, axes)


class _TinyModel:
  """Stands for a T5X model: ``get_initial_variables`` gives params and their logical axes."""

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    del rng, input_shapes, input_types
    from flax import traverse_util
    from flax.linen import partitioning as flax_partitioning

    params = _params()
    names = {1: ("embed",), 2: ("embed", "mlp")}
    axes = {
        k[:-1] + (k[-1] + "_axes",): flax_partitioning.AxisMetadata(names=names[v.ndim])
        for k, v in traverse_util.flatten_dict(params).items()
    }
    return {"params": params, "params_axes": traverse_util.unflatten_dict(axes)}


def _t5x_train(model_dir, total_steps, optimizer_def, dtype):
  """What ``t5x.train`` does around the step, on a tiny model: restore the latest checkpoint
  in ``model_dir`` with T5X's resume config (restore dtype = save dtype) or start from
  scratch, train to ``total_steps`` with a checkpoint every 2 steps, return the state."""
  from t5x import partitioning, utils

  os.makedirs(model_dir, exist_ok=True)  # t5x.train creates MODEL_DIR first
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.standard_logical_axis_rules()
  )
  initializer = utils.TrainStateInitializer(
      optimizer_def=optimizer_def,
      init_fn=_TinyModel().get_initial_variables,
      input_shapes={"inputs": (1, 1)},
      partitioner=partitioner,
  )
  restore_cfg, paths = utils.get_first_valid_restore_config_and_paths(
      [utils.RestoreCheckpointConfig(path=model_dir, mode="latest", dtype=dtype)]
  )
  state, manager = utils.create_checkpoint_manager_and_restore(
      initializer,
      partitioner,
      restore_cfg,
      paths[0] if paths else None,
      jax.random.PRNGKey(0),
      save_checkpoint_cfg=utils.SaveCheckpointConfig(dtype=dtype, period=2),
      model_dir=model_dir,
      use_orbax=True,
  )
  state = state or initializer.from_scratch(jax.random.PRNGKey(0))

  @jax.jit
  def step(state):
    grads = jax.tree.map(lambda x: jnp.sin(3.0 * x) + 0.1, state.params)
    return state.apply_gradient(grads, learning_rate=0.01)

  while int(state.step) < total_steps:
    state = step(state)
    if int(state.step) % 2 == 0:
      manager.save(state)
  manager.wait_until_finished()
  manager.close()
  return state


@pytest.mark.parametrize("dtype", [None, "float32"], ids=["as_saved", "float32_cast"])
@pytest.mark.parametrize("kind", ["adafactor", "adafactor_anchor", "optax_chain"])
def test_t5x_resume_with_more_steps_continues_the_trace(tmp_path, kind, dtype):
  """Issue 13: a run resumed from its checkpoint on disk (T5X's orbax checkpoint manager, the
  same code path as rerunning ``t5x.train`` with a higher TRAIN_STEPS) keeps one trace, steps
  1..N with no gap or duplicate, equal to an uninterrupted run's."""
  pytest.importorskip("t5x.utils")
  from t5x import adafactor, optimizers

  def make():
    if kind == "optax_chain":
      return optimizers.chain(
          [
              optax.adamw(1e-2, weight_decay=0.01),
              tracking.track_norms("paper", "layers", history_size=16),
          ]
      )
    return ng_t5x.TrackedOptimizer(
        adafactor.Adafactor(),
        every=1,
        history_size=16,
        anchor_every=2 if kind == "adafactor_anchor" else None,
    )

  first = _t5x_train(str(tmp_path / "run"), 4, make(), dtype)
  assert tracking.read_trace(first.param_states)["step"].tolist() == [1, 2, 3, 4]
  resumed = _t5x_train(str(tmp_path / "run"), 7, make(), dtype)  # same run, more steps
  straight = _t5x_train(str(tmp_path / "straight"), 7, make(), dtype)
  got = tracking.read_trace(resumed.param_states)
  want = tracking.read_trace(straight.param_states)
  assert got["step"].tolist() == list(range(1, 8))
  for c in want:
    np.testing.assert_allclose(got[c], want[c], rtol=1e-5, atol=1e-7, err_msg=c)
  from normgrowth_jax.analysis import trajectory

  on_disk = trajectory.read_checkpoint_trace(str(tmp_path / "run"))
  assert on_disk["step"].tolist() == list(range(1, 7))  # the last checkpoint is at step 6
