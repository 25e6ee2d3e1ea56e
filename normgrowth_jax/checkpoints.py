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

Integrity: once a checkpoint written by this process is complete (at the next save or at
:meth:`Checkpointer.close`), the size and SHA-256 of each of its files go to
``<step>/ng_checksums.json``. :meth:`Checkpointer.verify` compares them;
:meth:`Checkpointer.restore_intact` restores the newest checkpoint that verifies and reads
back, moves each damaged newer one aside to ``damaged_checkpoints/<step>`` next to the
checkpoint directory (nothing is deleted), and reports what it skipped. A checkpoint without
checksums (its writer was killed before writing them) counts as damaged only when reading it
fails and an older checkpoint reads back; otherwise the read error is raised as is.

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

import hashlib
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from normgrowth_jax import norms


class CheckpointMismatchError(ValueError):
  """A checkpoint's parameters do not match the model being restored into."""


CHECKSUM_FILE = "ng_checksums.json"
DAMAGED_DIR = "damaged_checkpoints"


def _file_digests(step_dir: str) -> dict[str, list]:
  """``{relative path: [size, sha256 hex]}`` of every file under ``step_dir`` (sorted)."""
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in sorted(files):
      full = os.path.join(root, name)
      rel = os.path.relpath(full, step_dir)
      if rel in (CHECKSUM_FILE, CHECKSUM_FILE + ".tmp"):
        continue
      h = hashlib.sha256()
      with open(full, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      out[rel] = [os.path.getsize(full), h.hexdigest()]
  return dict(sorted(out.items()))


def _first_line(err: BaseException) -> str:
  text = str(err).strip().splitlines()
  return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def param_manifest(params) -> dict[str, list]:
  """``{path: [shape, dtype]}`` for every parameter leaf (norms.leaf_paths names)."""
  return {
      path: [
          list(np.shape(x)),
          str(np.asarray(x).dtype) if not hasattr(x, "dtype") else str(x.dtype),
      ]
      for path, x in norms.named_leaves(params)
  }


def compare_manifests(saved: dict, current: dict) -> list[str]:
  """Human-readable differences between two parameter manifests (empty if equal)."""
  diffs = []
  for path in sorted(set(saved) - set(current)):
    diffs.append(f"only in checkpoint: {path} {saved[path][0]}")
  for path in sorted(set(current) - set(saved)):
    diffs.append(f"only in model: {path} {current[path][0]}")
  for path in sorted(set(saved) & set(current)):
    if list(saved[path][0]) != list(current[path][0]) or saved[path][1] != current[path][1]:
      diffs.append(
          f"differs: {path} checkpoint {saved[path][0]} {saved[path][1]} "
          f"vs model {current[path][0]} {current[path][1]}"
      )
  return diffs


class Checkpointer:
  """Saves every ``save_every`` steps, keeps the last ``keep``, restores exactly.

  Args:
    directory: where step directories are written (created if missing).
    save_every: save when ``step % save_every == 0`` (and whenever ``force``).
    keep: how many complete checkpoints to keep (oldest deleted first).
    async_save: write in a background thread (the train loop keeps running).
  """

  def __init__(self, directory, save_every: int = 1000, keep: int = 2, async_save: bool = True):
    if save_every < 1:
      raise ValueError(f"Checkpointer: save_every must be >= 1, got {save_every}.")
    self.directory = os.fspath(directory)
    self.save_every = save_every
    self._unsummed: list[int] = []  # steps saved by this process, checksums not yet written
    self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        ),
        item_names=("state", "manifest"),
    )

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def stored_tree(self, step: int) -> Any:
    """The saved state of ``step`` as orbax metadata (leaves have ``.shape``), reading no array."""
    md = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(step), "state"))
    return md.item_metadata.tree

  def save(
      self,
      step: int,
      state: Any,
      *,
      data_position: int,
      seed: int,
      extra: dict | None = None,
      force: bool = False,
  ) -> bool:
    """Saves ``state`` (a pytree with a "params" entry) as step ``step``.

    Returns:
      True if a checkpoint was started (``step % save_every == 0`` or ``force``).
    """
    if not force and step % self.save_every != 0:
      return False
    if step in self._manager.all_steps():
      return False
    self._write_checksums()
    manifest = {
        "step": int(step),
        "data_position": int(data_position),
        "seed": int(seed),
        "params": param_manifest(state["params"]),
        **(extra or {}),
    }
    started = self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), manifest=ocp.args.JsonSave(manifest)
        ),
        force=True,
    )
    if started:
      self._unsummed.append(int(step))
    return started

  def _write_checksums(self) -> None:
    """Waits for the pending save, then writes the checksums of this process's new steps."""
    if not self._unsummed:
      return
    self._manager.wait_until_finished()
    for step in self._unsummed:
      step_dir = os.path.join(self.directory, str(step))
      if not os.path.isdir(step_dir):  # already rotated out (keep)
        continue
      digests = _file_digests(step_dir)
      tmp = os.path.join(step_dir, CHECKSUM_FILE + ".tmp")
      with open(tmp, "w") as f:
        json.dump({"step": step, "files": digests}, f)
      os.replace(tmp, os.path.join(step_dir, CHECKSUM_FILE))
    self._unsummed = []

  def verify(self, step: int) -> str | None:
    """What is wrong with checkpoint ``step`` by its checksums, or None.

    None means it verified, or that it has no checksum file (see :meth:`has_checksums`).
    """
    step_dir = os.path.join(self.directory, str(step))
    path = os.path.join(step_dir, CHECKSUM_FILE)
    if not os.path.isfile(path):
      return None if os.path.isdir(step_dir) else f"{step_dir} is missing"
    try:
      with open(path) as f:
        want = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      return f"its checksum file {path} is unreadable ({_first_line(e)})"
    have = _file_digests(step_dir)
    for rel, (size, digest) in want.items():
      if rel not in have:
        return f"file {rel} is missing"
      if have[rel][0] != size:
        return f"file {rel} has {have[rel][0]} bytes, {size} when written"
      if have[rel][1] != digest:
        return f"file {rel} does not match its SHA-256 (bytes changed since it was written)"
    return None

  def has_checksums(self, step: int) -> bool:
    return os.path.isfile(os.path.join(self.directory, str(step), CHECKSUM_FILE))

  def quarantine(self, step: int) -> str:
    """Moves checkpoint ``step`` to ``<parent>/damaged_checkpoints/<step>``; returns the path."""
    dest_root = os.path.join(os.path.dirname(os.path.abspath(self.directory)), DAMAGED_DIR)
    os.makedirs(dest_root, exist_ok=True)
    dest, k = os.path.join(dest_root, str(step)), 1
    while os.path.exists(dest):
      dest, k = os.path.join(dest_root, f"{step}.{k}"), k + 1
    shutil.move(os.path.join(self.directory, str(step)), dest)
    self._manager.reload()
    return dest

  def restore_intact(self, target: Any) -> tuple[Any, dict | None, list[dict]]:
    """Restores the newest checkpoint that verifies and reads back.

    Returns:
      ``(state, manifest, damaged)``: ``state``/``manifest`` of the restored checkpoint
      (``target`` and None when none is intact), and for each damaged newer checkpoint
      ``{"step", "problem", "moved_to"}`` (newest first); those were moved aside.

    Raises:
      CheckpointMismatchError: as :meth:`restore` (a different model is not damage).
      Exception: the read error of the newest checkpoint when it has no checksums and no
        older checkpoint reads back either (e.g. a changed state structure, not damage).
    """
    suspects, first_err = [], None
    for step in sorted(self.all_steps(), reverse=True):
      problem = self.verify(step)
      if problem is None:
        try:
          state, manifest = self.restore(target, step)
        except CheckpointMismatchError:
          raise
        except Exception as e:  # orbax / TensorStore / JSON errors of a damaged checkpoint
          if self.has_checksums(step):
            raise  # the files are as written: not damage
          first_err = first_err or e
          suspects.append({"step": step, "problem": f"it does not read back ({_first_line(e)})"})
          continue
        damaged = [dict(d, moved_to=self.quarantine(d["step"])) for d in suspects]
        return state, manifest, damaged
      suspects.append({"step": step, "problem": problem})
    if first_err is not None:
      raise first_err
    return target, None, [dict(d, moved_to=self.quarantine(d["step"])) for d in suspects]

  def read_manifest(self, step: int | None = None) -> dict:
    """The JSON manifest of ``step`` (default: the latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
    out = self._manager.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
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
          f"Use a fresh MODEL_DIR or the gin config the checkpoint was trained with."
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    out = self._manager.restore(
        manifest["step"], args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )
    return out["state"], manifest

  def wait(self):
    """Blocks until any background save has finished (and writes its checksums)."""
    self._manager.wait_until_finished()
    self._write_checksums()

  def close(self):
    self._manager.wait_until_finished()
    self._write_checksums()
    self._manager.close()
