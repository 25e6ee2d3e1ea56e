"""A run read back from disk: its per-step trajectory and its checkpoint grid.

:func:`load` reads a run directory (the embedded trainer's, or T5X's) into a
:class:`Trajectory`: the hook's rows (``norms.jsonl``, else the checkpointed trace or
TensorBoard), the learning rate each update applied, and the checkpoint-to-checkpoint
quantities of Figs. 1 and 5 on a grid of checkpoints.

**The checkpoint grid** comes, in order of preference, from the hook's anchor rows (the row at
the end of each anchor interval carries the stable angle between the two grid points, globally
and per layer: ``anchor_angle``, ``anchor_angle/<g>``), from the run's saved checkpoints
(:func:`normgrowth_jax.analysis.checkpoint_trajectory`), or from the recorded norms alone. With
the recorded norms the anchor angles give every checkpoint-to-checkpoint quantity exactly, from
the identities (a, b grid points, phi their angle, s = sin^2(phi / 2)):

    ||theta_b - theta_a||^2 = (||theta_b|| - ||theta_a||)^2 + 4 ||theta_a|| ||theta_b|| s
    cos(theta_b - theta_a, theta_a) = (||theta_b|| - ||theta_a|| - 2 ||theta_b|| s)
                                      / ||theta_b - theta_a||

(no cancellation: phi comes from the orthogonal component, the norms are float32 to 1e-7).

**||theta_0||.** Rows start at step 1. The first row's update norm u and alignment alpha give
||theta_0|| exactly: ||theta_1||^2 = x^2 + 2 x u alpha + u^2, solved for x.

Example:
  >>> round(theta0_norm(n1=5.0, u=4.0, alpha=0.0), 6)  # theta_0 = (3, 0), delta_0 = (0, 4)
  3.0
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

LAYER_PREFIX = "param_norm/encoder/layers_"
LEARNING_RATE = "learning_rate"  # the hook's column (tracking.LEARNING_RATE)


def pair_from_norms(na, nb, angle):
  """(||theta_b||, ||theta_b - theta_a||, cos(theta_b - theta_a, theta_a)) from the two norms
  and the angle between theta_a and theta_b (see the module docstring); arrays broadcast.

  Example (theta_a = (3, 0), theta_b = (3, 4)):
    >>> nb, d, cos = pair_from_norms(3.0, 5.0, np.arccos(0.6))
    >>> round(float(nb), 6), round(float(d), 6), round(float(cos), 6)
    (5.0, 4.0, 0.0)
  """
  na, nb, angle = (np.asarray(x, np.float64) for x in (na, nb, angle))
  s = np.sin(angle / 2) ** 2
  d = np.sqrt((nb - na) ** 2 + 4 * na * nb * s)
  cos = np.where(d > 0, (nb - na - 2 * nb * s) / np.where(d > 0, d, 1.0), 0.0)
  return nb, d, cos


def theta0_norm(n1, u, alpha) -> float:
  """||theta_0|| from ||theta_1||, ||delta_0|| and cos(delta_0, theta_0) (row 1)."""
  n1, u, alpha = float(n1), float(u), float(alpha)
  return float(-u * alpha + np.sqrt(max(u * u * alpha * alpha - u * u + n1 * n1, 0.0)))


@dataclasses.dataclass
class Trajectory:
  """One run, per step and on its checkpoint grid (float64 NumPy).

  Per-step arrays [n] belong to the update that produced ``step`` (T5X's convention):
  ``param_norm`` ||theta_step||, ``update_norm`` ||delta||, ``alignment`` cos(delta, theta),
  ``learning_rate`` the rate that update applied (see :func:`read_learning_rate`; None when
  the run neither recorded nor logged it),
  ``layers`` {"encoder/layers_i": ||theta_step|| of that layer}. ``norm0`` is ||theta_0||
  (None if unknown), ``layers0`` the per-layer norms at step 0 (may be empty).

  ``grid``: ``step`` [m] and ``param_norm`` [m] at the grid points, ``layers`` {g: [m]}
  (NaN where unknown), and per consecutive pair [m - 1]: ``direction_angle``,
  ``direction_cos``, ``update_norm`` (||theta_b - theta_a||), ``alignment``
  (cos(theta_b - theta_a, theta_a)), ``layer_cos`` {g: [m - 1]}. ``grid_source`` says where
  they come from.
  """

  label: str
  source: str
  step: np.ndarray
  param_norm: np.ndarray
  update_norm: np.ndarray
  alignment: np.ndarray
  learning_rate: Optional[np.ndarray]
  layers: dict
  norm0: Optional[float]
  layers0: dict
  grid: dict
  grid_source: str
  every_step: bool  # rows at every step (sums over steps are exact)
  warmup_steps: Optional[int] = None

  @property
  def train_steps(self) -> int:
    return int(self.step[-1])

  def norm_before(self) -> np.ndarray:
    """||theta_t|| before each row's update (row s: ||theta_{s-1}||), NaN where unknown."""
    prev = np.full(self.param_norm.shape, np.nan)
    consecutive = np.diff(self.step) == 1
    prev[1:][consecutive] = self.param_norm[:-1][consecutive]
    if self.step[0] == 1 and self.norm0 is not None:
      prev[0] = self.norm0
    return prev


def _layer_names(columns: Sequence[str]) -> list[str]:
  names = [c[len("param_norm/") :] for c in columns if c.startswith(LAYER_PREFIX)]
  return sorted(names, key=lambda g: int(g.rsplit("_", 1)[1]))


def read_rows(model_dir) -> tuple[dict, str]:
  """Per-step rows of a run: the embedded trainer's norms.jsonl, else what
  :func:`normgrowth_jax.analysis.read_trajectory` finds (T5X: checkpoint trace, TensorBoard)."""
  from normgrowth_jax.analysis import trajectory  # pylint: disable=g-import-not-at-top

  path = os.path.join(model_dir, "norms.jsonl")
  if os.path.isfile(path):
    return trajectory.read_jsonl_trajectory(path), "norms.jsonl (every recorded step)"
  rows = trajectory.read_trajectory(str(model_dir))
  return rows, "the run's recorded trajectory (checkpoint trace or TensorBoard)"


def read_learning_rate(
    model_dir,
    steps: np.ndarray,
    rows: Optional[dict] = None,
    rsqrt_warmup_steps: Optional[int] = None,
) -> Optional[np.ndarray]:
  """The learning rate the updates of ``steps`` applied (float64), from the first source the
  run has; None if it has none.

  1. The hook's ``learning_rate`` column (of ``rows``, else :func:`read_rows`): what the run's
     optimizer applied, exact at the recorded steps (runs of ``optimizers.make_optimizer``).
  2. With ``rsqrt_warmup_steps``: :func:`rsqrt_learning_rate`, T5's schedule rebuilt in NumPy
     (the run used ``rsqrt_schedule(1.0, rsqrt_warmup_steps)``).
  3. What the run logged: metrics.jsonl, or a TensorBoard scalar named ``*learning_rate``.

  Between recorded or logged steps, log lr is interpolated in log step.

  Example (a run without any of them):
    >>> import tempfile
    >>> rows = {"step": np.array([1, 2])}
    >>> print(read_learning_rate(tempfile.mkdtemp(), np.array([1.0, 2.0]), rows))
    None
    >>> read_learning_rate("unused", np.array([1.0, 2.0]), rows, rsqrt_warmup_steps=4).tolist()
    [0.5, 0.5]
  """
  if rows is None:
    try:
      rows, _ = read_rows(model_dir)
    except (FileNotFoundError, ValueError):
      rows = {}
  recorded = _recorded_learning_rate(rows, steps)
  if recorded is not None:
    return recorded
  if rsqrt_warmup_steps:
    return rsqrt_learning_rate(steps, rsqrt_warmup_steps)
  return _logged_learning_rate(model_dir, steps)


def _recorded_learning_rate(rows: dict, steps) -> Optional[np.ndarray]:
  """The rows' ``learning_rate`` column at ``steps`` (exact at its steps), None without one."""
  if LEARNING_RATE not in rows:
    return None
  s = np.asarray(rows["step"], np.float64)
  lr = np.asarray(rows[LEARNING_RATE], np.float64)
  ok = np.isfinite(lr)
  if not ok.any():
    return None
  order = np.argsort(s[ok], kind="stable")
  s, lr = s[ok][order], lr[ok][order]
  steps = np.asarray(steps, np.float64)
  at = np.clip(np.searchsorted(s, steps), 0, len(s) - 1)
  return np.where(s[at] == steps, lr[at], _log_interp(s, lr, steps))


def _logged_learning_rate(model_dir, steps) -> Optional[np.ndarray]:
  """The learning rate at ``steps``, interpolated from what the run logged (metrics.jsonl,
  or a TensorBoard scalar named ``*learning_rate``); None if nothing."""
  from normgrowth_jax import sinks  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.analysis import trajectory  # pylint: disable=g-import-not-at-top

  s = lr = None
  path = os.path.join(model_dir, "metrics.jsonl")
  if os.path.isfile(path):
    rows = [r for r in sinks.read_jsonl(path) if r.get("learning_rate") is not None]
    if rows:
      s = np.asarray([r["step"] for r in rows], np.float64)
      lr = np.asarray([r["learning_rate"] for r in rows], np.float64)
  if s is None:
    try:
      tb = trajectory.read_tensorboard(str(model_dir), prefix="")
    except (FileNotFoundError, ValueError):
      return None
    keys = sorted(k for k in tb if k.endswith("learning_rate"))
    if not keys:
      return None
    ok = np.isfinite(tb[keys[0]])
    s, lr = tb["step"][ok].astype(np.float64), tb[keys[0]][ok]
  if len(s) == 0:
    return None
  return _log_interp(s, lr, steps)


def _log_interp(s, lr, steps) -> np.ndarray:
  """``lr`` given at the increasing steps ``s``, at ``steps``: log lr interpolated in log step
  (rsqrt is smooth past warm-up and constant before)."""
  return np.exp(np.interp(np.log(np.maximum(steps, 1.0)), np.log(np.maximum(s, 1.0)), np.log(lr)))


def _grid_from_anchor(rows: dict, layers: list, norm0, layers0: dict) -> Optional[dict]:
  if "anchor_angle" not in rows:
    return None
  step, a_step = rows["step"], rows["anchor_step"]
  # the last row of each anchor interval compares its end with the interval's start
  ends = [i for i in range(len(step)) if i == len(step) - 1 or a_step[i + 1] != a_step[i]]
  g_step = [0]
  norm = [norm0 if norm0 is not None else np.nan]
  lay = {g: [layers0.get(g, np.nan)] for g in layers}
  angle, lay_angle = [], {g: [] for g in layers}
  for i in ends:
    a = int(a_step[i])
    if a != g_step[-1]:
      return None  # a gap: the anchor interval is not a multiple of the recording period
    g_step.append(int(step[i]))
    norm.append(rows["param_norm"][i])
    angle.append(rows["anchor_angle"][i])
    for g in layers:
      lay[g].append(rows[f"param_norm/{g}"][i])
      lay_angle[g].append(rows.get(f"anchor_angle/{g}", np.full(len(step), np.nan))[i])
  norm = np.asarray(norm, np.float64)
  angle = np.asarray(angle, np.float64)
  _, d, cos = pair_from_norms(norm[:-1], norm[1:], angle)
  grid = {
      "step": np.asarray(g_step, np.int64),
      "param_norm": norm,
      "layers": {g: np.asarray(v, np.float64) for g, v in lay.items()},
      "direction_angle": angle,
      "direction_cos": np.cos(angle),
      "update_norm": d,
      "alignment": cos,
      "layer_cos": {g: np.cos(np.asarray(v, np.float64)) for g, v in lay_angle.items()},
  }
  return grid


def _grid_from_checkpoints(model_dir, layers: list) -> Optional[dict]:
  from normgrowth_jax.analysis import checkpoints  # pylint: disable=g-import-not-at-top

  try:
    refs = checkpoints.list_checkpoints(str(model_dir))
  except FileNotFoundError:
    return None
  if len(refs) < 2:
    return None
  ct = checkpoints.checkpoint_trajectory(str(model_dir), "paper", "layers")
  n = len(ct["step"])
  nan = np.full(n - 1, np.nan)
  return {
      "step": ct["step"],
      "param_norm": ct["param_norm"],
      "layers": {g: ct.get(f"param_norm/{g}", np.full(n, np.nan)) for g in layers},
      "direction_angle": ct["direction_angle"],
      "direction_cos": ct["direction_cos"],
      "update_norm": ct["update_norm"],
      "alignment": ct["alignment"],
      "layer_cos": {g: ct.get(f"direction_cos/{g}", nan) for g in layers},
  }


def _grid_from_rows(rows: dict, layers: list, norm0, layers0: dict, points: int) -> dict:
  """Only the norms at (up to) ``points`` equally spaced recorded steps; no pair quantities."""
  step = rows["step"]
  target = np.linspace(0, step[-1], points)
  idx = np.unique(np.searchsorted(step, target[1:]).clip(0, len(step) - 1))
  g_step = np.concatenate([[0], step[idx]]) if norm0 is not None else step[idx]
  norm = rows["param_norm"][idx]
  lay = {g: rows[f"param_norm/{g}"][idx] for g in layers}
  if norm0 is not None:
    norm = np.concatenate([[norm0], norm])
    lay = {g: np.concatenate([[layers0.get(g, np.nan)], v]) for g, v in lay.items()}
  nan = np.full(len(g_step) - 1, np.nan)
  return {
      "step": np.asarray(g_step, np.int64),
      "param_norm": norm,
      "layers": lay,
      "direction_angle": nan,
      "direction_cos": nan,
      "update_norm": nan,
      "alignment": nan,
      "layer_cos": {g: nan for g in layers},
  }


def _grid(
    model_dir, rows: dict, layers: list, norm0, layers0: dict, points: int
) -> tuple[dict, str]:
  """``(grid, where it comes from)``: the anchor rows, else the checkpoints, else the norms."""
  grid = _grid_from_anchor(rows, layers, norm0, layers0)
  if grid is not None:
    return grid, "the hook's anchor (exact checkpoint-to-checkpoint angles, global and per layer)"
  grid = _grid_from_checkpoints(model_dir, layers)
  if grid is not None:
    return grid, "the run's saved checkpoints (analysis.checkpoint_trajectory)"
  return (
      _grid_from_rows(rows, layers, norm0, layers0, points),
      "recorded norms only (no anchor rows, fewer than two checkpoints): "
      "no checkpoint-to-checkpoint angles",
  )


def rsqrt_learning_rate(steps, warmup_steps: int, base: float = 1.0) -> np.ndarray:
  """The rate T5's rsqrt schedule applied in the update that produced ``steps``:
  base / sqrt(max(step - 1, W)) (the schedule counts updates from 0)."""
  s = np.asarray(steps, np.float64)
  return base / np.sqrt(np.maximum(s - 1, warmup_steps))


def load(
    model_dir,
    label: Optional[str] = None,
    init_norms: Optional[dict] = None,
    warmup_steps: Optional[int] = None,
    grid_points: int = 104,
    exact_rsqrt: bool = False,
) -> Trajectory:
  """Reads a run directory (embedded trainer or T5X) into a :class:`Trajectory`.

  Args:
    model_dir: the run's MODEL_DIR.
    label: legend name (default: the directory's name).
    init_norms: the step-0 norms (``checkpoints.filtered_param_norms`` of the initial
      params) when known.
    warmup_steps: W of the rsqrt schedule, when known (for the plots' t / W axis).
    grid_points: grid size when neither anchor rows nor checkpoints give one.
    exact_rsqrt: the run used ``rsqrt_schedule(1.0, warmup_steps)`` (our runs): for runs
      recorded without the hook's ``learning_rate`` column, the rate from the schedule
      instead of interpolating the logged one (see :func:`read_learning_rate`).
  """
  model_dir = str(model_dir)
  rows, source = read_rows(model_dir)
  if "step" not in rows or len(rows["step"]) < 2:
    raise ValueError(f"{model_dir}: fewer than two recorded steps.")
  order = np.argsort(rows["step"], kind="stable")
  rows = {k: np.asarray(v)[order] for k, v in rows.items()}
  for k in ("update_norm", "alignment"):
    if k not in rows:
      rows[k] = np.full(len(rows["step"]), np.nan)
  layers = _layer_names(rows)
  norm0 = None
  if init_norms is not None:
    norm0 = float(init_norms["param_norm"])
  elif rows["step"][0] == 1 and np.isfinite(rows["update_norm"][0]):
    norm0 = theta0_norm(rows["param_norm"][0], rows["update_norm"][0], rows["alignment"][0])
  layers0 = {
      g: float(init_norms[f"param_norm/{g}"])
      for g in layers
      if init_norms and f"param_norm/{g}" in init_norms
  }
  grid, grid_source = _grid(model_dir, rows, layers, norm0, layers0, grid_points)
  step = rows["step"].astype(np.int64)
  return Trajectory(
      label=label or os.path.basename(os.path.normpath(model_dir)),
      source=source,
      step=step,
      param_norm=rows["param_norm"].astype(np.float64),
      update_norm=rows["update_norm"].astype(np.float64),
      alignment=rows["alignment"].astype(np.float64),
      learning_rate=read_learning_rate(
          model_dir, step.astype(np.float64), rows, warmup_steps if exact_rsqrt else None
      ),
      layers={g: rows[f"param_norm/{g}"].astype(np.float64) for g in layers},
      norm0=norm0,
      layers0=layers0,
      grid=grid,
      grid_source=grid_source,
      every_step=bool(np.all(np.diff(step) == 1)),
      warmup_steps=warmup_steps,
  )


def warmup_from_config(model_dir) -> Optional[int]:
  """WARMUP_STEPS (or T5X's rsqrt warmup) from the run's gin config, if it says."""
  import re  # pylint: disable=g-import-not-at-top

  for name in ("config.gin", "figure_config.gin", *glob.glob(os.path.join(model_dir, "*.gin"))):
    path = os.path.join(model_dir, name)
    if os.path.isfile(path):
      text = Path(path).read_text()
      m = re.search(r"^WARMUP_STEPS\s*=\s*(\d+)", text, re.M) or re.search(
          r"warmup_steps\s*=\s*(\d+)", text
      )
      if m:
        return int(m.group(1))
  return None
