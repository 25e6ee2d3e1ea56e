"""Why Adafactor's update ratio r stays below 1: Fig. 1's mechanism, tensor by tensor.

The paper's sqrt(t) law needs every update at ``r = ||delta|| / (lr ||theta||) = 1``, i.e. T5's
update clipping binding on every step; we measure ``||theta|| ~ t^(r^2/2)`` with r well below 1 in
most of our runs (Fig. 1). This figure (beyond the paper; ``make fig1-update-ratio``) trains T5
runs with :func:`adafactor_probe.adafactor_t5_probed` (the same updates, recorded per tensor) and
asks where r < 1 comes from. Per tensor and step, ``RMS(u)^2 = scale * shape``, where ``scale``
is the current mean squared gradient over Adafactor's running estimate of it and ``shape`` the
elementwise remainder (zero rows, factoring). The variants change one factor of the quick
model at a time: batch, depth, repeated data, width with factored or unfactored moments.
Panels: (a) RMS(u) over training; (b) its distribution past 4 W per variant with the hook's r;
(c) per tensor, RMS(u)^2 against scale; (d) the scale ratio past 4 W; (e) RMS(u) per tensor
kind; (f) the scale ratio over training.

Example (a variant's label and the kind of a tensor):
  >>> CONFIGS["quick"].variants[0].label
  'quick model (emb 32, 4+2, batch 4)'
  >>> tensor_kind("encoder/layers_0/attention/query/kernel"), tensor_kind("decoder/logits_dense/kernel")
  ('encoder attention q, k', 'embedding, logits')
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.stats

from normgrowth_jax import adafactor_probe
from normgrowth_jax.analysis import checkpoints as ckpts
from normgrowth_jax.analysis import run_reader
from normgrowth_jax.figures import core, plotting, runs, t5_runs
from normgrowth_jax.figures.verdict import check

NAME = "fig1_ratio"
TITLE = "Why Adafactor's update ratio r stays below 1: RMS(u) per tensor, scale and shape"
KINDS = ("encoder attention q, k", "encoder attention v, o", "encoder MLP",
         "decoder attention q, k", "decoder attention v, o", "decoder MLP",
         "layer-norm scales", "embedding, logits", "relative-position bias")


@dataclasses.dataclass(frozen=True)
class Variant:
  """One probed run family: ``run`` (model, data, W, seeds) and extra gin ``bindings``."""
  label: str
  run: t5_runs.T5RunConfig
  bindings: tuple = ()

  @property
  def slug(self) -> str:
    words = "".join(c if c.isalnum() else " " for c in self.label.split(" (")[0]).split()
    return "-".join(words)


@dataclasses.dataclass(frozen=True)
class Fig1RatioConfig:
  """``variants[0]`` is the reference the others change one factor of; ``late``: records past
  ``late`` W count as late (as Fig. 1's late r); ``every``: the probe's record period."""
  variants: tuple
  late: float = 4.0
  every: int = 1


def _quick_variants() -> tuple:
  base = dataclasses.replace(t5_runs.PROFILES["quick"], warmup_steps=100, seeds=(0,))
  two = dataclasses.replace(base, num_encoder_layers=2, num_decoder_layers=2)
  wide = dataclasses.replace(base, emb_dim=128, head_dim=32, mlp_dim=256)
  return (
      Variant("quick model (emb 32, 4+2, batch 4)", base),
      Variant("batch 16", dataclasses.replace(base, batch_size=16)),
      Variant("2+2 layers", two),
      Variant("2+2 layers, batch 64 (Fig. 1's clipped run)",
              dataclasses.replace(two, batch_size=64)),
      Variant("botchan (3.3 epochs, BBC 0.16)",
              dataclasses.replace(base, task="ng_span_corruption_botchan_bytes")),
      Variant("emb 128 (factored moments)", wide),
      Variant("emb 128, unfactored", wide,
              ("adafactor_probe.adafactor_t5_probed.min_dim_size_to_factor = 1000000",)),
  )


def _smoke_variants() -> tuple:
  base = t5_runs.PROFILES["smoke"]
  return (Variant("smoke model (emb 8, 2+1, batch 4)", base),
          Variant("batch 8", dataclasses.replace(base, batch_size=8)))


CONFIGS = {
    "smoke": Fig1RatioConfig(_smoke_variants(), late=1.0),
    "quick": Fig1RatioConfig(_quick_variants()),
    "full": Fig1RatioConfig((Variant("T5.1.1 base", t5_runs.PROFILES["full"]),), every=100),
}


def work(cfg: Fig1RatioConfig) -> int:
  del cfg  # its runs' training is counted from run_specs
  return 0


def tensor_kind(path: str) -> str:
  """Which of :data:`KINDS` a T5 parameter path belongs to."""
  if "embedding" in path and "rel" not in path or "logits_dense" in path:
    return "embedding, logits"
  if "relpos" in path:
    return "relative-position bias"
  if path.endswith("/scale"):
    return "layer-norm scales"
  side = "encoder" if path.startswith("encoder") else "decoder"
  if "mlp" in path:
    return f"{side} MLP"
  qk = "/query/" in path or "/key/" in path
  return f"{side} attention {'q, k' if qk else 'v, o'}"


# ----------------------------------------------------------------------------- runs

def _bindings(v: Variant, seed: int, every: int) -> list[str]:
  probe = "adafactor_probe.adafactor_t5_probed"
  return [*t5_runs.bindings(v.run, seed), f"OPTIMIZER = @{probe}",
          f"{probe}.history_size = {v.run.train_steps // every + 1}", f"{probe}.every = {every}",
          *v.bindings]


def _specs(v: Variant, every: int) -> list[runs.RunSpec]:
  t5_runs.prepare_corpora(v.run)
  return [runs.RunSpec(f"fig1-ratio-{v.slug}-seed{s}", (t5_runs.GIN_FILE,),
                       tuple(_bindings(v, s, every)), v.run.train_steps) for s in v.run.seeds]


def run_specs(ctx, cfg: Fig1RatioConfig) -> list[runs.RunSpec]:
  """Every variant's probed runs."""
  del ctx
  return [s for v in cfg.variants for s in _specs(v, cfg.every)]


def train(ctx: core.FigureContext, v: Variant, every: int = 1) -> list[Path]:
  """Trains (or reuses) the variant's runs, one per seed."""
  return runs.train_specs(ctx, _specs(v, every))


# ----------------------------------------------------------------------------- measurements

def _hook_ratio(model_dir: Path, cfg: t5_runs.T5RunConfig) -> tuple[np.ndarray, np.ndarray]:
  tr = run_reader.load(model_dir, warmup_steps=cfg.warmup_steps, exact_rsqrt=True,
                    init_norms=t5_runs.eval_norms(model_dir))
  return tr.step, t5_runs.assumption1_ratio(tr)


def _paper_weights(model_dir: Path) -> dict:
  """||theta_i||^2 at the last checkpoint of the tensors the hook's paper filter keeps."""
  params = ckpts.read_params(ckpts.list_checkpoints(str(model_dir))[-1], "paper")
  return {k: float(np.sum(np.square(np.asarray(x, np.float64)))) for k, x in params.items()}


def measure_run(model_dir: Path, v: Variant, late: float) -> dict:
  """Per tensor and late record: RMS(u), scale, shape; the hook's r and the probe's account of
  it (the paper-filter tensors' min(RMS(u), 1), RMS-weighted by ||theta_i||^2)."""
  ref = ckpts.list_checkpoints(str(model_dir))[-1]
  prefix = ("opt_state",)
  probe = adafactor_probe.read_probe(ckpts.read_state_tree(ref, prefix))
  is_late = probe.steps > late * v.run.warmup_steps
  step, r_hook = _hook_ratio(model_dir, v.run)
  weights = _paper_weights(model_dir)
  clipped = np.stack([np.minimum(probe.rms_u[k][is_late], 1.0) for k in weights])
  w = np.asarray(list(weights.values()))[:, None]
  r_probe = np.sqrt(np.sum(w * clipped ** 2, axis=0) / np.sum(w))
  tensors = {k: {"kind": tensor_kind(k), "factored": probe.factored[k],
                 "rms_u": probe.rms_u[k][is_late], "scale": probe.scale[k][is_late],
                 "zero_frac": probe.zero_frac[k][is_late]} for k in probe.rms_u}
  late_hook = step > late * v.run.warmup_steps
  return {"tensors": tensors, "steps": probe.steps,
          "rms_u_all": np.stack(list(probe.rms_u.values())),
          "scale_all": np.stack(list(probe.scale.values())),
          "r_hook": float(np.nanmean(r_hook[late_hook])), "r_probe": float(np.mean(r_probe))}


def summarise(m: dict) -> dict:
  """Late pooled statistics of one run (over every tensor and late record)."""
  t = m["tensors"].values()
  rms = np.concatenate([x["rms_u"] for x in t])
  scale = np.concatenate([x["scale"] for x in t])

  def median_where(keep):
    picked = [x["rms_u"] for x in t if keep(x)]
    return float(np.median(np.concatenate(picked))) if picked else None

  return {
      "r_hook": m["r_hook"], "r_probe": m["r_probe"],
      "clip_frac": float(np.mean(rms >= 1.0)),
      "rms_u": float(np.median(rms)), "rms_u_q10": float(np.quantile(rms, 0.1)),
      "rms_u_q90": float(np.quantile(rms, 0.9)),
      "scale": float(np.median(scale)), "scale_below_1": float(np.mean(scale < 1.0)),
      "scale_mean": float(np.mean(scale)),
      "shape": float(np.median(np.square(rms[scale > 0]) / scale[scale > 0])),
      "zero_gradient_frac": float(np.mean(scale == 0)),
      "encoder_rms_u": median_where(lambda x: x["kind"].startswith("encoder")),
      "decoder_rms_u": median_where(lambda x: x["kind"].startswith("decoder")),
      "factored_rms_u": median_where(lambda x: x["factored"]),
      "embedding_zero_frac": float(np.mean(np.concatenate(
          [x["zero_frac"] for x in t if x["kind"] == "embedding, logits"]))),
  }


def scale_explains(measures: list[dict]) -> float:
  """Spearman correlation, over every tensor of every run, of the late medians of scale and
  RMS(u)^2: near 1 when the gradient's size against its running estimate sets RMS(u)."""
  xs, ys = [], []
  for m in measures:
    for x in m["tensors"].values():
      xs.append(np.median(x["scale"]))
      ys.append(np.median(np.square(x["rms_u"])))
  return float(scipy.stats.spearmanr(xs, ys).statistic)


# ----------------------------------------------------------------------------- judge

def _by_label(cfg: Fig1RatioConfig, summaries: list[dict]) -> dict:
  return {v.label.split(" (")[0]: s for v, s in zip(cfg.variants, summaries)}


def judge(cfg: Fig1RatioConfig, measures: list[dict], summaries: list[dict]) -> list:
  """The findings as falsifiable statements (each None where its variants were not run)."""
  s = _by_label(cfg, summaries)
  out = [
      check("the probe accounts for the hook's r: late r from the per-tensor min(RMS(u), 1) "
            "(paper filter, weighted by ||θ_i||²) within 0.05 of the hook's, every run",
            all(abs(x["r_hook"] - x["r_probe"]) <= 0.05 for x in summaries),
            ", ".join(f"{x['r_probe']:.3f} vs {x['r_hook']:.3f}" for x in summaries), "—"),
      check("where r < 0.9 the gradient is smaller than Adafactor's estimate of it: median "
            "scale < 1 past 4 W in every such run",
            all(x["scale"] < 1 for x in summaries if x["r_hook"] < 0.9) if any(
                x["r_hook"] < 0.9 for x in summaries) else None,
            ", ".join(f"{x['scale']:.3f}" for x in summaries if x["r_hook"] < 0.9), "< 1"),
      check("scale, not shape, sets RMS(u): Spearman of per-tensor late medians of scale and "
            "RMS(u)² ≥ 0.8", scale_explains(measures) >= 0.8,
            f"{scale_explains(measures):.3f}", "≥ 0.8"),
  ]

  def rises(name, a, b, key="r_hook"):
    """``key`` of variant ``b`` above variant ``a``'s (not comparable if either was not run)."""
    if a not in s or b not in s:
      return check(name, None)
    return check(name, s[b][key] > s[a][key], f"{s[a][key]:.3f} vs {s[b][key]:.3f}",
                 "higher")

  base = cfg.variants[0].label.split(" (")[0]
  out += [
      rises("batch raises r: 4+2 layers, batch 16 above batch 4", base, "batch 16"),
      rises("batch raises r: 2+2 layers, batch 64 above batch 4", "2+2 layers", "2+2 layers, batch 64"),
      rises("batch raises the scale ratio: 2+2 layers, batch 64 above batch 4", "2+2 layers",
            "2+2 layers, batch 64", "scale"),
      rises("depth lowers r: 2+2 layers above 4+2 at batch 4", base, "2+2 layers"),
      rises("repeated data raises r: botchan (3.3 epochs) above BBC (0.16 epoch), batch 4",
            base, "botchan"),
      rises("factoring lowers RMS(u) at emb 128: unfactored above factored (median past 4 W)",
            "emb 128", "emb 128, unfactored", "rms_u"),
  ]
  return out


# ----------------------------------------------------------------------------- plot

def log_binned(steps: np.ndarray, values: np.ndarray, bins: int = 40) -> tuple:
  """(bin centres, median, 25%, 75%) of ``values`` [tensors, steps] over every tensor and step
  of each of ``bins`` log-spaced step bins (empty bins dropped).

  Example:
    >>> c, med, lo, hi = log_binned(np.arange(1, 101), np.ones((2, 100)), bins=4)
    >>> len(c), float(med[0])
    (4, 1.0)
  """
  edges = np.geomspace(max(steps[0], 1), steps[-1] + 1, bins + 1)
  idx = np.searchsorted(edges, np.maximum(steps, 1), side="right") - 1
  out = [(np.sqrt(edges[b] * edges[b + 1]), *np.quantile(values[:, idx == b], (0.5, 0.25, 0.75)))
         for b in range(bins) if np.any(idx == b)]
  return tuple(np.asarray(a) for a in zip(*out))


def _late_boxes(ax, cfg, measures, field, colors, marks=None):
  """Horizontal boxes (5-95%) of ``field`` over every tensor and late record, one per variant."""
  data = [np.concatenate([x[field] for x in m["tensors"].values()]) for m in measures]
  pos = np.arange(len(data))[::-1]
  box = ax.boxplot([np.maximum(d, 1e-6) for d in data], positions=pos, vert=False,
                   whis=(5, 95), showfliers=False, widths=0.6, patch_artist=True,
                   medianprops={"color": "k", "linewidth": 0.8})
  for patch, c in zip(box["boxes"], colors):
    patch.set(facecolor=c, alpha=0.45, linewidth=0.5)
  if marks is not None:
    ax.scatter(marks, pos, marker="D", s=10, color="k", zorder=3)
  ax.set_xscale("log")
  ax.set_yticks(pos, [v.label.split(" (")[0] for v in cfg.variants])
  ax.axvline(1.0, **plotting.PAPER_STYLE)
  ax.grid(axis="x", alpha=0.3, linewidth=0.5)


def _binned_over_training(ax, cfg, measures, field, colors, legend):
  """Per variant, the median of ``field`` over its tensors in log-spaced step bins; the 25-75%
  band for the reference and the clipped run."""
  for k, (v, m, col) in enumerate(zip(cfg.variants, measures, colors)):
    centre, med, lo, hi = log_binned(m["steps"], m[field])
    ax.plot(centre / v.run.warmup_steps, med, color=col, linewidth=0.9,
            label=v.label if legend else None)
    if k in (0, 3 if len(measures) > 3 else 0):  # the reference and the clipped run
      ax.fill_between(centre / v.run.warmup_steps, lo, hi, color=col, alpha=0.15, linewidth=0,
                      label="25-75% of tensor-steps" if (legend and k == 0) else None)


def _training_axes(ax, cfg):
  ax.set(xscale="log", yscale="log", xlabel="step t / W")
  ax.axvline(cfg.late, color="0.6", linewidth=0.5, linestyle=":")
  ax.grid(True)


def _rms_panel(ax, cfg, measures, colors):
  """(a) RMS(u) over training."""
  _binned_over_training(ax, cfg, measures, "rms_u_all", colors, legend=True)
  ax.axhline(1.0, **plotting.PAPER_STYLE, label="clipping binds above (paper: r = 1)")
  _training_axes(ax, cfg)
  ax.set(ylabel="RMS(u), median of tensor-steps", title="(a) RMS(u) over training")


def _scale_panel(ax, cfg, measures, colors):
  """(f) the scale ratio over training."""
  _binned_over_training(ax, cfg, measures, "scale_all", colors, legend=False)
  _training_axes(ax, cfg)
  ax.axhline(1.0, **plotting.PAPER_STYLE)
  ax.set(ylabel="scale, median of tensor-steps",
         title="(f) scale = mean g² / mean v̂ over training")


def _per_tensor_panel(ax, measures, colors):
  """(c) per tensor, the late medians of RMS(u)² against scale."""
  for m, col in zip(measures, colors):
    xs = [np.median(x["scale"]) for x in m["tensors"].values()]
    ys = [np.median(np.square(x["rms_u"])) for x in m["tensors"].values()]
    ax.scatter(xs, ys, s=4, color=col, alpha=0.7, linewidths=0)
  lo = min(min(np.median(x["scale"]) for x in m["tensors"].values()) for m in measures)
  span = np.geomspace(max(lo, 1e-6), 10, 10)
  ax.plot(span, span, **plotting.PAPER_STYLE, label="RMS(u)² = scale (shape 1)")
  ax.set(xscale="log", yscale="log", xlabel="scale, median past 4 W (per tensor)",
         ylabel="RMS(u)², median past 4 W", title="(c) per tensor: scale sets RMS(u)")
  ax.legend(loc="upper left", fontsize=5.5)
  ax.grid(True)


def _kind_panel(ax, cfg, measures, colors):
  """(e) the late median RMS(u) per tensor kind, one dot per variant."""
  offsets = np.linspace(-0.3, 0.3, len(measures))
  for m, col, off in zip(measures, colors, offsets):
    meds = [np.median(np.concatenate([x["rms_u"] for x in m["tensors"].values()
                                      if x["kind"] == k] or [np.full(1, np.nan)]))
            for k in KINDS]
    ax.scatter(meds, np.arange(len(KINDS))[::-1] + off, s=7, color=col, linewidths=0)
  ax.set_yticks(np.arange(len(KINDS))[::-1], KINDS)
  ax.axvline(1.0, **plotting.PAPER_STYLE)
  ax.set(xscale="log", xlabel=f"RMS(u), median past {cfg.late:g} W", title="(e) by tensor kind")
  ax.grid(axis="x", alpha=0.3, linewidth=0.5)


def _plot(ctx: core.FigureContext, cfg: Fig1RatioConfig, measures: list[dict]) -> list:
  fig, axes = plotting.new_figure(2, 3, height_per_row=2.3)
  (a, b, c), (d, e, f) = axes
  colors = plotting.colors(len(cfg.variants))
  _rms_panel(a, cfg, measures, colors)
  _late_boxes(b, cfg, measures, "rms_u", colors, marks=[m["r_hook"] for m in measures])
  b.set(xlabel=f"RMS(u) of a tensor-step past {cfg.late:g} W",
        title="(b) RMS(u) (boxes 5-95%; ◆ the hook's r)")
  _per_tensor_panel(c, measures, colors)
  _late_boxes(d, cfg, measures, "scale", colors)
  d.set(xlabel=f"scale of a tensor-step past {cfg.late:g} W",
        title="(d) scale: g² now / Adafactor's v̂")
  _kind_panel(e, cfg, measures, colors)
  _scale_panel(f, cfg, measures, colors)
  handles, labels = a.get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.0))
  run = cfg.variants[0].run
  fig.suptitle(f"T5's Adafactor, per tensor: u = g / sqrt(v̂), clipped at RMS 1 (r = min(RMS(u), "
               f"1)); T5.1.1 from emb {run.emb_dim}, {run.num_encoder_layers}+"
               f"{run.num_decoder_layers} layers, batch {run.batch_size}, W = "
               f"{run.warmup_steps}, T = 52.4 W; one factor changed per variant; seed "
               f"{run.seeds[0]}", fontsize=7, y=1.01)
  fig.tight_layout()
  return plotting.save(fig, ctx.path(NAME))


# ----------------------------------------------------------------------------- make

def _mean_summary(per_seed: list[dict]) -> dict:
  return {k: (None if any(s[k] is None for s in per_seed)
              else float(np.mean([s[k] for s in per_seed]))) for k in per_seed[0]}


def _rows(cfg: Fig1RatioConfig, per_seed: list[list[dict]]) -> list:
  rows = []
  for v, ss in zip(cfg.variants, per_seed):
    label = v.label.split(" (")[0]
    seeds = lambda key: [s[key] for s in ss]  # noqa: E731
    rows += [
        core.Row.of(f"{label}: late r (the hook)", "1 (assumed)", seeds("r_hook")),
        core.Row.of(f"{label}: tensor-steps where clipping binds (RMS(u) ≥ 1)", "all",
                    seeds("clip_frac")),
        core.Row(f"{label}: RMS(u), median [10%, 90%]", None,
                 f"{ss[0]['rms_u']:.3f} [{ss[0]['rms_u_q10']:.3f}, {ss[0]['rms_u_q90']:.3f}]"),
        core.Row(f"{label}: scale = mean g² / mean v̂, median (share < 1; mean)", None,
                 f"{ss[0]['scale']:.3g} ({ss[0]['scale_below_1']:.0%}; "
                 f"{ss[0]['scale_mean']:.3g})"),
        core.Row.of(f"{label}: shape = RMS(u)² / scale, median", None, seeds("shape")),
        core.Row(f"{label}: RMS(u) median, encoder / decoder", None,
                 f"{ss[0]['encoder_rms_u']:.3f} / {ss[0]['decoder_rms_u']:.3f}"),
    ]
  return rows


def make(ctx: core.FigureContext, cfg: Fig1RatioConfig) -> core.FigureResult:
  dirs = [train(ctx, v, cfg.every) for v in cfg.variants]
  measures, per_seed = [], []
  for v, ds in zip(cfg.variants, dirs):
    ctx.advance(0, f"{NAME}: reading the probe of {v.label}")
    runs_of = [measure_run(d, v, cfg.late) for d in ds]
    measures.append(runs_of[0])
    per_seed.append([summarise(m) for m in runs_of])
  summaries = [_mean_summary(ss) for ss in per_seed]
  files = _plot(ctx, cfg, measures)
  files.append(core.write_numbers(ctx, NAME, {
      "config": dataclasses.asdict(cfg),
      "summary": {v.label: ss for v, ss in zip(cfg.variants, per_seed)},
      "scale_explains_spearman": scale_explains(measures)}))
  setup = [f"{v.label}: {v.run.describe()}" + (f"; {', '.join(v.bindings)}" if v.bindings else "")
           for v in cfg.variants]
  setup += [f"optimizer: adafactor_probe.adafactor_t5_probed (T5's Adafactor, the same updates) "
            f"recording RMS(u), scale and zero fraction of every tensor every {cfg.every} "
            f"step(s); late = t > {cfg.late:g} W"]
  notes = [f"{v.label}: late r {s['r_hook']:.3f} (probe {s['r_probe']:.3f}); clipping binds "
           f"on {s['clip_frac']:.1%} of tensor-steps; median scale {s['scale']:.3g}, shape "
           f"{s['shape']:.3g}; embedding/logit entries with zero gradient "
           f"{s['embedding_zero_frac']:.0%}; tensor-steps with an all-zero gradient "
           f"{s['zero_gradient_frac']:.2%}" for v, s in zip(cfg.variants, summaries)]
  return core.FigureResult(NAME, TITLE, files, _rows(cfg, per_seed),
                           judge(cfg, measures, summaries), setup, notes)
