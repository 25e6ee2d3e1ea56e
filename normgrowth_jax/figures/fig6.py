"""Fig. 6: norm growth over a learning-rate x weight-decay grid of AdamW runs.

The paper trains its small LM for one epoch of WikiText-2 with AdamW at every cell of
lr x wd = logspace(-5, -1, 20) each and plots whether the encoder norm grew or shrank. Its
statements: growth depends on the weight decay, with a threshold between 1e-3 and 1e-2, and
PyTorch's defaults (lr 1e-3, wd 1e-2) still grow.

Here the whole grid (plus PyTorch's default cell, when it is not on the grid) is trained as one
vmapped program (:mod:`normgrowth_jax.grid`): every cell starts from the same initialisation
and sees the same batches; each has its own params, Adam state and norm trace. On a CPU the
program runs on one core unless JAX sees several host devices: ``XLA_FLAGS=
--xla_force_host_platform_device_count=2 python -m normgrowth_jax.figures fig6 ...`` shards the
cells over two cores (it also makes the embedded trainer of other figures data-parallel).
We draw

* heat maps of ||theta_T|| - ||theta_0|| and of ||theta_T|| / ||theta_0|| on log axes, with
  the zero contour (growth | shrinkage), a triangle at PyTorch's defaults, per learning rate
  the interpolated weight decay where growth turns to shrinkage, and the paper's 1e-3..1e-2;
* ||theta_t|| / ||theta_0|| along training at lr 1e-3 for every weight decay (the hook's
  per-cell traces).

The model: the paper's small LM in its post-norm variant LN(x + F(x)): the original's Fig. 6
script (``grid.py`` in viking-sudo-rm/norm-growth) trained ``--trans vaswani`` by default,
PyTorch's ``nn.TransformerEncoderLayer``, which is post-norm. Unlike that script we use a
causal mask over positions (it passed no mask at all) and dropout 0 (the paper's small-LM
setting; PyTorch's layer in train mode drops 0.1). ``Fig6Config.original`` (set in the quick
profile, see `original_setting`) trains the same grid beside ours in the original's setting:
no mask, dropout 0.1 at PyTorch's three sites, and attention across the batch (the script fed
[batch, len] to an encoder reading [len, batch]), each a switch of the config; the figure gets
a row of panels, the report rows and a verdict per setting.

Example (the criteria on synthetic thresholds):
  >>> from normgrowth_jax.grid import Threshold
  >>> wds = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
  >>> ths = [Threshold(lr, 4e-3, "crossing", 1) for lr in (1e-4, 1e-3, 1e-2)]
  >>> [c.passed for c in judge(1.05, ths, wds)]
  [True, True, True, True]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import jax
import numpy as np

from normgrowth_jax import causal_lm, grid
from normgrowth_jax.data import corpora, word_lm
from normgrowth_jax.figures import core, paper, plotting, runs
from normgrowth_jax.figures import verdict as verdict_lib
from normgrowth_jax.figures.verdict import check
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

NAME = "fig6"
TITLE = "Norm growth over a learning-rate x weight-decay grid (AdamW)"
FORMAT = 1  # bump when the cached grid files change meaning
DEFAULT_LR, DEFAULT_WD = paper.FIG6["pytorch_default"]["lr"], paper.FIG6["pytorch_default"]["wd"]
NORM_NAMES = {"postnorm": "post-norm LN(x + F(x))", "prenorm_paper": "pre-norm x + LN(F(x))",
              "preln": "pre-LN x + F(LN(x))"}


@dataclasses.dataclass(frozen=True)
class Fig6Config:
  """One profile of Fig. 6.

  Attributes:
    n_lr, n_wd: grid points, log-spaced over ``lr_range`` / ``wd_range``.
    corpora: word-level corpora in order of preference; the first prepared one is used.
    steps: training steps (the token budget standing for the epoch); None = one epoch.
    batch_size, max_len, vocab_words: the data (``word_lm``).
    num_layers, d_model, d_ff, num_heads, norm: the SmallLM.
    activation, attention_mask, attend_across: its `SmallLMConfig` switches (ours: ReLU, a
      causal mask, attention along each sentence).
    dropout: one rate at the three sites of PyTorch's ``nn.TransformerEncoderLayer`` (sublayer
      outputs, attention weights, the MLP's hidden layer); ours 0.
    original: the variant run beside this one (see `original_setting`), or None.
    init_seed, data_seed: the shared initialisation and the epoch's shuffle.
    track_every: the hook's recording period.
    chunk_cells: cells per compiled program (None: all; "auto": as many as fit).
    block_steps: steps per compiled scan block.
  """
  n_lr: int = 20
  n_wd: int = 20
  lr_range: tuple = (1e-5, 1e-1)
  wd_range: tuple = (1e-5, 1e-1)
  corpora: tuple = ("wikitext2", "bbc")
  steps: Optional[int] = None
  batch_size: int = 16
  max_len: int = 83
  vocab_words: int = 10_000
  num_layers: int = 12
  d_model: int = 768
  d_ff: int = 512
  num_heads: int = 12
  norm: str = "postnorm"
  activation: str = "relu"
  dropout: float = 0.0
  attention_mask: str = "causal"
  attend_across: str = "sequence"
  original: Optional["Fig6Config"] = None
  init_seed: int = 0
  data_seed: int = 0
  track_every: int = 1
  chunk_cells: object = "auto"
  block_steps: int = 16


def original_setting(cfg: Fig6Config, d_ff: int = 2048) -> Fig6Config:
  """cfg in the original Fig. 6 script's setting: PyTorch's ``nn.TransformerEncoderLayer``
  defaults (post-norm, ReLU, FF ``d_ff``: PyTorch's 2048, dropout 0.1), no attention mask, and
  attention across the batch (the [batch, len] tensor fed as [len, batch]).

  Example:
    >>> o = original_setting(CONFIGS["smoke"], d_ff=16)
    >>> (o.norm, o.dropout, o.attention_mask, o.attend_across, o.d_ff, o.original)
    ('postnorm', 0.1, 'none', 'batch', 16, None)
  """
  return dataclasses.replace(cfg, norm="postnorm", activation="relu", d_ff=d_ff, dropout=0.1,
                             attention_mask="none", attend_across="batch", original=None)


_QUICK = Fig6Config(n_lr=7, n_wd=7, corpora=("bbc",), steps=256, max_len=40, vocab_words=2000,
                    num_layers=2, d_model=64, d_ff=64, num_heads=4, track_every=4,
                    chunk_cells=None, block_steps=32)
CONFIGS = {
    "smoke": Fig6Config(n_lr=2, n_wd=2, corpora=("botchan",), steps=8, max_len=24,
                        vocab_words=500, num_layers=1, d_model=16, d_ff=16, num_heads=2,
                        chunk_cells=None, block_steps=4),
    # The original setting at our FF width (PyTorch's 2048 would be 32 x d_model here).
    "quick": dataclasses.replace(_QUICK, original=original_setting(_QUICK, d_ff=_QUICK.d_ff)),
    "full": Fig6Config(),
}


def lrs(cfg: Fig6Config) -> np.ndarray:
  return grid.log_grid(*cfg.lr_range, cfg.n_lr)


def wds(cfg: Fig6Config) -> np.ndarray:
  return grid.log_grid(*cfg.wd_range, cfg.n_wd)


def grid_cells(cfg: Fig6Config) -> tuple[np.ndarray, np.ndarray]:
  """The grid's cells, then PyTorch's default cell if the grid misses it."""
  return grid.cells(lrs(cfg), wds(cfg), extra=[(DEFAULT_LR, DEFAULT_WD)])


# ----------------------------------------------------------------------------- data

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
      f"prepare one, e.g. `{corpora.prepare_command(cfg.corpora[-1])}`.")


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


def work(cfg: Fig6Config) -> int:
  """Training steps of all chunks (an epoch is estimated when the data is not loaded)."""
  steps = cfg.steps
  if steps is None:
    try:
      data = word_lm.load(corpus(cfg), cfg.vocab_words, cfg.max_len)
      steps = epoch_steps(data, cfg)
    except Exception:  # pylint: disable=broad-except  (no data yet: make() will say so)
      steps = 1000
  n = grid_cells(cfg)[0].size
  chunks = math.ceil(n / cfg.chunk_cells) if isinstance(cfg.chunk_cells, int) else 1
  return steps * chunks


# ----------------------------------------------------------------------------- training

def model_for(cfg: Fig6Config, vocab_size: int) -> SmallLM:
  return SmallLM(SmallLMConfig(
      vocab_size=vocab_size, num_layers=cfg.num_layers, d_model=cfg.d_model, d_ff=cfg.d_ff,
      num_heads=cfg.num_heads, max_len=cfg.max_len, norm=cfg.norm, activation=cfg.activation,
      dropout=cfg.dropout, attention_dropout=cfg.dropout, activation_dropout=cfg.dropout,
      attention_mask=cfg.attention_mask, attend_across=cfg.attend_across))


# Fields added after FORMAT 1: they enter the cache key only when set, so runs cached before
# they existed stay valid.
_LATER_FIELDS = {f.name: f.default for f in dataclasses.fields(Fig6Config)
                 if f.name in ("activation", "dropout", "attention_mask", "attend_across",
                               "original")}


def _run_key(cfg: Fig6Config, name: str, data: word_lm.WordLMData) -> str:
  config = {k: v for k, v in dataclasses.asdict(dataclasses.replace(cfg, original=None)).items()
            if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
  key = {"format": FORMAT, "config": config, "corpus": name,
         "data": corpora.read_manifest(name).get("splits"), "vocab": len(data.vocab)}
  text = json.dumps(key, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


_ARRAYS = ("lr", "wd", "norm_init", "norm_final", "losses", "diverged_at")


def save_part(path: Path, part: grid.GridResult) -> None:
  """One chunk's results as .npz (the traces' step and param_norm columns, NaN-padded)."""
  rows = max(len(t["step"]) for t in part.traces)
  step = np.full((len(part.traces), rows), -1, np.int64)
  norm = np.full((len(part.traces), rows), np.nan)
  for i, t in enumerate(part.traces):
    step[i, :len(t["step"])] = t["step"]
    norm[i, :len(t["param_norm"])] = t["param_norm"]
  tmp = path.with_name(path.stem + ".tmp.npz")
  np.savez(tmp, trace_step=step, trace_norm=norm, wall_s=part.wall_s,
           compile_s=part.compile_s, chunk_cells=part.chunk_cells,
           **{k: getattr(part, k) for k in _ARRAYS})
  os.replace(tmp, path)


def load_part(path: Path) -> grid.GridResult:
  with np.load(path) as z:
    traces = []
    for s, v in zip(z["trace_step"], z["trace_norm"]):
      keep = s >= 0
      traces.append({"step": s[keep], "param_norm": v[keep]})
    return grid.GridResult(**{k: z[k] for k in _ARRAYS}, traces=traces,
                           wall_s=float(z["wall_s"]), compile_s=float(z["compile_s"]),
                           chunk_cells=int(z["chunk_cells"]))


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
  info = {"corpus": name, "steps": int(len(b)), "epoch_steps": epoch_steps(data, cfg),
          "tokens": int(np.sum(b[:, :, 1:] != word_lm.PAD_ID)),
          "train_stats": data.stats.get("train", {}), "cells": int(lr.size),
          "dir": str(directory)}
  done = runs.cached(ctx, directory, work(cfg), f"{NAME}: grid")
  parts = sorted(directory.glob("chunk_*.npz")) if directory.exists() else []
  if done is not None:
    info.update(done.get("run", {}), cached=True)
    return grid.concat_results([load_part(p) for p in parts]), info
  directory.mkdir(parents=True, exist_ok=True)
  model = model_for(cfg, data.num_ids)
  init_fn, loss_fn = causal_lm.loss_adapter(model)
  params = jax.jit(init_fn)(jax.random.PRNGKey(cfg.init_seed), {causal_lm.TOKENS: b[0]})
  trainer = grid.GridTrainer(loss_fn, track_every=cfg.track_every,
                             block_steps=cfg.block_steps)
  chunk = cfg.chunk_cells
  if chunk == "auto":
    chunk = trainer.cells_that_fit(params, b[:cfg.block_steps], max_cells=lr.size)
  size = lr.size if chunk is None else int(chunk)
  meta = directory / "chunking.json"
  finished_chunks = {}
  if meta.is_file() and json.loads(meta.read_text()).get("chunk_cells") == size:
    finished_chunks = {int(p.stem.split("_")[1]): load_part(p) for p in parts}
  else:
    for p in parts:
      p.unlink()
    meta.write_text(json.dumps({"chunk_cells": size}))
  ctx.advance(0, f"{NAME}: training {lr.size} cells, {len(b)} steps")
  result = trainer.run(params, lr, wd, b, chunk_cells=size,
                       progress=lambda n: ctx.advance(n, None),
                       on_chunk=lambda c, part: save_part(directory / f"chunk_{c:03d}.npz", part),
                       done_chunks=finished_chunks)
  run = {"wall_s": result.wall_s, "compile_s": result.compile_s, "chunk_cells": size,
         "chunks": math.ceil(lr.size / size), "devices": len(trainer.devices)}
  runs.mark_finished(ctx, directory, {"name": "fig6-grid", "wall_s": result.wall_s, "run": run})
  info.update(run, cached=False)
  return result, info


# ----------------------------------------------------------------------------- criteria

def _log_median(values: Sequence[float]) -> float:
  """Median of positive numbers in log space (the lower middle value for an even count)."""
  v = np.sort(np.asarray(values, np.float64))
  return float(v[(len(v) - 1) // 2])


def judge(default_ratio: Optional[float], ths: Sequence[grid.Threshold],
          wd_values: Sequence[float], paper_range: tuple = paper.FIG6["wd_threshold"]) -> list:
  """The paper's statements as criteria.

  Args:
    default_ratio: ||theta_T|| / ||theta_0|| at PyTorch's defaults (None if it diverged).
    ths: per learning rate, where growth turns to shrinkage along weight decay.
    wd_values: the grid's weight decays (for thresholds beyond its ends).
    paper_range: the paper's threshold interval (1e-3, 1e-2).

  Returns:
    Four criteria: the default cell grows; the median threshold over learning rates lies in
    the paper's interval; at least half of the (non-diverged) learning rates have a threshold
    inside the grid (growth below, shrinkage above: growth depends on weight decay); the
    thresholds that exist lie within one decade of each other's median (on weight decay, not on
    the learning rate), evaluated only with >= 2 of them.
  """
  lo, hi = paper_range
  out = [check("the norm grows at PyTorch's defaults (lr 1e-3, wd 1e-2)",
               None if default_ratio is None else default_ratio > 1.0,
               ours=None if default_ratio is None else f"ratio {default_ratio:.4f}",
               paper="grows")]
  live = [t for t in ths if t.kind != "diverged"]
  bounds = [t.bound(wd_values) for t in live if t.kind != "inverted"]
  if bounds:
    med = _log_median(bounds)
    shown = f"{med:.2e}" if min(wd_values) <= med <= max(wd_values) else (
        f"> {max(wd_values):.0e} (grows throughout)" if med > max(wd_values) else
        f"< {min(wd_values):.0e} (shrinks throughout)")
    out.append(check(f"median over learning rates of the threshold weight decay in "
                     f"[{lo:g}, {hi:g}]", lo <= med <= hi, ours=shown,
                     paper=f"between {lo:g} and {hi:g}"))
  else:
    out.append(check(f"median threshold weight decay in [{lo:g}, {hi:g}]", None,
                     ours="no learning rate without divergence", paper=f"{lo:g}..{hi:g}"))
  crossing = [t for t in live if t.kind == "crossing"]
  out.append(check("growth depends on weight decay: at >= half of the learning rates the norm "
                   "grows below a weight decay inside the grid and shrinks above it",
                   (2 * len(crossing) >= len(live)) if live else None,
                   ours=f"{len(crossing)} of {len(live)} learning rates",
                   paper="threshold at every learning rate (the figure)"))
  if len(crossing) >= 2:
    logs = np.log10([t.wd for t in crossing])
    spread = float(np.max(np.abs(logs - np.log10(_log_median([t.wd for t in crossing])))))
    out.append(check("the threshold is set by weight decay, not by the learning rate: every "
                     "threshold within one decade of their median", spread <= 1.0,
                     ours=f"max distance {spread:.2f} decades over {len(crossing)} lrs",
                     paper="a horizontal boundary"))
  else:
    out.append(check("the threshold is set by weight decay: thresholds within one decade",
                     None, ours=f"{len(crossing)} threshold(s) inside the grid",
                     paper="a horizontal boundary"))
  return out


# ----------------------------------------------------------------------------- plotting

def _edges(values: np.ndarray) -> np.ndarray:
  """Cell edges on a log axis: geometric midpoints, extended by half a step at the ends."""
  x = np.log10(values)
  step = np.diff(x).mean() if len(x) > 1 else 1.0
  mids = (x[1:] + x[:-1]) / 2
  return 10.0 ** np.concatenate([[x[0] - step / 2], mids, [x[-1] + step / 2]])


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


def _heat(ax, fig, x, y, z, diverged, kind, ths, label):
  from matplotlib import colors  # pylint: disable=g-import-not-at-top
  finite = z[np.isfinite(z)]
  if kind == "delta":
    m = float(np.max(np.abs(finite))) if finite.size else 1.0
    m = m or 1.0
    lin = max(m * 1e-3, float(np.min(np.abs(finite[finite != 0]))) if np.any(finite) else m)
    norm = colors.SymLogNorm(linthresh=min(lin, m / 10), vmin=-m, vmax=m, base=10)
  else:
    lo = float(np.min(finite)) if finite.size else 0.5
    hi = float(np.max(finite)) if finite.size else 2.0
    r = max(abs(math.log10(lo)), abs(math.log10(hi)), 1e-4)
    norm = colors.LogNorm(vmin=10 ** -r, vmax=10 ** r)
  mesh = ax.pcolormesh(_edges(x), _edges(y), np.ma.masked_invalid(z), cmap="RdBu_r", norm=norm,
                       shading="flat")
  bar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.03)
  bar.set_label(label)
  bar.ax.tick_params(labelsize=5.5)
  if np.any(diverged):
    gx, gy = np.meshgrid(x, y)
    ax.plot(gx[diverged], gy[diverged], "x", color="0.3", markersize=4, label="diverged (NaN)")
  sign = np.where(np.isfinite(z), np.sign(z if kind == "delta" else np.log(z)), np.nan)
  if len(x) > 1 and len(y) > 1 and np.nanmin(sign) < 0 < np.nanmax(sign):
    ax.contour(x, y, np.ma.masked_invalid(z if kind == "delta" else np.log(z)), levels=[0.0],
               colors="k", linewidths=1.0)
  ax.plot([], [], "k-", linewidth=1.0, label="zero contour (growth | shrinkage)")
  lo, hi = paper.FIG6["wd_threshold"]
  for k, level in enumerate((lo, hi)):
    ax.axhline(level, color="0.15", linestyle=(0, (4, 2)), linewidth=0.8,
               label=f"paper's threshold lies between {lo:g} and {hi:g}" if k == 0 else None)
  tx = [t.lr for t in ths if t.kind == "crossing"]
  ty = [t.wd for t in ths if t.kind == "crossing"]
  ax.plot(tx, ty, "o", markerfacecolor="w", markeredgecolor="k", markersize=3.5,
          label="threshold per lr (interpolated)")
  ax.plot([DEFAULT_LR], [DEFAULT_WD], "^", color="gold", markeredgecolor="k", markersize=6,
          label="PyTorch defaults (1e-3, 1e-2)")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("learning rate η")
  ax.set_ylabel("weight decay λ")


def _plot_row(fig, axes, st):
  """One setting's three panels: delta and ratio heat maps, trajectories at lr 1e-3."""
  cfg, result, mats, ths = st["cfg"], st["result"], st["mats"], st["ths"]
  x, y = lrs(cfg), wds(cfg)
  head = f"{st['label']} ({st['verdict']}): " if st["label"] else ""
  _heat(axes[0], fig, x, y, mats["delta"], mats["diverged"], "delta", ths,
        "||θ_T|| − ||θ_0||")
  axes[0].set_title(head + "change of the encoder norm")
  _heat(axes[1], fig, x, y, mats["ratio"], mats["diverged"], "ratio", ths,
        "||θ_T|| / ||θ_0|| (log scale)")
  axes[1].set_title("ratio ||θ_T|| / ||θ_0||")
  ax = axes[2]
  from matplotlib import cm, colors  # pylint: disable=g-import-not-at-top
  cnorm = colors.LogNorm(vmin=min(y), vmax=max(y))
  for b in y:
    k = grid.find_cell(result.lr, result.wd, DEFAULT_LR, b)
    if k is None:
      continue
    tr = result.traces[k]
    ax.plot(np.concatenate([[0], tr["step"]]),
            np.concatenate([[1.0], tr["param_norm"] / result.norm_init[k]]),
            color=cm.viridis(cnorm(b)), linewidth=0.8)
  k = grid.find_cell(result.lr, result.wd, DEFAULT_LR, DEFAULT_WD)
  tr = result.traces[k]
  ax.plot(np.concatenate([[0], tr["step"]]),
          np.concatenate([[1.0], tr["param_norm"] / result.norm_init[k]]), "k--",
          linewidth=1.2, label="PyTorch defaults (wd 1e-2)")
  ax.axhline(1.0, color="0.5", linewidth=0.6)
  sm = cm.ScalarMappable(norm=cnorm, cmap="viridis")
  bar = fig.colorbar(sm, ax=ax, fraction=0.05, pad=0.03)
  bar.set_label("weight decay λ")
  bar.ax.tick_params(labelsize=5.5)
  ax.set_xlabel("training step")
  ax.set_ylabel("||θ_t|| / ||θ_0||")
  ax.set_title(f"trajectories at lr {DEFAULT_LR:g} (hook, per cell)")


def _plot(ctx, settings):
  """One row of panels per setting (ours first)."""
  fig, axes = plotting.new_figure(len(settings), 3, height_per_row=2.3)
  axes = np.asarray(axes).reshape(len(settings), 3)
  for row, st in zip(axes, settings):
    _plot_row(fig, row, st)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  more, more_labels = axes[0, 2].get_legend_handles_labels()
  fig.legend(handles + more, labels + [f"right: {m}" for m in more_labels], loc="upper center",
             ncol=3, bbox_to_anchor=(0.5, -0.01))
  cfg, info = settings[0]["cfg"], settings[0]["info"]
  rows = "" if len(settings) == 1 else "\n" + "\n".join(
      f"{st['label']}: {_describe(st['cfg'])}" for st in settings)
  fig.suptitle(
      f"{NORM_NAMES[cfg.norm]} small LM ({cfg.num_layers} layers, d_model {cfg.d_model}) on "
      f"{info['corpus']}, AdamW, {info['steps']} steps of {cfg.batch_size} sentences "
      f"({info['steps'] / info['epoch_steps']:.2g} epoch); {len(lrs(cfg))} x {len(wds(cfg))} "
      "grid, one vmapped program" + rows, fontsize=7, y=1.03)
  fig.tight_layout()
  return plotting.save(fig, ctx.path(NAME))


# ----------------------------------------------------------------------------- the figure

def _fmt_wd(t: grid.Threshold, wd_values) -> str:
  if t.kind == "crossing":
    return f"{t.wd:.2e}" + (f" ({t.sign_changes} sign changes)" if t.sign_changes > 1 else "")
  if t.kind == "grows throughout":
    return f"> {max(wd_values):.0e} (grows at every wd)"
  if t.kind == "shrinks throughout":
    return f"< {min(wd_values):.0e} (shrinks at every wd)"
  return t.kind


def _describe(cfg: Fig6Config) -> str:
  """The model switches of a setting, in words.

  Example:
    >>> _describe(CONFIGS["quick"])
    'post-norm LN(x + F(x)), relu, FF 64, dropout 0, causal mask, attention along each sentence'
    >>> _describe(CONFIGS["quick"].original).split(", ")[3:5]
    ['dropout 0.1', 'no mask']
  """
  mask = {"causal": "causal mask", "none": "no mask",
          "original_leaky": "the original's leaky mask"}[cfg.attention_mask]
  across = ("attention along each sentence" if cfg.attend_across == "sequence" else
            "attention across the batch (the [batch, len] input read as [len, batch])")
  return (f"{NORM_NAMES[cfg.norm]}, {cfg.activation}, FF {cfg.d_ff}, dropout {cfg.dropout:g}, "
          f"{mask}, {across}")


def _setting(ctx: core.FigureContext, cfg: Fig6Config, label: str) -> dict:
  """Trains (or loads) one setting's grid and evaluates it."""
  result, info = train_grid(ctx, cfg)
  y = wds(cfg)
  ths = grid.thresholds(result, lrs(cfg), y)
  k = grid.find_cell(result.lr, result.wd, DEFAULT_LR, DEFAULT_WD)
  ratio = None if result.diverged[k] else float(result.ratio[k])
  criteria = judge(ratio, ths, y)
  return {"label": label, "cfg": cfg, "result": result, "info": info, "ths": ths,
          "mats": matrices(result, lrs(cfg), y), "default_ratio": ratio,
          "default_delta": None if result.diverged[k] else float(result.delta_norm[k]),
          "criteria": criteria, "verdict": verdict_lib.verdict(criteria)}


def _numbers(st: dict) -> dict:
  """One setting's numbers for fig6.json."""
  cfg, result, mats = st["cfg"], st["result"], st["mats"]
  x, y = lrs(cfg), wds(cfg)
  none_nan = lambda m: [[None if not np.isfinite(v) else float(v) for v in r] for r in m]
  traj = {}
  for b in list(y) + [DEFAULT_WD]:
    c = grid.find_cell(result.lr, result.wd, DEFAULT_LR, b)
    if c is not None and not result.diverged[c]:
      traj[f"{b:.6g}"] = {"step": result.traces[c]["step"],
                          "ratio": result.traces[c]["param_norm"] / result.norm_init[c]}
  return {
      "lr": x, "wd": y, "rows": "weight decay", "columns": "learning rate",
      "norm_init": float(result.norm_init[0]),
      "delta_norm": none_nan(mats["delta"]), "ratio": none_nan(mats["ratio"]),
      "final_loss": none_nan(mats["loss"]), "diverged": mats["diverged"].tolist(),
      "default_cell": {"lr": DEFAULT_LR, "wd": DEFAULT_WD, "ratio": st["default_ratio"],
                       "delta_norm": st["default_delta"]},
      "thresholds": [{"lr": t.lr, "wd": t.wd, "kind": t.kind, "sign_changes": t.sign_changes}
                     for t in st["ths"]],
      "trajectories_at_lr_1e-3": traj,
      "run": {k2: v for k2, v in st["info"].items() if k2 not in ("dir", "train_stats")},
  }


def _rows(st: dict, prefix: str = "") -> list:
  """The report's rows for one setting (``prefix`` names a setting other than ours)."""
  lo, hi = paper.FIG6["wd_threshold"]
  result = st["result"]
  rows = [core.Row(f"{prefix}PyTorch defaults (lr 1e-3, wd 1e-2): ||θ_T|| / ||θ_0||",
                   "> 1 (grows)", st["default_ratio"]),
          core.Row(f"{prefix}PyTorch defaults: ||θ_T|| − ||θ_0||", "> 0", st["default_delta"])]
  for t in st["ths"]:
    rows.append(core.Row(f"{prefix}threshold weight decay at lr {t.lr:.2g}", f"{lo:g}..{hi:g}",
                         _fmt_wd(t, wds(st["cfg"]))))
  finite = ~result.diverged
  rows.append(core.Row(f"{prefix}cells with growth / shrinkage / diverged", None,
                       f"{int(np.sum(finite & (result.ratio > 1)))} / "
                       f"{int(np.sum(finite & (result.ratio <= 1)))} / "
                       f"{int(np.sum(result.diverged))} of {result.lr.size}"))
  return rows


def _notes(st: dict, prefix: str = "") -> list:
  result, ths = st["result"], st["ths"]
  notes = [f"{prefix}||θ_0|| = {result.norm_init[0]:.3f} (every cell)"]
  multi = [t for t in ths if t.sign_changes > 1]
  if multi:
    notes.append(f"{prefix}sign changes more than once along weight decay at lr " +
                 ", ".join(f"{t.lr:.2g}" for t in multi) + " (the first is reported)")
  if np.any(result.diverged):
    notes.append(f"{prefix}{int(np.sum(result.diverged))} cell(s) diverged (NaN/inf), at lr " +
                 ", ".join(sorted({f'{a:.2g}' for a in result.lr[result.diverged]})))
  return notes


# The grid is one vmapped program, cached per chunk by this module, not a trainer run.
run_specs = core.no_runs


def make(ctx: core.FigureContext, cfg: Fig6Config) -> core.FigureResult:
  """Fig. 6 for ``cfg``; with ``cfg.original`` also that setting's grid, drawn and judged beside
  ours (the figure's criteria and verdict are ours; the original's are rows and notes)."""
  ours = _setting(ctx, cfg, "ours" if cfg.original else "")
  settings = [ours]
  if cfg.original:
    settings.append(_setting(ctx, cfg.original, "original setting"))
  files = _plot(ctx, settings)
  numbers = _numbers(ours)
  numbers["paper"] = {"wd_threshold": paper.FIG6["wd_threshold"], "default_grows": True,
                      "grid": paper.FIG6["grid"]}
  rows, notes = _rows(ours), _notes(ours)
  if cfg.original:
    orig = settings[1]
    numbers["original_setting"] = {
        **_numbers(orig), "setting": _describe(orig["cfg"]), "verdict": orig["verdict"],
        "criteria": [c.to_json() for c in orig["criteria"]]}
    rows += _rows(orig, "original setting: ")
    passed = sum(c.passed is True for c in orig["criteria"])
    rows.append(core.Row("verdict in the original setting (the same criteria)", None,
                         f"{orig['verdict']} ({passed} of {len(orig['criteria'])} passed)"))
    notes += _notes(orig, "original setting: ")
    notes += [f"original setting, criterion: {c.text}: "
              f"{ {True: 'passed', False: 'failed', None: 'not evaluated'}[c.passed]}"
              f" ({c.ours})" for c in orig["criteria"]]
  files.append(core.write_numbers(ctx, NAME, numbers))
  return core.FigureResult(NAME, TITLE, files, rows, ours["criteria"], _setup(cfg, settings),
                           notes)


def _setup(cfg: Fig6Config, settings: list[dict]) -> list[str]:
  """What the report says about the model, data, budget, grid and how each setting ran."""
  result, info, y = settings[0]["result"], settings[0]["info"], wds(cfg)
  decay = DEFAULT_LR * DEFAULT_WD * info["steps"]
  stats = info.get("train_stats", {})
  setup = [
      f"model: SmallLM {_describe(cfg)}, {cfg.num_layers} layers, d_model {cfg.d_model}, "
      f"{cfg.num_heads} heads" +
      (" (the paper's size)" if (cfg.num_layers, cfg.d_model) == (12, 768) else
       " (smaller than the paper's 12 x 768)"),
      "post-norm because the original's Fig. 6 script (grid.py) trained PyTorch's "
      "nn.TransformerEncoderLayer (post-norm) by default; that script passed no attention mask "
      "and fed [batch, len, d] to an encoder expecting [len, batch, d] (PyTorch 1.9), and ran "
      "it in train mode (dropout 0.1): we train a correct causal LM without dropout" +
      (f"; beside it, the original setting: {_describe(cfg.original)}, on the same data, "
       "grid, batches and init seed" if cfg.original else ""),
      f"data: {info['corpus']} word-level sentences (vocabulary {cfg.vocab_words} words, "
      f"padded length {cfg.max_len}, {stats.get('dropped_too_long', 0)} longer sentences "
      f"dropped), batch {cfg.batch_size}; the paper: WikiText-2",
      f"{info['steps']} steps = {info['tokens']:,} predicted tokens = "
      f"{info['steps'] / info['epoch_steps']:.3g} of an epoch ({info['epoch_steps']} steps); "
      "the paper: one epoch. Decoupled weight decay shrinks by exp(-lr wd t): at the defaults "
      f"lr wd T = {decay:.2g} here",
      f"grid: lr and wd = {len(lrs(cfg))} and {len(y)} points log-spaced over "
      f"{cfg.lr_range[0]:g}..{cfg.lr_range[1]:g} (the paper: 20 x 20)"
      + (", plus PyTorch's default cell" if result.lr.size > len(lrs(cfg)) * len(y) else ""),
      "every cell starts from the same initialisation and sees the same batches (the original: "
      "one process per cell, each with its own random init and shuffle)",
      "norm: the paper's (App. A): encoder parameters incl. LayerNorm, embeddings excluded; "
      "the original's grid.py measured all encoder parameters too",
  ]
  for st in settings:
    run = st["info"]
    setup.append(
        (f"{st['label']}: " if st["label"] else "") +
        f"trained as one vmapped program ({run.get('chunks', 1)} chunk(s) of "
        f"{run.get('chunk_cells', st['result'].lr.size)} cells, cell axis on "
        f"{run.get('devices', 1)} device(s)), " +
        ("loaded from the run cache" if run.get("cached") else
         f"{run.get('wall_s', 0):.0f} s including {run.get('compile_s', 0):.0f} s for "
         "compilation and the first block"))
  return setup
