"""The tracked optimizer state survives a checkpoint on disk the way T5X writes and reads it.

Issue 13: T5X writes its train state dict with orbax (``PyTreeCheckpointHandler(use_ocdbt=True)``,
one ``SaveArgs`` per leaf) and reads it back from the checkpoint's own structure, keeping the
entries that are leaves of the live state dict. An empty container (``NormTrace.anchor == ()``
with the anchor off, ``{}`` in the state dict) is saved as a node marked ``skip_deserialize`` and
has no leaf, so the restored tree lacks a key the live state has and the resume dies with a
pytree structure error. These tests do that round trip with orbax alone (no T5X needed):

* the TrackedOptimizer layout ``state/param_states/{base,norm_trace}`` (an OptimizerDef state
  is restored with ``flax.serialization.from_state_dict``, which needs every key);
* the optax layout (``optimizers.make_optimizer``, and ``chain(adamw, track_norms)`` as in
  ``local_tiny_adamw.gin``): optax's own empty states (``EmptyState``, empty
  ``hyperparams_states``) are dropped on save and rebuilt from the live state by T5X's optax
  wrapper, so there only the NormTrace itself must have no empty node;

each with the anchor on and off, and with every leaf restored as saved or cast to float32 (T5X's
restore cast). Training then continues from the restored state and the trace must equal an
uninterrupted run's, steps 1..N with no gap or duplicate.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import serialization, traverse_util

from normgrowth_jax import norms, optimizers, tracking

N_STEPS, SAVE_AT = 6, 3


def _params():
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  return {
      "encoder": {
          "layers_0": {"mlp": {"wi": {"kernel": jax.random.normal(k[0], (8, 16))}}},
          "layers_1": {"mlp": {"wo": {"kernel": jax.random.normal(k[1], (16, 8))}}},
      },
      "decoder": {"layers_0": {"mlp": {"wo": {"kernel": jax.random.normal(k[2], (16, 8))}}}},
  }


def _grads(params):
  return jax.tree.map(lambda x: jnp.sin(3.0 * x) + 0.1, params)


def _empty_nodes(tree, path=()):
  """Paths of the containers in a state dict that hold no leaf."""
  if isinstance(tree, (dict, list, tuple)):
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    items = list(items)
    if not items:
      return [path]
    return [p for k, v in items for p in _empty_nodes(v, path + (str(k),))]
  return []


def _state_dir(directory, step):
  return os.path.join(directory, str(step), "state")


def _save_like_t5x(directory, step, state_dict):
  """Writes ``state_dict`` as T5X's orbax checkpoint manager does: item "state", OCDBT."""
  mgr = ocp.CheckpointManager(
      directory, item_handlers={"state": ocp.PyTreeCheckpointHandler(use_ocdbt=True)}
  )
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(), state_dict)
  mgr.save(
      step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state_dict, save_args=save_args))
  )
  mgr.wait_until_finished()
  mgr.close()


def _restore_like_t5x(directory, step, live_state_dict, dtype):
  """Reads the checkpoint as T5X does: its own saved structure (no target), restricted to the
  leaf paths of the live state dict, each leaf cast to ``dtype`` (None: as saved)."""
  path = _state_dir(directory, step)
  meta = ocp.PyTreeCheckpointer().metadata(path)
  meta = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
  live = traverse_util.flatten_dict(live_state_dict, sep="/")
  saved = traverse_util.flatten_dict(meta, sep="/")
  item = traverse_util.unflatten_dict({k: 0 for k in saved if k in live}, sep="/")
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray, dtype=dtype), item)
  return ocp.PyTreeCheckpointer().restore(
      path, args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True)
  )


def _with_live_empty_nodes(restored, live_state_dict):
  """The optax layout: empty nodes are not saved and come back from the live state."""
  got = traverse_util.flatten_dict(restored, sep="/")
  ref = traverse_util.flatten_dict(live_state_dict, keep_empty_nodes=True, sep="/")
  return traverse_util.unflatten_dict(
      {k: ({} if v is traverse_util.empty_node else got[k]) for k, v in ref.items()}, sep="/"
  )


# ----------------------------------------------------------------------------- the two layouts


class _TrackedLayout:
  """TrackedOptimizer's train state: a base OptimizerDef state plus the trace beside it."""

  def __init__(self, anchor_every):
    self.base = optax.trace(decay=0.9)  # stands for T5X's Adafactor: a state of arrays only
    self.tracker = tracking.track_norms(
        "paper", "layers", every=1, history_size=16, anchor_every=anchor_every
    )

  def init(self, params):
    return {
        "target": params,
        "state": {
            "step": jnp.zeros((), jnp.int32),
            "param_states": {
                "base": self.base.init(params),
                "norm_trace": self.tracker.init(params),
            },
        },
    }

  def step(self, ts):
    params, st = ts["target"], ts["state"]
    u, base = self.base.update(_grads(params), st["param_states"]["base"])
    new = optax.apply_updates(params, jax.tree.map(lambda x: -0.05 * x, u))
    _, trace = self.tracker.update(
        jax.tree.map(lambda n, o: n - o, new, params), st["param_states"]["norm_trace"], params
    )
    return {
        "target": new,
        "state": {
            "step": (st["step"] + 1).astype(st["step"].dtype),
            "param_states": {"base": base, "norm_trace": trace},
        },
    }

  def restore(self, live, restored):
    return serialization.from_state_dict(live, restored)


class _OptaxLayout:
  """An optax chain ending in track_norms, as T5X's optimizers.chain holds it."""

  def __init__(self, tx):
    self.tx = tx

  def init(self, params):
    return {"target": params, "state": {"param_states": self.tx.init(params)}}

  def step(self, ts):
    params, opt_state = ts["target"], ts["state"]["param_states"]
    u, opt_state = self.tx.update(_grads(params), opt_state, params)
    return {"target": optax.apply_updates(params, u), "state": {"param_states": opt_state}}

  def restore(self, live, restored):
    return serialization.from_state_dict(
        live, _with_live_empty_nodes(restored, serialization.to_state_dict(live))
    )


LAYOUTS = {
    "tracked": _TrackedLayout,
    "make_optimizer": lambda a: _OptaxLayout(
        optimizers.make_optimizer(
            optimizers.adafactor_t5,
            optimizers.rsqrt_schedule(warmup_steps=4),
            history_size=16,
            anchor_every=a,
        )
    ),
    "adamw_chain": lambda a: _OptaxLayout(
        optax.chain(
            optax.adamw(1e-3, weight_decay=0.01),
            tracking.track_norms("paper", "layers", history_size=16, anchor_every=a),
        )
    ),
}


def _run(layout, ts, n):
  step = jax.jit(layout.step)
  for _ in range(n):
    ts = step(ts)
  return ts


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("anchor_every", [None, 2])
@pytest.mark.parametrize("groups", [None, "layers"])
def test_norm_trace_has_no_empty_node(anchor_every, groups):
  """No container without leaves anywhere in a NormTrace, so no checkpointer can drop one."""
  params = _params()
  # A filter that keeps nothing is an error (issue 12), so no trace without leaves can exist.
  with pytest.raises(norms.EmptySelectionError):
    tracking.track_norms(lambda path, x: False, groups, anchor_every=anchor_every).init(params)
  for param_filter in ("paper", "all", lambda path, x: path.endswith("kernel")):
    tx = tracking.track_norms(param_filter, groups, history_size=4, anchor_every=anchor_every)
    state = tx.init(params)
    assert _empty_nodes(serialization.to_state_dict(state)) == []
    _, state = jax.jit(tx.update)(_grads(params), state, params)
    assert _empty_nodes(serialization.to_state_dict(state)) == []


@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
def test_shipped_states_have_empty_nodes_only_from_optax(layout_name):
  """The only empty nodes in the states we ship are optax's own (T5X's optax wrapper handles
  those); the trace and the TrackedOptimizer layout have none."""
  for anchor_every in (None, 2):
    layout = LAYOUTS[layout_name](anchor_every)
    sd = serialization.to_state_dict(layout.init(_params()))
    empty = _empty_nodes(sd)
    if layout_name == "tracked":
      assert empty == []
    ((path, trace),) = tracking.find_traces(sd)
    assert _empty_nodes(trace) == [], (path, empty)


@pytest.mark.parametrize("dtype", [None, "float32"], ids=["as_saved", "float32_cast"])
@pytest.mark.parametrize("anchor_every", [None, 2], ids=["anchor_off", "anchor_on"])
@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
def test_resume_from_t5x_style_checkpoint(tmp_path, layout_name, anchor_every, dtype):
  """Save at step 3 as T5X does, restore into a fresh live state as T5X does, train to step 6:
  the restored tree has the live structure, and the trace equals an uninterrupted run's."""
  layout = LAYOUTS[layout_name](anchor_every)
  ref = _run(layout, layout.init(_params()), N_STEPS)

  saved = _run(layout, layout.init(_params()), SAVE_AT)
  _save_like_t5x(str(tmp_path), SAVE_AT, serialization.to_state_dict(saved))

  live = layout.init(_params())  # what a restarted run builds before restoring
  live_sd = serialization.to_state_dict(live)
  restored = _restore_like_t5x(str(tmp_path), SAVE_AT, live_sd, dtype)
  if layout_name == "tracked":  # an OptimizerDef state is restored key for key
    assert jax.tree.structure(restored) == jax.tree.structure(live_sd), (
        "restored keys differ from the live state: "
        f"{sorted(set(traverse_util.flatten_dict(live_sd, keep_empty_nodes=True, sep='/')) - set(traverse_util.flatten_dict(restored, sep='/')))}"
    )
  if dtype is not None:
    assert {np.asarray(x).dtype for x in jax.tree.leaves(restored)} == {np.dtype(dtype)}
  state = layout.restore(live, restored)
  ((_, trace),) = tracking.find_traces(state)
  assert int(np.asarray(trace.count)) == SAVE_AT

  resumed = _run(layout, state, N_STEPS - SAVE_AT)
  got, want = tracking.read_trace(resumed), tracking.read_trace(ref)
  assert got["step"].tolist() == list(range(1, N_STEPS + 1))
  assert set(got) == set(want)
  for c in want:
    np.testing.assert_allclose(got[c], want[c], rtol=1e-6, atol=1e-7, err_msg=c)
  assert tracking.first_nonfinite_step(resumed) is None
  ((_, trace),) = tracking.find_traces(resumed)
  if dtype is not None:  # the cast counters stay float32 and keep counting
    assert trace.count.dtype == jnp.float32 and float(trace.count) == N_STEPS
