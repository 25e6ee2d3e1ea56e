"""Streaming sinks for :func:`normgrowth_jax.tracking.track_norms`: JSONL and TensorBoard.

How rows leave jit without stalling the accelerator: the hook calls ``sink.write_rows`` through
``jax.debug.callback`` only on recording steps (and with ``stream_every_rows=k`` only once per
k rows, with those k rows as one small block). ``write_rows`` just copies the block onto a queue
and returns; a background thread does all file I/O. The sink keeps the last step it wrote and
drops any row whose step is not larger, so a callback that fires once per device (sharded
params) or a replayed step still yields exactly one row per step.

Resume: after restoring a checkpoint at step s, call ``sink.resume(s, opt_state)``. It drains
the queue, truncates the output to rows with step <= s (JSONL: rewrites the file; TensorBoard:
reopens the writer with ``purge_step=s + 1``) and re-emits from the restored trace any rows
with step <= s that the file lacks (e.g. the tail of an unfinished k-row block). The file then
has no duplicate and no missing steps. Call ``close(opt_state)`` at the end (``flush`` to make
the file complete mid-run); ``close()`` is also registered with ``atexit``.

Example:
  >>> import os, tempfile, jax.numpy as jnp, optax
  >>> from normgrowth_jax import sinks, tracking
  >>> path = os.path.join(tempfile.mkdtemp(), "norms.jsonl")
  >>> sink = sinks.JsonlSink(path)
  >>> opt = optax.chain(optax.sgd(0.1), tracking.track_norms(sink=sink, history_size=8))
  >>> params = {"w": jnp.ones((3,))}
  >>> state = opt.init(params)
  >>> for _ in range(3):
  ...   updates, state = opt.update({"w": jnp.ones((3,))}, state, params)
  ...   params = optax.apply_updates(params, updates)
  >>> sink.close(state)
  >>> [r["step"] for r in sinks.read_jsonl(path)]
  [1, 2, 3]
"""

from __future__ import annotations

import atexit
import json
import math
import os
import queue
import threading
import warnings
from typing import Any, Mapping, Optional

import jax
import numpy as np

from normgrowth_jax import tracking


def _rows(columns: Mapping[str, Any]) -> list[dict]:
  """Column block {name: [k]} -> list of row dicts in step order."""
  cols = {k: np.asarray(v).reshape(-1) for k, v in columns.items()}
  n = len(cols["step"])
  rows = []
  for i in range(n):
    row = {}
    for k, v in cols.items():
      x = v[i]
      if k in ("step", "anchor_step"):
        row[k] = int(np.rint(x))
      elif k == "nonfinite":
        row[k] = bool(x > 0.5) if not isinstance(x, (bool, np.bool_)) else bool(x)
      else:
        x = float(x)
        row[k] = x if math.isfinite(x) else None  # JSON has no NaN/inf; see "nonfinite"
    rows.append(row)
  rows.sort(key=lambda r: r["step"])
  return rows


def read_jsonl(path: str) -> list[dict]:
  """Rows of a JSONL trace file (skips a torn last line left by a crash).

  Raises:
    ValueError: a line other than the last is not a JSON object (the file was damaged, not
      cut short by a crash); the message names the line. Nothing is changed on disk, so a
      sink never rewrites such a file without the rows after the bad line.
  """
  out = []
  if not os.path.exists(path):
    return out
  with open(path) as f:
    lines = f.read().split("\n")
  while lines and not lines[-1].strip():
    lines.pop()
  for i, line in enumerate(lines):
    try:
      row = json.loads(line)
      if not isinstance(row, dict) or "step" not in row:
        raise ValueError("not a row with a step")
    except ValueError as e:
      if i == len(lines) - 1:
        break  # torn last line
      raise ValueError(
          f"{path}: line {i + 1} of {len(lines)} is not a JSON row ({e}) but later "
          "lines are: the file is damaged, not cut short. Repair or move it away "
          "(it was left unchanged)."
      ) from None
    out.append(row)
  return out


class _ThreadedSink:
  """Queue + background writer thread; subclasses implement _open/_write/_flush/_close/_truncate."""

  def __init__(self):
    self._queue: queue.Queue = queue.Queue()
    self._lock = threading.RLock()
    self.last_step: Optional[int] = None
    self._closed = False
    self._warned = False
    self._thread = threading.Thread(target=self._work, daemon=True)
    self._thread.start()
    atexit.register(self.close)

  # called from jax.debug.callback: must be quick
  def write_rows(self, columns: Mapping[str, Any]) -> None:
    """Enqueues a block of rows ``{column: [k]}`` (non-blocking)."""
    if not self._closed:
      self._queue.put({k: np.array(v) for k, v in columns.items()})

  def _work(self):
    while True:
      block = self._queue.get()
      try:
        if block is None:
          return
        with self._lock:
          self._write_block(block)
      finally:
        self._queue.task_done()

  def _write_block(self, block, backfill=False):
    rows = _rows(block)
    stale = (
        self.last_step is not None and bool(rows) and rows[-1]["step"] < self.last_step
    )  # the whole block is old: a missed resume
    for row in rows:
      if self.last_step is not None and row["step"] <= self.last_step:
        if stale and not (self._warned or backfill):
          self._warned = True
          warnings.warn(
              f"{type(self).__name__}: dropping rows at or before step "
              f"{self.last_step} already written; call resume(step) after restoring "
              "a checkpoint (or start from a fresh file)."
          )
        continue
      self._write(row)
      self.last_step = row["step"]

  def _drain(self):
    jax.effects_barrier()  # every dispatched computation has run its callbacks
    self._queue.join()

  def flush(self, opt_state=None) -> None:
    """Writes everything queued; with ``opt_state``, also the trace rows not yet streamed."""
    if self._closed:
      return
    self._drain()
    with self._lock:
      if opt_state is not None:
        self._write_block(tracking.read_trace(opt_state), backfill=True)
      self._flush()

  def truncate_after(self, step: int) -> None:
    """Drops every written row with step > ``step`` (no duplicates after a resume)."""
    self._drain()
    with self._lock:
      self.last_step = self._truncate(int(step))
      self._warned = False

  def resume(self, step: int, opt_state=None) -> None:
    """Truncate after ``step``, then fill any gap up to ``step`` from the restored state."""
    self.truncate_after(step)
    if opt_state is not None:
      trace = tracking.read_trace(opt_state)
      keep = trace["step"] <= step
      if self.last_step is not None and keep.any():
        have = trace["step"][keep]
        if have.min() > self.last_step + 1 and self.last_step > 0:
          warnings.warn(
              f"Trace in the restored state starts at step {have.min()} but the "
              f"file ends at {self.last_step}: the rows between are lost (history "
              "ring buffer too small for the streaming block)."
          )
      with self._lock:
        self._write_block({k: v[keep] for k, v in trace.items()}, backfill=True)
        self._flush()

  def close(self, opt_state=None) -> None:
    """Flushes (see :meth:`flush`), stops the writer thread and closes the output."""
    if self._closed:
      return
    try:
      self.flush(opt_state)
    finally:
      self._closed = True
    self._queue.put(None)
    self._thread.join()
    with self._lock:
      self._close()


class JsonlSink(_ThreadedSink):
  """One JSON object per recorded step: ``{"step": 100, "param_norm": 123.4, ...}``.

  Non-finite values are written as ``null`` with ``"nonfinite": true``. An existing file is
  continued (rows with a step already in it are dropped): after restoring a checkpoint call
  :meth:`resume`; to start over pass ``overwrite=True``.
  """

  def __init__(self, path: str, overwrite: bool = False):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if overwrite and os.path.exists(path):
      os.remove(path)
    rows = read_jsonl(path)
    self._rewrite(rows)  # drops a torn last line
    self._file = open(path, "a")
    super().__init__()
    self.last_step = rows[-1]["step"] if rows else None

  def _rewrite(self, rows):
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)

  def _write(self, row):
    self._file.write(json.dumps(row) + "\n")

  def _flush(self):
    self._file.flush()

  def _truncate(self, step):
    self._file.close()
    rows = [r for r in read_jsonl(self.path) if r["step"] <= step]
    self._rewrite(rows)
    self._file = open(self.path, "a")
    return rows[-1]["step"] if rows else None

  def _close(self):
    self._file.close()


class TensorBoardSink(_ThreadedSink):
  """Scalars ``<prefix>/<column>`` at each recorded step, via tensorboardX.

  :meth:`resume`/:meth:`truncate_after` reopen the writer with ``purge_step=step + 1`` so
  TensorBoard discards the stale events written after the checkpoint. Without ``purge_step``
  no events file is created before the first row or truncate (a run refused by its
  checks leaves ``logdir`` as it was).
  """

  def __init__(self, logdir: str, prefix: str = "norms", purge_step: Optional[int] = None):
    from tensorboardX import SummaryWriter  # imported lazily: optional at import time

    self._writer_cls = SummaryWriter
    self.logdir, self.prefix = logdir, prefix
    self._writer = None if purge_step is None else SummaryWriter(logdir, purge_step=purge_step)
    super().__init__()
    if purge_step is not None:
      self.last_step = purge_step - 1

  def _open(self):
    if self._writer is None:
      self._writer = self._writer_cls(self.logdir)
    return self._writer

  def _write(self, row):
    step = row["step"]
    self._open()
    for k, v in row.items():
      if k == "step":
        continue
      v = float("nan") if v is None else float(v)
      self._writer.add_scalar(f"{self.prefix}/{k}", v, global_step=step)

  def _flush(self):
    if self._writer is not None:
      self._writer.flush()

  def _truncate(self, step):
    if self._writer is not None:
      self._writer.close()
    self._writer = self._writer_cls(self.logdir, purge_step=step + 1)
    return step if self.last_step is None else min(step, self.last_step)

  def _close(self):
    if self._writer is not None:
      self._writer.close()


class MultiSink:
  """Forwards every call to several sinks, e.g. ``MultiSink(JsonlSink(p), TensorBoardSink(d))``."""

  def __init__(self, *sinks):
    self.sinks = sinks

  def write_rows(self, columns):
    for s in self.sinks:
      s.write_rows(columns)

  def flush(self, opt_state=None):
    for s in self.sinks:
      s.flush(opt_state)

  def truncate_after(self, step):
    for s in self.sinks:
      s.truncate_after(step)

  def resume(self, step, opt_state=None):
    for s in self.sinks:
      s.resume(step, opt_state)

  def close(self, opt_state=None):
    for s in self.sinks:
      s.close(opt_state)
