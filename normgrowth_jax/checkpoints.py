"""Orbax checkpoints of the whole training state, safe against SIGKILL.

A checkpoint at step ``s`` holds the state *after* ``s`` updates: ``params``,
``opt_state`` (which includes the norm hook's trace and the applied learning
rate), ``step``, and a JSON manifest with the data iterator position (batches
consumed), the seed, and every parameter's path/shape/dtype. Orbax writes each
step into a temporary directory and renames it when complete, so a process killed
at any moment leaves either the previous complete checkpoint or the new one;
:meth:`Checkpointer.latest_step` only sees complete ones.

Restoring into a state of a different model raises :class:`CheckpointMismatchError`
listing the differing parameter paths before any array is read.

Example:
  >>> import tempfile, jax.numpy as jnp
  >>> ckpt = Checkpointer(tempfile.mkdtemp(), save_every=2)
  >>> state = {"params": {"w": jnp.ones(3)}, "opt_state": (), "step": jnp.asarray(2)}
  >>> ckpt.save(2, state, data_position=2, seed=0)
  True
  >>> ckpt.wait()
  >>> restored, manifest = ckpt.restore(state)
  >>> int(restored["step"]), manifest["data_position"]
  (2, 2)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from normgrowth_jax import norms


class CheckpointMismatchError(ValueError):
  """A checkpoint's parameters do not match the model being restored into."""


def param_manifest(params) -> dict[str, list]:
  """``{path: [shape, dtype]}`` for every parameter leaf (norms.leaf_paths names)."""
  return {path: [list(np.shape(x)), str(np.asarray(x).dtype) if not hasattr(x, "dtype")
                 else str(x.dtype)]
          for path, x in norms.named_leaves(params)}


def compare_manifests(saved: dict, current: dict) -> list[str]:
  """Human-readable differences between two parameter manifests (empty if equal)."""
  diffs = []
  for path in sorted(set(saved) - set(current)):
    diffs.append(f"only in checkpoint: {path} {saved[path][0]}")
  for path in sorted(set(current) - set(saved)):
    diffs.append(f"only in model: {path} {current[path][0]}")
  for path in sorted(set(saved) & set(current)):
    if list(saved[path][0]) != list(current[path][0]) or saved[path][1] != current[path][1]:
      diffs.append(f"differs: {path} checkpoint {saved[path][0]} {saved[path][1]} "
                   f"vs model {current[path][0]} {current[path][1]}")
  return diffs


class Checkpointer:
  """Saves every ``save_every`` steps, keeps the last ``keep``, restores exactly.

  Args:
    directory: where step directories are written (created if missing).
    save_every: save when ``step % save_every == 0`` (and whenever ``force``).
    keep: how many complete checkpoints to keep (oldest deleted first).
    async_save: write in a background thread (the train loop keeps running).
  """

  def __init__(self, directory, save_every: int = 1000, keep: int = 2,
               async_save: bool = True):
    if save_every < 1:
      raise ValueError(f"Checkpointer: save_every must be >= 1, got {save_every}.")
    self.directory = directory
    self.save_every = save_every
    self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save),
        item_names=("state", "manifest"))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *, data_position: int, seed: int,
           extra: dict | None = None, force: bool = False) -> bool:
    """Saves ``state`` (a pytree with a "params" entry) as step ``step``.

    Returns:
      True if a checkpoint was started (``step % save_every == 0`` or ``force``).
    """
    if not force and step % self.save_every != 0:
      return False
    if step in self._manager.all_steps():
      return False
    manifest = {"step": int(step), "data_position": int(data_position),
                "seed": int(seed), "params": param_manifest(state["params"]),
                **(extra or {})}
    return self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      manifest=ocp.args.JsonSave(manifest)),
        force=True)

  def read_manifest(self, step: int | None = None) -> dict:
    """The JSON manifest of ``step`` (default: the latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
    out = self._manager.restore(
        step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
    return out["manifest"]

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores ``step`` (default latest) into the structure/dtypes/shardings of ``target``.

    Raises:
      FileNotFoundError: no complete checkpoint exists.
      CheckpointMismatchError: the checkpoint's parameters differ from
        ``target["params"]`` (the message lists every differing path).
    """
    manifest = self.read_manifest(step)
    diffs = compare_manifests(manifest["params"], param_manifest(target["params"]))
    if diffs:
      shown = "\n  ".join(diffs[:40]) + ("\n  ..." if len(diffs) > 40 else "")
      raise CheckpointMismatchError(
          f"Checkpoint {self.directory} step {manifest['step']} was saved from a "
          f"different model ({len(diffs)} parameter differences):\n  {shown}\n"
          f"Use a fresh MODEL_DIR or the gin config the checkpoint was trained with.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    out = self._manager.restore(
        manifest["step"],
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return out["state"], manifest

  def wait(self):
    """Blocks until any background save has finished."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
