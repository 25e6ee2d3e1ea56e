"""Checkpointer: exact round trip, manifest, mismatch errors, save cadence."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normgrowth_jax import checkpoints


def _state(shape=(3, 4)):
  params = {"encoder": {"layers_0": {"w": jax.random.normal(jax.random.PRNGKey(0), shape)}},
            "b": jnp.arange(2.0)}
  tx = optax.chain(
      optax.inject_hyperparams(lambda learning_rate: optax.adafactor(learning_rate))(
          learning_rate=optax.constant_schedule(0.1)),
      optax.adamw(1e-3))
  opt_state = tx.init(params)
  _, opt_state = tx.update(params, opt_state, params)
  return {"params": params, "opt_state": opt_state, "step": jnp.asarray(4, jnp.int32)}


def test_roundtrip_is_bit_exact_and_keeps_structure(tmp_path):
  state = _state()
  ckpt = checkpoints.Checkpointer(tmp_path, save_every=2)
  assert ckpt.save(4, state, data_position=4, seed=7, extra={"note": "x"})
  ckpt.wait()
  zeros = jax.tree.map(jnp.zeros_like, state)
  restored, manifest = ckpt.restore(zeros)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert manifest["data_position"] == 4 and manifest["seed"] == 7
  assert manifest["note"] == "x"
  assert manifest["params"]["encoder/layers_0/w"] == [[3, 4], "float32"]
  ckpt.close()


def test_save_cadence_and_keep(tmp_path):
  state = _state()
  ckpt = checkpoints.Checkpointer(tmp_path, save_every=2, keep=2, async_save=False)
  saved = [s for s in range(1, 8) if ckpt.save(s, state, data_position=s, seed=0)]
  assert saved == [2, 4, 6]
  assert ckpt.save(7, state, data_position=7, seed=0, force=True)
  assert ckpt.all_steps() == [6, 7]
  assert ckpt.latest_step() == 7
  assert ckpt.read_manifest()["data_position"] == 7
  ckpt.close()


def test_mismatched_model_names_every_differing_path(tmp_path):
  ckpt = checkpoints.Checkpointer(tmp_path, save_every=1, async_save=False)
  ckpt.save(1, _state(), data_position=1, seed=0)
  other = _state(shape=(3, 5))
  other["params"]["extra"] = jnp.ones(1)
  with pytest.raises(checkpoints.CheckpointMismatchError) as err:
    ckpt.restore(other)
  msg = str(err.value)
  assert "2 parameter differences" in msg
  assert "differs: encoder/layers_0/w checkpoint [3, 4] float32 vs model [3, 5] float32" in msg
  assert "only in model: extra [1]" in msg
  ckpt.close()


def test_incomplete_checkpoint_is_invisible(tmp_path):
  ckpt = checkpoints.Checkpointer(tmp_path, save_every=1, async_save=False)
  ckpt.save(1, _state(), data_position=1, seed=0)
  ckpt.close()
  # What a SIGKILL mid-write leaves behind: a temporary step directory.
  (tmp_path / "2.orbax-checkpoint-tmp-123").mkdir()
  ckpt = checkpoints.Checkpointer(tmp_path, save_every=1)
  assert ckpt.latest_step() == 1
  with pytest.raises(FileNotFoundError):
    checkpoints.Checkpointer(tmp_path / "empty").restore(_state())
