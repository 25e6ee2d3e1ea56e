"""Checkpointer: exact round trip, manifest, mismatch errors, save cadence."""

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normgrowth_jax import checkpoints


def _state(shape=(3, 4)):
  params = {
      "encoder": {"layers_0": {"w": jax.random.normal(jax.random.PRNGKey(0), shape)}},
      "b": jnp.arange(2.0),
  }
  tx = optax.chain(
      optax.inject_hyperparams(lambda learning_rate: optax.adafactor(learning_rate))(
          learning_rate=optax.constant_schedule(0.1)
      ),
      optax.adamw(1e-3),
  )
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


_KILLED_WHILE_SAVING = """
import os, signal, sys
import jax.numpy as jnp
from orbax.checkpoint._src.path import atomicity
from normgrowth_jax import checkpoints

finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def killed_before_commit(self):
  if self.get_final().name == "2":  # every file of step 2 written, not yet committed
    os.kill(os.getpid(), signal.SIGKILL)
  return await finalize(self)

atomicity.AtomicRenameTemporaryPath.finalize = killed_before_commit
ckpt = checkpoints.Checkpointer(sys.argv[1], save_every=1, async_save=False)
for step in (1, 2):
  state = {"params": {"w": jnp.arange(6.0) + step}, "opt_state": (), "step": jnp.asarray(step)}
  ckpt.save(step, state, data_position=step, seed=0)
print("not killed")
"""


def test_checkpoint_killed_while_saving_is_invisible(tmp_path):
  """A process SIGKILLed after writing step 2 but before orbax committed it."""
  proc = subprocess.run(
      [sys.executable, "-c", _KILLED_WHILE_SAVING, str(tmp_path)],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-2000:]
  left = sorted(os.listdir(tmp_path))
  assert "1" in left and "2" not in left
  assert any(d.startswith("2") for d in left), left  # the uncommitted step-2 directory
  ckpt = checkpoints.Checkpointer(tmp_path, save_every=1, async_save=False)
  assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
  target = {"params": {"w": jnp.zeros(6)}, "opt_state": (), "step": jnp.asarray(0)}
  restored, manifest = ckpt.restore(target)
  np.testing.assert_array_equal(restored["params"]["w"], np.arange(6.0) + 1)
  assert int(restored["step"]) == 1 and manifest["data_position"] == 1
  # The leftover does not block saving step 2 again.
  again = {"params": {"w": jnp.arange(6.0) + 2}, "opt_state": (), "step": jnp.asarray(2)}
  assert ckpt.save(2, again, data_position=2, seed=0)
  assert ckpt.latest_step() == 2
  np.testing.assert_array_equal(ckpt.restore(target)[0]["params"]["w"], np.arange(6.0) + 2)
  ckpt.close()


def test_verify_detects_changed_bytes_by_content(tmp_path):
  """Checkpointer.verify: a byte changed in place (same size) fails the SHA-256, not only
  a truncated or deleted file."""
  ckpt = checkpoints.Checkpointer(tmp_path, save_every=1, async_save=False)
  ckpt.save(1, _state((64, 64)), data_position=1, seed=0)
  ckpt.wait()
  assert ckpt.has_checksums(1) and ckpt.verify(1) is None
  step_dir = tmp_path / "1"
  data = max(
      (p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoints.CHECKSUM_FILE),
      key=lambda p: p.stat().st_size,
  )
  rel, original = str(data.relative_to(step_dir)), data.read_bytes()
  mid = len(original) // 2
  data.write_bytes(original[:mid] + bytes([original[mid] ^ 0x01]) + original[mid + 1 :])
  assert ckpt.verify(1) == (
      f"file {rel} does not match its SHA-256 (bytes changed since it " "was written)"
  )
  data.write_bytes(original[:-1])
  assert ckpt.verify(1) == f"file {rel} has {len(original) - 1} bytes, {len(original)} when written"
  data.unlink()
  assert ckpt.verify(1) == f"file {rel} is missing"
  data.write_bytes(original)
  assert ckpt.verify(1) is None
  ckpt.close()


def test_restore_without_a_checkpoint_names_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="No complete checkpoint in .*empty"):
    checkpoints.Checkpointer(tmp_path / "empty").restore(_state())
