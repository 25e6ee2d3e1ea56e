"""The figures' run cache: every trained run is an ordinary trainer run directory, keyed by
a hash of its complete gin configuration.

``<runs_root>/<profile>/<name>-<hash>/`` holds what ``python -m normgrowth_jax.train`` writes
(checkpoints, ``norms.jsonl``, ``metrics.jsonl``, TensorBoard, ``config.gin``) plus
``figure_run.json`` once the run has finished. The hash covers every binding gin resolves from
the files and overrides (included files too), except ``MODEL_DIR``; so a changed config lands
in a new directory and a stale run is never reused. A finished run is reused; an unfinished one
(a killed call) resumes through the trainer's own checkpoints; ``force=True`` retrains.
Changes to the package's code are not in the hash: pass ``--force`` after changing a model.

Other trained things (Fig. 6's grid) live in the same cache: :func:`cached` and
:func:`mark_finished` give them the same reuse, ``--force`` and accounting of training time.

Figures declare their runs as :class:`RunSpec` s; :func:`train_specs` trains the unfinished
ones, several at a time in their own processes when ``workers > 1`` (on a small CPU two small
runs side by side give more steps per second than one after the other).

Example:
  >>> config_hash("a = 1\\nb = 2\\n") == config_hash("a = 1\\nb = 2\\n")
  True
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import importlib
import json
import multiprocessing
import queue
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import gin
import jax

from normgrowth_jax import gin_utils
from normgrowth_jax import train as train_lib
from normgrowth_jax.figures.core import FigureContext

DONE_FILE = "figure_run.json"
_PLACEHOLDER_DIR = "<figures-run-cache>"


def config_hash(config_str: str) -> str:
  """First 10 hex digits of the SHA-256 of a resolved gin config."""
  return hashlib.sha256(config_str.encode()).hexdigest()[:10]


def resolved_config(gin_files: Sequence[str], bindings: Sequence[str]) -> str:
  """The complete gin config (all files and overrides resolved), MODEL_DIR left out."""
  gin.clear_config()
  gin_utils.parse_gin(gin_files, [*bindings, f"MODEL_DIR = '{_PLACEHOLDER_DIR}'"])
  text = gin.config_str()
  gin.clear_config()
  return "\n".join(line for line in text.splitlines() if _PLACEHOLDER_DIR not in line) + "\n"


def run_dir(
    ctx: FigureContext, name: str, gin_files: Sequence[str], bindings: Sequence[str]
) -> Path:
  """Where the run ``name`` with this config lives (or will live) in the cache."""
  return ctx.runs_root / ctx.profile / f"{name}-{config_hash(resolved_config(gin_files, bindings))}"


def is_finished(directory: Path) -> bool:
  return (Path(directory) / DONE_FILE).is_file()


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One cached trainer run: its name in the cache, gin files, ``KEY=VALUE`` overrides (which
  must set ``TRAIN_STEPS`` to ``steps``) and its length, for the progress bar."""

  name: str
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  steps: int


def train_cached(
    ctx: FigureContext, name: str, gin_files: Sequence[str], bindings: Sequence[str], steps: int
) -> Path:
  """Trains (or reuses, or resumes) one run in this process; returns its directory."""
  return train_specs(ctx, [RunSpec(name, tuple(gin_files), tuple(bindings), steps)], workers=1)[0]


def train_specs(
    ctx: FigureContext, specs: Sequence[RunSpec], workers: Optional[int] = None
) -> list[Path]:
  """Trains (or reuses, or resumes) every run; returns their directories in ``specs``' order.

  Args:
    ctx: the figure context (profile, cache root, ``force``, progress, ``train_workers``).
    specs: the runs; a run listed twice (same name and config) is trained once.
    workers: how many runs train at once (default ``ctx.train_workers``). With 1 they train
      here, one after another; with more, each in its own (spawned) process, which imports the
      ``normgrowth_jax`` modules this one has, so the same gin configurables resolve.
  """
  with compilation_cache(ctx):
    return _train_specs(ctx, specs, ctx.train_workers if workers is None else workers)


@contextlib.contextmanager
def compilation_cache(ctx: FigureContext):
  """JAX's persistent compilation cache under the run cache, unless the user set one: runs
  that differ only in their seed then compile once."""
  key = "jax_compilation_cache_dir"
  if jax.config.values.get(key):
    yield
    return
  old_min = jax.config.values.get("jax_persistent_cache_min_compile_time_secs")
  jax.config.update(key, str(Path(ctx.runs_root) / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  try:
    yield
  finally:
    jax.config.update(key, None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)


def cached(ctx: FigureContext, directory: Path, units: int, label: str) -> Optional[dict]:
  """The finished-run record of a cache entry (any trained thing: a trainer run, Fig. 6's
  grid), or None when it must be (re)trained: ``ctx.force`` deletes it, once per call.

  A reused entry counts its training time (``cost_s``, else ``wall_s``) once per call and
  moves the progress bar by ``units``.
  """
  if ctx.force and directory.exists() and directory not in ctx.trained:
    shutil.rmtree(directory)  # retrain once per call, even if several figures use the run
  if not is_finished(directory):
    return None
  done = json.loads((directory / DONE_FILE).read_text())
  if directory not in ctx.trained and directory not in ctx.reused:  # first met in this call
    ctx.note_reused(directory, training_s(directory))
    ctx.advance(units, f"{label} (cached)")
  return done


def training_s(directory: Path) -> float:
  """How long a finished entry took to train: its share of a batch trained side by side
  (``cost_s``), else its own wall time."""
  done = json.loads((Path(directory) / DONE_FILE).read_text())
  # Fig. 6's grids cached before the shared cache kept their time under "run" only.
  return float(done.get("cost_s", done.get("wall_s", done.get("run", {}).get("wall_s", 0.0))))


def mark_finished(ctx: FigureContext, directory: Path, done: dict) -> None:
  """Writes a cache entry's finished-run record (with its ``wall_s``); it is reused from now."""
  (directory / DONE_FILE).write_text(json.dumps(done, indent=1))
  ctx.trained.add(directory)


def _train_specs(ctx: FigureContext, specs: Sequence[RunSpec], workers: int) -> list[Path]:
  dirs, todo = [], {}
  for spec in specs:
    config = resolved_config(spec.gin_files, spec.bindings)
    directory = ctx.runs_root / ctx.profile / f"{spec.name}-{config_hash(config)}"
    dirs.append(directory)
    if directory in todo or cached(ctx, directory, spec.steps, spec.name) is not None:
      continue
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "figure_config.gin").write_text(config)
    todo[directory] = spec
  if todo and (workers <= 1 or len(todo) == 1):
    for directory, spec in todo.items():
      ctx.advance(0, f"training {spec.name}")
      t0 = time.perf_counter()
      summary = _train(
          spec.gin_files, spec.bindings, str(directory), lambda n: ctx.advance(n, None)
      )
      _write_done(ctx, directory, spec, summary, time.perf_counter() - t0)
  elif todo:
    _train_parallel(ctx, todo, workers)
  return dirs


def _train(gin_files, bindings, directory: str, progress) -> dict:
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, [*bindings, f"MODEL_DIR = '{directory}'"])
    return train_lib.train(progress=progress)
  finally:
    gin.clear_config()


def _scalars(summary: dict) -> dict:
  return {k: v for k, v in summary.items() if v is None or isinstance(v, (int, float))}


def _write_done(
    ctx: FigureContext,
    directory: Path,
    spec: RunSpec,
    summary: dict,
    wall_s: float,
    cost_s: Optional[float] = None,
) -> None:
  """Marks a run finished. ``wall_s`` is its own time; ``cost_s`` its share of a batch trained
  side by side (what the report counts as the run's training time), when that differs."""
  done = {
      "name": spec.name,
      "hash": directory.name.rsplit("-", 1)[1],
      "steps": spec.steps,
      "wall_s": wall_s,
      "summary": _scalars(summary),
  }
  if cost_s is not None:
    done["cost_s"] = cost_s
  mark_finished(ctx, directory, done)


# Settings a spawned worker takes over from this process (figures set some, e.g. Fig. 3's
# persistent compilation cache).
_JAX_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_enable_x64",
    "jax_default_matmul_precision",
)
_worker_steps = None  # the worker's queue of finished steps, set by _init_worker


def _init_worker(steps_queue, modules: Sequence[str], settings: dict) -> None:
  global _worker_steps
  _worker_steps = steps_queue
  for m in modules:
    importlib.import_module(m)
  for k, v in settings.items():
    jax.config.update(k, v)


def _train_in_worker(gin_files, bindings, directory: str) -> tuple[dict, float]:
  t0 = time.perf_counter()
  summary = _train(gin_files, bindings, directory, _worker_steps.put)
  return _scalars(summary), time.perf_counter() - t0


def _train_parallel(ctx: FigureContext, todo: dict, workers: int) -> None:
  """Trains ``todo`` (directory -> spec) ``workers`` at a time in spawned processes; each run's
  ``cost_s`` is the batch's wall time split in proportion to the runs' own times."""
  spawn = multiprocessing.get_context("spawn")
  steps_queue = spawn.Queue()
  modules = sorted(m for m in sys.modules if m.startswith("normgrowth_jax."))
  settings = {k: jax.config.values[k] for k in _JAX_SETTINGS if k in jax.config.values}
  ctx.advance(0, f"training {len(todo)} runs, {workers} at a time")
  t0, walls = time.perf_counter(), {}
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=spawn, initializer=_init_worker, initargs=(steps_queue, modules, settings)
  ) as pool:
    futures = {
        pool.submit(_train_in_worker, s.gin_files, s.bindings, str(d)): d for d, s in todo.items()
    }
    pending = set(futures)
    while pending:
      finished, pending = concurrent.futures.wait(pending, timeout=0.5)
      _drain(ctx, steps_queue)
      for f in finished:
        directory = futures[f]
        try:
          summary, walls[directory] = f.result()
        except Exception as e:
          pool.shutdown(cancel_futures=True)
          raise RuntimeError(
              f"training {todo[directory].name} in {directory} failed ({e}); "
              "rerun to resume it from its last checkpoint."
          ) from e
        _write_done(ctx, directory, todo[directory], summary, walls[directory])
  _drain(ctx, steps_queue)
  elapsed = time.perf_counter() - t0
  for directory, wall in walls.items():
    path = directory / DONE_FILE
    done = json.loads(path.read_text())
    done["cost_s"] = elapsed * wall / sum(walls.values())
    path.write_text(json.dumps(done, indent=1))


def _drain(ctx: FigureContext, steps_queue) -> None:
  while True:
    try:
      ctx.advance(steps_queue.get_nowait(), None)
    except queue.Empty:
      return
