"""Reading a recorded norm trajectory back: checkpoints, TensorBoard events, JSONL.

Three sources, one output form ``{column: np.ndarray}`` with a ``step`` column (int64) and
the hook's column names (``param_norm``, ``update_norm``, ``alignment``, ``direction_angle``,
``direction_cos``, ``param_norm/<group>``, ...):

* :func:`read_checkpoint_trace`: the ``NormTrace`` saved in the latest (or a given)
  checkpoint's optimizer state: T5X (``TrackedOptimizer`` or an optax chain ending in
  ``track_norms``) and the embedded trainer.
* :func:`read_tensorboard`: scalars under a tag prefix (default ``norms/``) from every
  ``events.out.tfevents.*`` file below a directory (T5X writes ``MODEL_DIR/train``;
  ``sinks.TensorBoardSink`` writes its logdir). Reads TFRecord framing and the ``Event``
  protobuf (tensorboardX's generated classes) directly: no TensorFlow or TensorBoard needed.
  Both ``simple_value`` (tensorboardX) and scalar ``tensor`` values (tf.summary / clu) are
  read. A restart's ``SessionLog.START`` at step s (tensorboardX ``purge_step``) drops the
  earlier values at steps >= s; a later value at the same step replaces the earlier one.
* :func:`read_jsonl_trajectory`: rows of ``sinks.JsonlSink``.

:func:`read_trajectory` picks the best available source for a model directory.

Example:
  >>> import tempfile
  >>> from tensorboardX import SummaryWriter
  >>> d = tempfile.mkdtemp()
  >>> w = SummaryWriter(d)
  >>> for s in (10, 20):
  ...   w.add_scalar("norms/param_norm", float(s), global_step=s)
  >>> w.close()
  >>> tb = read_tensorboard(d)
  >>> tb["step"].tolist(), tb["param_norm"].tolist()
  ([10, 20], [10.0, 20.0])
"""

from __future__ import annotations

import glob
import os
import struct
from typing import Iterator, Optional

import numpy as np

from normgrowth_jax import sinks, tracking
from normgrowth_jax.analysis import checkpoints as ckpts

# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint_trace(
    model_dir: str, step: Optional[int] = None, which: Optional[str] = None
) -> dict[str, np.ndarray]:
  """The ``NormTrace`` rows stored in a checkpoint's optimizer state.

  Args:
    model_dir: T5X MODEL_DIR or embedded-trainer checkpoint directory.
    step: checkpoint step (default: the latest).
    which: substring of the trace's path when the state holds several.

  Returns:
    ``tracking.read_trace``'s columns (rows with step <= the checkpoint's step).
  """
  refs = ckpts.list_checkpoints(model_dir)
  if step is not None:
    refs = [r for r in refs if r.step == step]
    if not refs:
      raise FileNotFoundError(f"No checkpoint at step {step} in {model_dir}.")
  ref = refs[-1]
  prefix = ("state",) if ref.layout in ("t5x", "t5x_orbax") else ("opt_state",)
  tree = ckpts.read_state_tree(ref, prefix)
  try:
    return tracking.read_trace(tree, which=which)
  except ValueError as e:
    raise ValueError(
        f"{e} (checkpoint {ref.path}; was the run trained with "
        "norm_tracking.gin or an optax chain ending in track_norms?)"
    ) from e


# ----------------------------------------------------------------------------- tensorboard


def _records(path: str) -> Iterator[bytes]:
  """TFRecord payloads (length u64, crc u32, data, crc u32); stops at a torn tail."""
  with open(path, "rb") as f:
    while True:
      head = f.read(12)
      if len(head) < 12:
        return
      (n,) = struct.unpack("<Q", head[:8])
      data = f.read(n)
      if len(data) < n or len(f.read(4)) < 4:
        return
      yield data


def _tensor_scalar(t) -> Optional[float]:
  """A float from a scalar TensorProto (float/double/half/int fields or tensor_content)."""
  dtypes = {
      1: np.float32,
      2: np.float64,
      3: np.int32,
      9: np.int64,
      19: np.float16,
      14: None,
  }  # 14 = bfloat16
  for field in ("float_val", "double_val", "int_val", "int64_val"):
    vals = getattr(t, field)
    if len(vals):
      return float(vals[0])
  if len(t.half_val):
    return float(np.array([t.half_val[0]], np.uint16).view(np.float16)[0])
  if t.tensor_content:
    if t.dtype == 14:
      raw = np.frombuffer(t.tensor_content, np.uint16).astype(np.uint32) << 16
      return float(raw.view(np.float32)[0])
    dt = dtypes.get(t.dtype)
    if dt is not None:
      return float(np.frombuffer(t.tensor_content, dt)[0])
  return None


def _first_wall_time(path: str) -> float:
  from tensorboardX.proto import event_pb2

  for rec in _records(path):
    ev = event_pb2.Event()
    ev.ParseFromString(rec)
    return ev.wall_time
  return float("inf")


def _event_files(logdir: str) -> list[str]:
  """Event files per directory in the order they were started (first event's wall time)."""
  files = glob.glob(os.path.join(logdir, "**", "*tfevents*"), recursive=True)
  return sorted(files, key=lambda p: (os.path.dirname(p), _first_wall_time(p), os.path.basename(p)))


def read_tensorboard(
    logdir: str, prefix: str = "norms/", subdir: Optional[str] = None
) -> dict[str, np.ndarray]:
  """Scalars whose tag starts with ``prefix`` from every event file below ``logdir``.

  Args:
    logdir: a TensorBoard log directory, or a T5X MODEL_DIR (its ``train`` subdirectory is
      used when it exists and ``subdir`` is None).
    prefix: tag prefix, removed from the column names ("" keeps every scalar).
    subdir: read only this subdirectory of ``logdir``.

  Returns:
    ``{"step": [n] int64, column: [n] float64}`` over the union of steps (NaN where a
    column has no value at a step).
  """
  from tensorboardX.proto import event_pb2

  root = os.path.join(logdir, subdir) if subdir else logdir
  if subdir is None and os.path.isdir(os.path.join(logdir, "train")):
    root = os.path.join(logdir, "train")
  files = _event_files(root)
  if not files:
    raise FileNotFoundError(f"No TensorBoard event files below {root}.")
  series: dict[str, dict[int, float]] = {}
  for path in files:
    for rec in _records(path):
      ev = event_pb2.Event()
      ev.ParseFromString(rec)
      if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
        for s in series.values():
          for k in [k for k in s if k >= ev.step]:
            del s[k]
        continue
      if not ev.HasField("summary"):
        continue
      for v in ev.summary.value:
        if not v.tag.startswith(prefix) or v.tag[len(prefix) :] == "step":
          continue
        kind = v.WhichOneof("value")
        if kind == "simple_value":
          x = float(v.simple_value)
        elif kind == "tensor":
          x = _tensor_scalar(v.tensor)
          if x is None:
            continue
        else:
          continue
        series.setdefault(v.tag[len(prefix) :], {})[int(ev.step)] = x
  if not series:
    raise ValueError(f"No scalars with tag prefix {prefix!r} in {root}.")
  steps = sorted(set().union(*[s.keys() for s in series.values()]))
  out = {"step": np.asarray(steps, np.int64)}
  for name in sorted(series):
    s = series[name]
    out[name] = np.asarray([s.get(t, np.nan) for t in steps], np.float64)
  return out


# ----------------------------------------------------------------------------- jsonl


def read_jsonl_trajectory(path: str) -> dict[str, np.ndarray]:
  """Columns of a ``sinks.JsonlSink`` file (None -> NaN; a torn last line is skipped)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"No JSONL file at {path}.")
  rows = sinks.read_jsonl(path)
  if not rows:
    raise ValueError(f"No rows in {path}.")
  keys = list(dict.fromkeys(k for r in rows for k in r))
  out = {}
  for k in keys:
    vals = [r.get(k) for r in rows]
    if k in ("step", "anchor_step"):
      out[k] = np.asarray(vals, np.int64)
    elif k == "nonfinite":
      out[k] = np.asarray([bool(v) for v in vals])
    else:
      out[k] = np.asarray([np.nan if v is None else v for v in vals], np.float64)
  return out


# ----------------------------------------------------------------------------- any source


def read_trajectory(model_dir: str, source: str = "auto") -> dict[str, np.ndarray]:
  """The per-step trajectory of a run from ``source`` in "checkpoint", "tensorboard", "jsonl".

  "auto" tries, in order: the latest checkpoint's trace (densest: every ``every`` steps),
  TensorBoard scalars under ``norms/`` (every ``stats_period``), then ``*.jsonl`` files.
  """
  errors = []
  order = ["checkpoint", "tensorboard", "jsonl"] if source == "auto" else [source]
  for src in order:
    try:
      if src == "checkpoint":
        return read_checkpoint_trace(model_dir)
      if src == "tensorboard":
        return read_tensorboard(model_dir)
      if src == "jsonl":
        files = sorted(
            glob.glob(os.path.join(model_dir, "**", "*.jsonl"), recursive=True),
            key=lambda f: (os.path.basename(f) != "norms.jsonl", f),
        )  # the trainer's
        if not files:
          raise FileNotFoundError(f"No .jsonl file below {model_dir}.")
        return read_jsonl_trajectory(files[0])
      raise ValueError(f"Unknown source {src!r}: use auto, checkpoint, tensorboard or jsonl.")
    except (FileNotFoundError, ValueError) as e:
      errors.append(f"{src}: {e}")
  raise FileNotFoundError(f"No trajectory found in {model_dir}:\n  " + "\n  ".join(errors))
