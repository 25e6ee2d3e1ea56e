"""Fig. 6: norm growth over a learning-rate x weight-decay grid of AdamW runs.

The paper trains its small LM for one epoch of WikiText-2 with AdamW at every cell of
lr x wd = logspace(-5, -1, 20) each and plots whether the encoder norm grew or shrank. Its
statements: growth depends on the weight decay, with a threshold between 1e-3 and 1e-2, and
PyTorch's defaults (lr 1e-3, wd 1e-2) still grow.

Here the whole grid (plus PyTorch's default cell, when it is not on the grid) is trained as one
compiled program (:mod:`normgrowth_jax.grid`: cells one after another in ``lax.map`` on a
CPU, vmapped on an accelerator): every cell starts from the same initialisation
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
from typing import Optional, Sequence

import numpy as np

from normgrowth_jax import grid
from normgrowth_jax.figures import core, fig6_plot, grid_runs, paper, small_lm_runs
from normgrowth_jax.figures import verdict as verdict_lib
from normgrowth_jax.figures.grid_runs import DEFAULT_LR, DEFAULT_WD, describe, lrs, wds
from normgrowth_jax.figures.verdict import check

NAME = "fig6"
TITLE = "Norm growth over a learning-rate x weight-decay grid (AdamW)"


@dataclasses.dataclass(frozen=True)
class Fig6Config:
  """One profile of Fig. 6.

  Attributes:
    n_lr, n_wd: grid points, log-spaced over ``lr_range`` / ``wd_range``.
    corpora: word-level corpora in order of preference; the first prepared one is used.
    steps: training steps (the token budget standing for the epoch); None = one epoch.
    batch_size, max_len, vocab_words: the data (``word_lm``).
    arch, norm: the SmallLM's size and its residual/norm arrangement.
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
  arch: small_lm_runs.Architecture = small_lm_runs.Architecture()
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
    >>> (o.norm, o.dropout, o.attention_mask, o.attend_across, o.arch.d_ff, o.original)
    ('postnorm', 0.1, 'none', 'batch', 16, None)
  """
  return dataclasses.replace(
      cfg,
      arch=dataclasses.replace(cfg.arch, d_ff=d_ff),
      norm="postnorm",
      activation="relu",
      dropout=0.1,
      attention_mask="none",
      attend_across="batch",
      original=None,
  )


_QUICK = Fig6Config(
    n_lr=7,
    n_wd=7,
    corpora=("bbc",),
    steps=256,
    max_len=40,
    vocab_words=2000,
    arch=small_lm_runs.Architecture(num_layers=2, d_model=64, d_ff=64, num_heads=4),
    track_every=4,
    chunk_cells=None,
    block_steps=32,
)


CONFIGS = {
    "smoke": Fig6Config(
        n_lr=2,
        n_wd=2,
        corpora=("botchan",),
        steps=8,
        max_len=24,
        vocab_words=500,
        chunk_cells=None,
        block_steps=4,
        arch=small_lm_runs.Architecture(num_layers=1, d_model=16, d_ff=16, num_heads=2),
    ),
    # The original setting at our FF width (PyTorch's 2048 would be 32 x d_model here).
    "quick": dataclasses.replace(_QUICK, original=original_setting(_QUICK, d_ff=_QUICK.arch.d_ff)),
    # The paper's size, grid and epoch; beside it the original script's own model (FF 2048).
    "full": dataclasses.replace(Fig6Config(), original=original_setting(Fig6Config())),
}


def work(cfg: Fig6Config) -> int:
  """Training steps of all chunks (an epoch is estimated when the data is not loaded)."""
  return grid_runs.training_steps(cfg)


def _log_median(values: Sequence[float]) -> float:
  """Median of positive numbers in log space (the lower middle value for an even count)."""
  v = np.sort(np.asarray(values, np.float64))
  return float(v[(len(v) - 1) // 2])


def judge(
    default_ratio: Optional[float],
    ths: Sequence[grid.Threshold],
    wd_values: Sequence[float],
    paper_range: tuple = paper.FIG6["wd_threshold"],
) -> list:
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
  live = [t for t in ths if t.kind != "diverged"]
  crossing = [t for t in live if t.kind == "crossing"]
  return [
      _default_grows(default_ratio),
      _median_threshold(live, wd_values, paper_range),
      _depends_on_weight_decay(live, crossing),
      _set_by_weight_decay(crossing),
  ]


def _default_grows(default_ratio: Optional[float]):
  return check(
      "the norm grows at PyTorch's defaults (lr 1e-3, wd 1e-2)",
      None if default_ratio is None else default_ratio > 1.0,
      ours=None if default_ratio is None else f"ratio {default_ratio:.4f}",
      paper="grows",
  )


def _median_threshold(live, wd_values, paper_range):
  """The median over learning rates of the threshold weight decay, in the paper's interval."""
  lo, hi = paper_range
  bounds = [t.bound(wd_values) for t in live if t.kind != "inverted"]
  if not bounds:
    return check(
        f"median threshold weight decay in [{lo:g}, {hi:g}]",
        None,
        ours="no learning rate without divergence",
        paper=f"{lo:g}..{hi:g}",
    )
  med = _log_median(bounds)
  if med > max(wd_values):
    shown = f"> {max(wd_values):.0e} (grows throughout)"
  elif med < min(wd_values):
    shown = f"< {min(wd_values):.0e} (shrinks throughout)"
  else:
    shown = f"{med:.2e}"
  return check(
      f"median over learning rates of the threshold weight decay in [{lo:g}, {hi:g}]",
      lo <= med <= hi,
      ours=shown,
      paper=f"between {lo:g} and {hi:g}",
  )


def _depends_on_weight_decay(live, crossing):
  return check(
      "growth depends on weight decay: at >= half of the learning rates the norm "
      "grows below a weight decay inside the grid and shrinks above it",
      (2 * len(crossing) >= len(live)) if live else None,
      ours=f"{len(crossing)} of {len(live)} learning rates",
      paper="threshold at every learning rate (the figure)",
  )


def _set_by_weight_decay(crossing):
  """Every threshold inside the grid within one decade of their median (>= 2 of them)."""
  if len(crossing) < 2:
    return check(
        "the threshold is set by weight decay: thresholds within one decade",
        None,
        ours=f"{len(crossing)} threshold(s) inside the grid",
        paper="a horizontal boundary",
    )
  logs = np.log10([t.wd for t in crossing])
  spread = float(np.max(np.abs(logs - np.log10(_log_median([t.wd for t in crossing])))))
  return check(
      "the threshold is set by weight decay, not by the learning rate: every "
      "threshold within one decade of their median",
      spread <= 1.0,
      ours=f"max distance {spread:.2f} decades over {len(crossing)} lrs",
      paper="a horizontal boundary",
  )


def _fmt_wd(t: grid.Threshold, wd_values) -> str:
  if t.kind == "crossing":
    return f"{t.wd:.2e}" + (f" ({t.sign_changes} sign changes)" if t.sign_changes > 1 else "")
  if t.kind == "grows throughout":
    return f"> {max(wd_values):.0e} (grows at every wd)"
  if t.kind == "shrinks throughout":
    return f"< {min(wd_values):.0e} (shrinks at every wd)"
  return t.kind


def _setting(ctx: core.FigureContext, cfg: Fig6Config, label: str) -> dict:
  """Trains (or loads) one setting's grid and evaluates it."""
  result, info = grid_runs.train_grid(ctx, cfg)
  y = wds(cfg)
  ths = grid.thresholds(result, lrs(cfg), y)
  k = grid.find_cell(result.lr, result.wd, DEFAULT_LR, DEFAULT_WD)
  ratio = None if result.diverged[k] else float(result.ratio[k])
  criteria = judge(ratio, ths, y)
  return {
      "label": label,
      "cfg": cfg,
      "result": result,
      "info": info,
      "ths": ths,
      "mats": grid_runs.matrices(result, lrs(cfg), y),
      "default_ratio": ratio,
      "default_delta": None if result.diverged[k] else float(result.delta_norm[k]),
      "criteria": criteria,
      "verdict": verdict_lib.verdict(criteria),
  }


def _numbers(st: dict) -> dict:
  """One setting's numbers for fig6.json."""
  cfg, result, mats = st["cfg"], st["result"], st["mats"]
  x, y = lrs(cfg), wds(cfg)
  none_nan = lambda m: [[None if not np.isfinite(v) else float(v) for v in r] for r in m]
  traj = {}
  for b in list(y) + [DEFAULT_WD]:
    c = grid.find_cell(result.lr, result.wd, DEFAULT_LR, b)
    if c is not None and not result.diverged[c]:
      traj[f"{b:.6g}"] = {
          "step": result.traces[c]["step"],
          "ratio": result.traces[c]["param_norm"] / result.norm_init[c],
      }
  return {
      "lr": x,
      "wd": y,
      "rows": "weight decay",
      "columns": "learning rate",
      "norm_init": float(result.norm_init[0]),
      "delta_norm": none_nan(mats["delta"]),
      "ratio": none_nan(mats["ratio"]),
      "final_loss": none_nan(mats["loss"]),
      "diverged": mats["diverged"].tolist(),
      "default_cell": {
          "lr": DEFAULT_LR,
          "wd": DEFAULT_WD,
          "ratio": st["default_ratio"],
          "delta_norm": st["default_delta"],
      },
      "thresholds": [
          {"lr": t.lr, "wd": t.wd, "kind": t.kind, "sign_changes": t.sign_changes}
          for t in st["ths"]
      ],
      "trajectories_at_lr_1e-3": traj,
      "run": {k2: v for k2, v in st["info"].items() if k2 not in ("dir", "train_stats")},
  }


def _rows(st: dict, prefix: str = "") -> list:
  """The report's rows for one setting (``prefix`` names a setting other than ours)."""
  lo, hi = paper.FIG6["wd_threshold"]
  result = st["result"]
  rows = [
      core.Row(
          f"{prefix}PyTorch defaults (lr 1e-3, wd 1e-2): ||θ_T|| / ||θ_0||",
          "> 1 (grows)",
          st["default_ratio"],
      ),
      core.Row(f"{prefix}PyTorch defaults: ||θ_T|| − ||θ_0||", "> 0", st["default_delta"]),
  ]
  for t in st["ths"]:
    rows.append(
        core.Row(
            f"{prefix}threshold weight decay at lr {t.lr:.2g}",
            f"{lo:g}..{hi:g}",
            _fmt_wd(t, wds(st["cfg"])),
        )
    )
  finite = ~result.diverged
  rows.append(
      core.Row(
          f"{prefix}cells with growth / shrinkage / diverged",
          None,
          f"{int(np.sum(finite & (result.ratio > 1)))} / "
          f"{int(np.sum(finite & (result.ratio <= 1)))} / "
          f"{int(np.sum(result.diverged))} of {result.lr.size}",
      )
  )
  return rows


def _notes(st: dict, prefix: str = "") -> list:
  result, ths = st["result"], st["ths"]
  notes = [f"{prefix}||θ_0|| = {result.norm_init[0]:.3f} (every cell)"]
  multi = [t for t in ths if t.sign_changes > 1]
  if multi:
    notes.append(
        f"{prefix}sign changes more than once along weight decay at lr "
        + ", ".join(f"{t.lr:.2g}" for t in multi)
        + " (the first is reported)"
    )
  if np.any(result.diverged):
    notes.append(
        f"{prefix}{int(np.sum(result.diverged))} cell(s) diverged (NaN/inf), at lr "
        + ", ".join(sorted({f"{a:.2g}" for a in result.lr[result.diverged]}))
    )
  return notes


run_specs = core.no_runs  # the grid is trained by make() (one compiled program, cached)


def make(ctx: core.FigureContext, cfg: Fig6Config) -> core.FigureResult:
  """Fig. 6 for ``cfg``; with ``cfg.original`` also that setting's grid, drawn and judged beside
  ours (the figure's criteria and verdict are ours; the original's are rows and notes)."""
  ours = _setting(ctx, cfg, "ours" if cfg.original else "")
  settings = [ours]
  if cfg.original:
    settings.append(_setting(ctx, cfg.original, "original setting"))
  files = fig6_plot.plot(ctx.path(NAME), settings)
  numbers = _numbers(ours)
  numbers["paper"] = {
      "wd_threshold": paper.FIG6["wd_threshold"],
      "default_grows": True,
      "grid": paper.FIG6["grid"],
  }
  rows, notes = _rows(ours), _notes(ours)
  if cfg.original:
    orig = settings[1]
    numbers["original_setting"] = {
        **_numbers(orig),
        "setting": describe(orig["cfg"]),
        "verdict": orig["verdict"],
        "criteria": [c.to_json() for c in orig["criteria"]],
    }
    rows += _rows(orig, "original setting: ")
    passed = sum(c.passed is True for c in orig["criteria"])
    rows.append(
        core.Row(
            "verdict in the original setting (the same criteria)",
            None,
            f"{orig['verdict']} ({passed} of {len(orig['criteria'])} passed)",
        )
    )
    notes += _notes(orig, "original setting: ")
    notes += [
        f"original setting, criterion: {c.text}: "
        f"{ {True: 'passed', False: 'failed', None: 'not evaluated'}[c.passed]}"
        f" ({c.ours})"
        for c in orig["criteria"]
    ]
  files.append(core.write_numbers(ctx, NAME, numbers))
  return core.FigureResult(NAME, TITLE, files, rows, ours["criteria"], _setup(cfg, settings), notes)


def _setup(cfg: Fig6Config, settings: list[dict]) -> list[str]:
  """What the report says about the model, data, budget, grid and how each setting ran."""
  result, info, y = settings[0]["result"], settings[0]["info"], wds(cfg)
  decay = DEFAULT_LR * DEFAULT_WD * info["steps"]
  stats = info.get("train_stats", {})
  setup = [
      f"model: SmallLM {describe(cfg)}, {cfg.arch.num_layers} layers, d_model "
      f"{cfg.arch.d_model}, {cfg.arch.num_heads} heads"
      + (
          " (the paper's size)"
          if cfg.arch.is_paper_size
          else " (smaller than the paper's 12 x 768)"
      ),
      "post-norm because the original's Fig. 6 script (grid.py) trained PyTorch's "
      "nn.TransformerEncoderLayer (post-norm) by default; that script passed no attention mask "
      "and fed [batch, len, d] to an encoder expecting [len, batch, d] (PyTorch 1.9), and ran "
      "it in train mode (dropout 0.1): we train a correct causal LM without dropout"
      + (
          f"; beside it, the original setting: {describe(cfg.original)}, on the same data, "
          "grid, batches and init seed"
          if cfg.original
          else ""
      ),
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
        (f"{st['label']}: " if st["label"] else "")
        + f"trained as one compiled program ({run.get('chunks', 1)} chunk(s) of "
        f"{run.get('chunk_cells', st['result'].lr.size)} cells, cell axis on "
        f"{run.get('devices', 1)} device(s)), "
        + (
            "loaded from the run cache"
            if run.get("cached")
            else f"{run.get('wall_s', 0):.0f} s including {run.get('compile_s', 0):.0f} s for "
            "compilation and the first block"
        )
    )
  return setup
