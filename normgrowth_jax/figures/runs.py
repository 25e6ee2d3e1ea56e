"""The figures' run cache: every trained run is an ordinary trainer run directory, keyed by
a hash of its complete gin configuration.

``<runs_root>/<profile>/<name>-<hash>/`` holds what ``python -m normgrowth_jax.train`` writes
(checkpoints, ``norms.jsonl``, ``metrics.jsonl``, TensorBoard, ``config.gin``) plus
``figure_run.json`` once the run has finished. The hash covers every binding gin resolves from
the files and overrides (included files too), except ``MODEL_DIR``; so a changed config lands
in a new directory and a stale run is never reused. A finished run is reused; an unfinished one
(a killed call) resumes through the trainer's own checkpoints; ``force=True`` retrains.
Changes to the package's code are not in the hash: pass ``--force`` after changing a model.

Example:
  >>> config_hash("a = 1\\nb = 2\\n") == config_hash("a = 1\\nb = 2\\n")
  True
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import gin

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
  train_lib.parse_gin(gin_files, [*bindings, f"MODEL_DIR = '{_PLACEHOLDER_DIR}'"])
  text = gin.config_str()
  gin.clear_config()
  return "\n".join(line for line in text.splitlines() if _PLACEHOLDER_DIR not in line) + "\n"


def run_dir(ctx: FigureContext, name: str, gin_files: Sequence[str],
            bindings: Sequence[str]) -> Path:
  """Where the run ``name`` with this config lives (or will live) in the cache."""
  return ctx.runs_root / ctx.profile / f"{name}-{config_hash(resolved_config(gin_files, bindings))}"


def is_finished(directory: Path) -> bool:
  return (Path(directory) / DONE_FILE).is_file()


def train_cached(ctx: FigureContext, name: str, gin_files: Sequence[str],
                 bindings: Sequence[str], steps: int) -> Path:
  """Trains (or reuses, or resumes) one run; returns its directory.

  Args:
    ctx: the figure context (profile, cache root, ``force``, progress).
    name: the run's name in the cache (e.g. "fig1-t5-seed0").
    gin_files: gin files for :mod:`normgrowth_jax.train`.
    bindings: ``KEY=VALUE`` overrides; must set ``TRAIN_STEPS`` to ``steps``.
    steps: the run's length, for the progress bar.
  """
  config = resolved_config(gin_files, bindings)
  directory = ctx.runs_root / ctx.profile / f"{name}-{config_hash(config)}"
  if ctx.force and directory.exists() and directory not in ctx.trained:
    shutil.rmtree(directory)  # retrain once per call, even if several figures use the run
  if is_finished(directory):
    ctx.note_reused(directory, json.loads((directory / DONE_FILE).read_text()).get("wall_s", 0.0))
    ctx.advance(steps, f"{name} (cached)")
    return directory
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "figure_config.gin").write_text(config)
  ctx.advance(0, f"training {name}")
  t0 = time.perf_counter()
  gin.clear_config()
  try:
    train_lib.parse_gin(gin_files, [*bindings, f"MODEL_DIR = '{directory}'"])
    summary = train_lib.train(progress=lambda n: ctx.advance(n, None))
  finally:
    gin.clear_config()
  done = {"name": name, "hash": directory.name.rsplit("-", 1)[1], "steps": steps,
          "wall_s": time.perf_counter() - t0,
          "summary": {k: v for k, v in summary.items() if v is None or isinstance(v, (int, float))}}
  (directory / DONE_FILE).write_text(json.dumps(done, indent=1))
  ctx.trained.add(directory)
  return directory
