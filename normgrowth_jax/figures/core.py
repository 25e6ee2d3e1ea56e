"""What every figure module receives and returns: its context, its result, its numbers file.

A figure module (``fig2``, ``fig4``, ...) declares (:class:`FigureModule`, checked by the
registry)

* ``NAME`` and ``TITLE``;
* ``CONFIGS = {"smoke": ..., "quick": ..., "full": ...}``: one frozen dataclass per profile;
* ``work(config) -> int``: its units of work beyond training its runs (the pipeline counts
  their steps), for the pipeline's single progress bar;
* ``run_specs(ctx, config) -> list[runs.RunSpec]``: the trainer runs it draws (maybe none), which
  the pipeline trains (or finds in the cache) before it makes any figure, so what one figure
  finds of another's runs never depends on their order;
* ``make(ctx, config) -> FigureResult``: runs (or loads cached runs), writes ``<NAME>.png``,
  ``<NAME>.pdf`` and ``<NAME>.json`` into ``ctx.out_dir`` and returns the report's numbers.

Example:
  >>> row = Row("pre-norm, c = 1", paper=0.727, ours=0.7065, spread=0.012, n=3)
  >>> row.cells()
  ['pre-norm, c = 1', '0.727', '0.707 ± 0.012 (n=3)']
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from normgrowth_jax.figures import verdict as verdict_lib

PROFILES = ("smoke", "quick", "full")


@dataclasses.dataclass(frozen=True)
class FigureOptions:
  """What the command line may hand to figures.

  Attributes:
    model_dir: a trainer run directory Figs. 1 and 5 draw instead of our own T5 runs.
    hf_model_dirs: Hugging Face model directories Fig. 2 measures beside its subjects.
  """

  model_dir: Optional[str] = None
  hf_model_dirs: tuple[str, ...] = ()


@dataclasses.dataclass
class FigureContext:
  """Where a figure writes, where cached runs live, and how it reports progress.

  Attributes:
    profile: "smoke", "quick" or "full".
    out_dir: the figures folder (``figures/<profile>``); figure files go here.
    runs_root: root of the run cache (``runs/figures``); runs go to ``<runs_root>/<profile>/``.
    force: retrain cached runs.
    options: options from the command line (:class:`FigureOptions`).
    advance: ``advance(units, stage)`` moves the pipeline's progress bar.
    train_workers: how many runs train at once (see ``runs.train_specs``).
    trained: run directories trained during this call (``--force`` retrains each only once).
    reused: run directory -> the wall time its training took, for every cached run reused by
      this call (so the report can say what a call without the cache would take).
  """

  profile: str
  out_dir: Path
  runs_root: Path
  force: bool = False
  options: FigureOptions = FigureOptions()
  advance: Callable[[int, Optional[str]], None] = lambda units=1, stage=None: None
  train_workers: int = 1
  trained: set = dataclasses.field(default_factory=set)
  reused: dict = dataclasses.field(default_factory=dict)

  def note_reused(self, directory: Path, train_wall_s: float) -> None:
    """Records that a cached run (trained in ``train_wall_s`` seconds) was reused; a run
    trained earlier in this call is not counted again."""
    if Path(directory) not in self.trained:
      self.reused.setdefault(Path(directory), float(train_wall_s))

  def path(self, filename: str) -> Path:
    self.out_dir.mkdir(parents=True, exist_ok=True)
    return self.out_dir / filename


class FigureModule(Protocol):
  """The contract of a figure module (see the module docstring); a module satisfies it by its
  module-level names."""

  NAME: str
  TITLE: str
  CONFIGS: dict

  def work(self, config) -> int:
    ...

  def run_specs(self, ctx: FigureContext, config) -> list:
    ...

  def make(self, ctx: FigureContext, config) -> FigureResult:
    ...


def no_runs(ctx: FigureContext, cfg) -> list:
  """``run_specs`` of a figure that trains no trainer run."""
  del ctx, cfg
  return []


def _fmt(x, digits=3) -> str:
  if x is None:
    return "—"
  if isinstance(x, str):
    return x
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  x = float(x)
  if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
    return f"{x:.2e}"
  return f"{x:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a figure's comparison table: the paper's number beside ours.

  ``ours`` is a mean over ``n`` seeds with ``spread`` (their standard deviation) when n > 1.
  """

  quantity: str
  paper: Any
  ours: Any
  spread: Optional[float] = None
  n: int = 1

  def cells(self) -> list[str]:
    ours = _fmt(self.ours)
    if self.spread is not None and self.n > 1:
      ours += f" ± {_fmt(self.spread)} (n={self.n})"
    return [self.quantity, _fmt(self.paper), ours]

  @classmethod
  def of(cls, quantity: str, paper: Any, values: Sequence[float]) -> "Row":
    """The row of per-seed ``values``: their mean, standard deviation and count.

    >>> Row.of("exponent", 0.5, [0.4, 0.6]).cells()
    ['exponent', '0.500', '0.500 ± 0.141 (n=2)']
    """
    return cls(quantity, paper, *mean_spread(values))


@dataclasses.dataclass
class FigureResult:
  """What a figure hands to the report."""

  name: str
  title: str
  files: list
  rows: list
  criteria: list
  setup: list  # how our setup differs from the paper's (model, data, steps)
  notes: list = dataclasses.field(default_factory=list)
  wall_s: float = 0.0
  cached_train_s: float = 0.0  # training time of the cached runs this figure was first to reuse

  @property
  def verdict(self) -> str:
    return verdict_lib.verdict(self.criteria)

  @classmethod
  def from_json(cls, d: dict) -> "FigureResult":
    """Reads back :meth:`to_json` (the report of an earlier call)."""
    return cls(
        d["name"],
        d["title"],
        d["files"],
        [Row(**r) for r in d["rows"]],
        [verdict_lib.Criterion(**c) for c in d["criteria"]],
        d["setup"],
        d["notes"],
        d["wall_s"],
        d.get("cached_train_s", 0.0),
    )

  def to_json(self) -> dict:
    return {
        "name": self.name,
        "title": self.title,
        "verdict": self.verdict,
        "wall_s": self.wall_s,
        "cached_train_s": self.cached_train_s,
        "files": [str(f) for f in self.files],
        "rows": [dataclasses.asdict(r) for r in self.rows],
        "criteria": [c.to_json() for c in self.criteria],
        "setup": self.setup,
        "notes": self.notes,
    }


def mean_spread(values: Sequence[float]) -> tuple[float, Optional[float], int]:
  """(mean, sample std or None for one value, n) of per-seed values."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None), int(v.size)


def _to_plain(x):
  if isinstance(x, dict):
    return {str(k): _to_plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_to_plain(v) for v in x]
  if isinstance(x, np.ndarray):
    return _to_plain(x.tolist())
  if isinstance(x, (np.floating, float)):
    return float(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, np.bool_):
    return bool(x)
  if hasattr(x, "__array__"):
    return _to_plain(np.asarray(x))
  return x


def nonfinite_paths(x, prefix="") -> list[str]:
  """JSON paths of every float in ``x`` that is NaN or infinite."""
  if isinstance(x, dict):
    return [p for k, v in x.items() for p in nonfinite_paths(v, f"{prefix}/{k}")]
  if isinstance(x, list):
    return [p for i, v in enumerate(x) for p in nonfinite_paths(v, f"{prefix}[{i}]")]
  if isinstance(x, float) and not math.isfinite(x):
    return [prefix or "/"]
  return []


def write_numbers(ctx: FigureContext, name: str, numbers: dict) -> Path:
  """Writes ``<name>.json`` (every number the figure plotted); refuses NaN/inf.

  A number a figure cannot measure is written as null, never as NaN, so a NaN in the file
  always means a computation went wrong.
  """
  plain = _to_plain(numbers)
  bad = nonfinite_paths(plain)
  if bad:
    raise ValueError(
        f"{name}: non-finite numbers at {bad[:5]}; a figure must not plot them "
        "(write None where a value is missing)."
    )
  path = ctx.path(f"{name}.json")
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(plain, indent=1))
  os.replace(tmp, path)
  return path
