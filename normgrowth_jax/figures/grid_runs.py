"""Fig. 6's grid run: its cells, data, model and cache (see :mod:`fig6` for the figure).

A Fig. 6 config (``fig6.Fig6Config``) describes one lr x wd grid of the small LM trained with
AdamW; here is everything that turns it into a trained ``grid.GridResult``: the log-spaced
cells (plus PyTorch's default cell), the epoch's batches, the model, and the run cache entry
``<runs_root>/<profile>/fig6-grid-<hash>/`` (one ``chunk_<i>.npz`` per chunk of cells as it
finishes, ``figure_run.json`` once done). Benchmarks and experiments build on these names.

Example:
  >>> from normgrowth_jax.figures import fig6
  >>> lr, wd = grid_cells(fig6.CONFIGS["smoke"])
  >>> lr.size, (DEFAULT_LR, DEFAULT_WD) in set(zip(lr.tolist(), wd.tolist()))
  (5, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from normgrowth_jax import causal_lm, grid
from normgrowth_jax.data import corpora, word_lm
from normgrowth_jax.figures import core, paper, runs, small_lm_runs
from normgrowth_jax.models.small_lm import SmallLM

if TYPE_CHECKING:
  from normgrowth_jax.figures.fig6 import Fig6Config

FORMAT = 1  # bump when the cached grid files change meaning
DEFAULT_LR, DEFAULT_WD = paper.FIG6["pytorch_default"]["lr"], paper.FIG6["pytorch_default"]["wd"]
NORM_NAMES = {
    "postnorm": "post-norm LN(x + F(x))",
    "prenorm_paper": "pre-norm x + LN(F(x))",
    "preln": "pre-LN x + F(LN(x))",
}
# Config fields added after FORMAT 1: they enter the cache key only when set, so runs cached
# before they existed stay valid.
LATER_FIELDS = ("activation", "dropout", "attention_mask", "attend_across", "original")


def lrs(cfg: Fig6Config) -> np.ndarray:
  return grid.log_grid(*cfg.lr_range, cfg.n_lr)


def wds(cfg: Fig6Config) -> np.ndarray:
  return grid.log_grid(*cfg.wd_range, cfg.n_wd)


def grid_cells(cfg: Fig6Config) -> tuple[np.ndarray, np.ndarray]:
  """The grid's cells, then PyTorch's default cell if the grid misses it."""
  return grid.cells(lrs(cfg), wds(cfg), extra=[(DEFAULT_LR, DEFAULT_WD)])


def corpus(cfg: Fig6Config, root=None) -> str:
  """The first corpus of ``cfg.corpora`` that is prepared (raises naming the commands)."""
  for c in cfg.corpora:
    try:
      corpora.split_path(c, "train", root)
      return c
    except corpora.CorpusNotPreparedError:
      continue
  raise corpora.CorpusNotPreparedError(
      f"Fig. 6 needs one of the corpora {list(cfg.corpora)} under {corpora.data_root(root)}; "
      f"prepare one, e.g. `{corpora.prepare_command(cfg.corpora[-1])}`."
  )


def epoch_steps(data: word_lm.WordLMData, cfg: Fig6Config) -> int:
  return word_lm.steps_per_epoch(len(data.split("train")), cfg.batch_size)


def batches(data: word_lm.WordLMData, cfg: Fig6Config) -> np.ndarray:
  """[steps, batch, len]: the first ``steps`` batches of the shuffled epochs (one epoch if
  ``cfg.steps`` is None); the same for every cell."""
  tokens = data.split("train")
  steps = cfg.steps or epoch_steps(data, cfg)
  out, epoch = [], 0
  while sum(len(b) for b in out) < steps:
    out.append(word_lm.epoch_batches(tokens, cfg.batch_size, cfg.data_seed, epoch))
    epoch += 1
  return np.concatenate(out)[:steps]


def cell_steps(cfg: Fig6Config) -> int:
  """Training steps of one cell (an epoch is estimated when the data is not loaded)."""
  if cfg.steps is not None:
    return cfg.steps
  try:
    data = word_lm.load(corpus(cfg), cfg.vocab_words, cfg.max_len)
    return epoch_steps(data, cfg)
  except Exception:  # pylint: disable=broad-except  (no data yet: make() will say so)
    return 1000


def training_steps(cfg: Fig6Config) -> int:
  """Training steps of all chunks (an epoch is estimated when the data is not loaded)."""
  n = grid_cells(cfg)[0].size
  chunks = math.ceil(n / cfg.chunk_cells) if isinstance(cfg.chunk_cells, int) else 1
  return cell_steps(cfg) * chunks


def training_flops(cfg: Fig6Config, steps: int | None = None) -> float:
  """Model FLOPs of training one setting's grid: every cell, ``steps`` steps (default
  :func:`cell_steps`), each 6 x matmul parameters x tokens plus attention's score and
  value products (forward and backward: 12 x layers x length x d_model per token).

  Matmul parameters are the layers' attention (4 d^2) and MLP (2 d d_ff) weights and the
  output projection (d x vocab_words); the embedding lookup does no matmul.

  Example:
    >>> from normgrowth_jax.figures import fig6
    >>> f"{training_flops(fig6.CONFIGS['full'], steps=1) / 401:.3g}"  # one cell, one step
    '3.74e+11'
  """
  a = cfg.arch
  matmul_params = a.num_layers * (4 * a.d_model**2 + 2 * a.d_model * a.d_ff)
  matmul_params += a.d_model * cfg.vocab_words
  tokens = cfg.batch_size * cfg.max_len
  per_token = 6 * matmul_params + 12 * a.num_layers * cfg.max_len * a.d_model
  cells = grid_cells(cfg)[0].size
  return float(cells * (cell_steps(cfg) if steps is None else steps) * tokens * per_token)


def model_for(cfg: Fig6Config, vocab_size: int) -> SmallLM:
  return small_lm_runs.model(
      cfg.arch,
      vocab_size,
      cfg.max_len,
      norm=cfg.norm,
      activation=cfg.activation,
      dropout=cfg.dropout,
      attention_dropout=cfg.dropout,
      activation_dropout=cfg.dropout,
      attention_mask=cfg.attention_mask,
      attend_across=cfg.attend_across,
  )


def describe(cfg: Fig6Config) -> str:
  """The model switches of a setting, in words.

  Example:
    >>> from normgrowth_jax.figures.fig6 import CONFIGS
    >>> describe(CONFIGS["quick"])
    'post-norm LN(x + F(x)), relu, FF 64, dropout 0, causal mask, attention along each sentence'
    >>> describe(CONFIGS["quick"].original).split(", ")[3:5]
    ['dropout 0.1', 'no mask']
  """
  mask = {
      "causal": "causal mask",
      "none": "no mask",
      "original_leaky": "the original's leaky mask",
  }[cfg.attention_mask]
  across = (
      "attention along each sentence"
      if cfg.attend_across == "sequence"
      else "attention across the batch (the [batch, len] input read as [len, batch])"
  )
  return (
      f"{NORM_NAMES[cfg.norm]}, {cfg.activation}, FF {cfg.arch.d_ff}, dropout {cfg.dropout:g}, "
      f"{mask}, {across}"
  )


def _run_key(cfg: Fig6Config, name: str, data: word_lm.WordLMData) -> str:
  later = {f.name: f.default for f in dataclasses.fields(cfg) if f.name in LATER_FIELDS}
  fields = dataclasses.asdict(dataclasses.replace(cfg, original=None))
  fields.update(fields.pop("arch"))  # the key of FORMAT 1 had the model's fields at the top
  config = {k: v for k, v in fields.items() if k not in later or v != later[k]}
  key = {
      "format": FORMAT,
      "config": config,
      "corpus": name,
      "data": corpora.read_manifest(name).get("splits"),
      "vocab": len(data.vocab),
  }
  text = json.dumps(key, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


_ARRAYS = ("lr", "wd", "norm_init", "norm_final", "losses", "diverged_at")


def save_part(path: Path, part: grid.GridResult) -> None:
  """One chunk's results as .npz (the traces' step and param_norm columns, NaN-padded)."""
  rows = max(len(t["step"]) for t in part.traces)
  step = np.full((len(part.traces), rows), -1, np.int64)
  norm = np.full((len(part.traces), rows), np.nan)
  for i, t in enumerate(part.traces):
    step[i, : len(t["step"])] = t["step"]
    norm[i, : len(t["param_norm"])] = t["param_norm"]
  tmp = path.with_name(path.stem + ".tmp.npz")
  np.savez(
      tmp,
      trace_step=step,
      trace_norm=norm,
      wall_s=part.wall_s,
      compile_s=part.compile_s,
      chunk_cells=part.chunk_cells,
      **{k: getattr(part, k) for k in _ARRAYS},
  )
  os.replace(tmp, path)


def load_part(path: Path) -> grid.GridResult:
  with np.load(path) as z:
    traces = []
    for s, v in zip(z["trace_step"], z["trace_norm"]):
      keep = s >= 0
      traces.append({"step": s[keep], "param_norm": v[keep]})
    return grid.GridResult(
        **{k: z[k] for k in _ARRAYS},
        traces=traces,
        wall_s=float(z["wall_s"]),
        compile_s=float(z["compile_s"]),
        chunk_cells=int(z["chunk_cells"]),
    )


def train_grid(ctx: core.FigureContext, cfg: Fig6Config) -> tuple[grid.GridResult, dict]:
  """Trains (or loads from the run cache) the grid; returns (result, info about the run).

  Cached under ``<runs_root>/<profile>/fig6-grid-<hash>/`` (hash of the config, the corpus
  and its checksums), one ``chunk_<i>.npz`` per chunk as it finishes (a killed run resumes
  at its first missing chunk) and ``figure_run.json`` once done; ``ctx.force`` retrains.
  """
  name = corpus(cfg)
  data = word_lm.load(name, cfg.vocab_words, cfg.max_len)
  b = batches(data, cfg)
  lr, wd = grid_cells(cfg)
  directory = ctx.runs_root / ctx.profile / f"fig6-grid-{_run_key(cfg, name, data)}"
  info = {
      "corpus": name,
      "steps": int(len(b)),
      "epoch_steps": epoch_steps(data, cfg),
      "tokens": int(np.sum(b[:, :, 1:] != word_lm.PAD_ID)),
      "train_stats": data.stats.get("train", {}),
      "cells": int(lr.size),
      "dir": str(directory),
  }
  done = runs.cached(ctx, directory, training_steps(cfg), "fig6: grid")
  parts = sorted(directory.glob("chunk_*.npz")) if directory.exists() else []
  if done is not None:
    info.update(done.get("run", {}), cached=True)
    return grid.concat_results([load_part(p) for p in parts]), info
  directory.mkdir(parents=True, exist_ok=True)
  model = model_for(cfg, data.num_ids)
  init_fn, loss_fn = causal_lm.loss_adapter(model)
  params = jax.jit(init_fn)(jax.random.PRNGKey(cfg.init_seed), {causal_lm.TOKENS: b[0]})
  trainer = grid.GridTrainer(loss_fn, track_every=cfg.track_every, block_steps=cfg.block_steps)
  chunk = cfg.chunk_cells
  if chunk == "auto":
    chunk = trainer.cells_that_fit(params, b[: cfg.block_steps], max_cells=lr.size)
  size = lr.size if chunk is None else int(chunk)
  finished_chunks = _finished_chunks(directory, parts, size)
  ctx.advance(0, f"fig6: training {lr.size} cells, {len(b)} steps")
  result = trainer.run(
      params,
      lr,
      wd,
      b,
      chunk_cells=size,
      progress=lambda n: ctx.advance(n, None),
      on_chunk=lambda c, part: save_part(directory / f"chunk_{c:03d}.npz", part),
      done_chunks=finished_chunks,
  )
  run = {
      "wall_s": result.wall_s,
      "compile_s": result.compile_s,
      "chunk_cells": size,
      "chunks": math.ceil(lr.size / size),
      "devices": len(trainer.devices),
  }
  runs.mark_finished(ctx, directory, {"name": "fig6-grid", "wall_s": result.wall_s, "run": run})
  info.update(run, cached=False)
  return result, info


def _finished_chunks(directory: Path, parts: list[Path], size: int) -> dict:
  """{chunk index: result} of a killed run's saved chunks when they were cut into chunks of
  ``size`` cells; otherwise they are deleted (they cannot be reused) and {} returned."""
  meta = directory / "chunking.json"
  if meta.is_file() and json.loads(meta.read_text()).get("chunk_cells") == size:
    return {int(p.stem.split("_")[1]): load_part(p) for p in parts}
  for p in parts:
    p.unlink()
  meta.write_text(json.dumps({"chunk_cells": size}))
  return {}


def matrices(result: grid.GridResult, lr_values, wd_values) -> dict:
  """[n_wd, n_lr] matrices (rows: weight decay, columns: learning rate) of the grid cells."""
  shape = (len(wd_values), len(lr_values))
  out = {k: np.full(shape, np.nan) for k in ("delta", "ratio", "loss")}
  out["diverged"] = np.zeros(shape, bool)
  tail = max(1, result.losses.shape[0] // 10)
  for i, a in enumerate(lr_values):
    for j, b in enumerate(wd_values):
      k = grid.find_cell(result.lr, result.wd, a, b)
      out["diverged"][j, i] = result.diverged[k]
      if not result.diverged[k]:
        out["delta"][j, i] = result.delta_norm[k]
        out["ratio"][j, i] = result.ratio[k]
        out["loss"][j, i] = np.mean(result.losses[-tail:, k])
  return out
