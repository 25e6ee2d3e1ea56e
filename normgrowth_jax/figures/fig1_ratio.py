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
from normgrowth_jax.figures import core, fig1_ratio_plot, runs, t5_runs
from normgrowth_jax.figures.verdict import check

NAME = "fig1_ratio"
TITLE = "Why Adafactor's update ratio r stays below 1: RMS(u) per tensor, scale and shape"
KINDS = (
    "encoder attention q, k",
    "encoder attention v, o",
    "encoder MLP",
    "decoder attention q, k",
    "decoder attention v, o",
    "decoder MLP",
    "layer-norm scales",
    "embedding, logits",
    "relative-position bias",
)


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
      Variant(
          "2+2 layers, batch 64 (Fig. 1's clipped run)", dataclasses.replace(two, batch_size=64)
      ),
      Variant(
          "botchan (3.3 epochs, BBC 0.16)",
          dataclasses.replace(base, task="ng_span_corruption_botchan_bytes"),
      ),
      Variant("emb 128 (factored moments)", wide),
      Variant(
          "emb 128, unfactored",
          wide,
          ("adafactor_probe.adafactor_t5_probed.min_dim_size_to_factor = 1000000",),
      ),
  )


def _smoke_variants() -> tuple:
  base = t5_runs.PROFILES["smoke"]
  return (
      Variant("smoke model (emb 8, 2+1, batch 4)", base),
      Variant("batch 8", dataclasses.replace(base, batch_size=8)),
  )


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
  return [
      *t5_runs.bindings(v.run, seed),
      f"OPTIMIZER = @{probe}",
      f"{probe}.history_size = {v.run.train_steps // every + 1}",
      f"{probe}.every = {every}",
      *v.bindings,
  ]


def _specs(v: Variant, every: int) -> list[runs.RunSpec]:
  t5_runs.prepare_corpora(v.run)
  return [
      runs.RunSpec(
          f"fig1-ratio-{v.slug}-seed{s}",
          (t5_runs.GIN_FILE,),
          tuple(_bindings(v, s, every)),
          v.run.train_steps,
      )
      for s in v.run.seeds
  ]


def run_specs(ctx, cfg: Fig1RatioConfig) -> list[runs.RunSpec]:
  """Every variant's probed runs."""
  del ctx
  return [s for v in cfg.variants for s in _specs(v, cfg.every)]


def train(ctx: core.FigureContext, v: Variant, every: int = 1) -> list[Path]:
  """Trains (or reuses) the variant's runs, one per seed."""
  return runs.train_specs(ctx, _specs(v, every))


# ----------------------------------------------------------------------------- measurements


def _hook_ratio(model_dir: Path, cfg: t5_runs.T5RunConfig) -> tuple[np.ndarray, np.ndarray]:
  tr = run_reader.load(
      model_dir,
      warmup_steps=cfg.warmup_steps,
      exact_rsqrt=True,
      init_norms=t5_runs.eval_norms(model_dir),
  )
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
  r_probe = np.sqrt(np.sum(w * clipped**2, axis=0) / np.sum(w))
  tensors = {
      k: {
          "kind": tensor_kind(k),
          "factored": probe.factored[k],
          "rms_u": probe.rms_u[k][is_late],
          "scale": probe.scale[k][is_late],
          "zero_frac": probe.zero_frac[k][is_late],
      }
      for k in probe.rms_u
  }
  late_hook = step > late * v.run.warmup_steps
  return {
      "tensors": tensors,
      "steps": probe.steps,
      "rms_u_all": np.stack(list(probe.rms_u.values())),
      "scale_all": np.stack(list(probe.scale.values())),
      "r_hook": float(np.nanmean(r_hook[late_hook])),
      "r_probe": float(np.mean(r_probe)),
  }


def summarise(m: dict) -> dict:
  """Late pooled statistics of one run (over every tensor and late record)."""
  t = m["tensors"].values()
  rms = np.concatenate([x["rms_u"] for x in t])
  scale = np.concatenate([x["scale"] for x in t])

  def median_where(keep):
    picked = [x["rms_u"] for x in t if keep(x)]
    return float(np.median(np.concatenate(picked))) if picked else None

  return {
      "r_hook": m["r_hook"],
      "r_probe": m["r_probe"],
      "clip_frac": float(np.mean(rms >= 1.0)),
      "rms_u": float(np.median(rms)),
      "rms_u_q10": float(np.quantile(rms, 0.1)),
      "rms_u_q90": float(np.quantile(rms, 0.9)),
      "scale": float(np.median(scale)),
      "scale_below_1": float(np.mean(scale < 1.0)),
      "scale_mean": float(np.mean(scale)),
      "shape": float(np.median(np.square(rms[scale > 0]) / scale[scale > 0])),
      "zero_gradient_frac": float(np.mean(scale == 0)),
      "encoder_rms_u": median_where(lambda x: x["kind"].startswith("encoder")),
      "decoder_rms_u": median_where(lambda x: x["kind"].startswith("decoder")),
      "factored_rms_u": median_where(lambda x: x["factored"]),
      "embedding_zero_frac": float(
          np.mean(np.concatenate([x["zero_frac"] for x in t if x["kind"] == "embedding, logits"]))
      ),
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
      check(
          "the probe accounts for the hook's r: late r from the per-tensor min(RMS(u), 1) "
          "(paper filter, weighted by ||θ_i||²) within 0.05 of the hook's, every run",
          all(abs(x["r_hook"] - x["r_probe"]) <= 0.05 for x in summaries),
          ", ".join(f"{x['r_probe']:.3f} vs {x['r_hook']:.3f}" for x in summaries),
          "—",
      ),
      check(
          "where r < 0.9 the gradient is smaller than Adafactor's estimate of it: median "
          "scale < 1 past 4 W in every such run",
          all(x["scale"] < 1 for x in summaries if x["r_hook"] < 0.9)
          if any(x["r_hook"] < 0.9 for x in summaries)
          else None,
          ", ".join(f"{x['scale']:.3f}" for x in summaries if x["r_hook"] < 0.9),
          "< 1",
      ),
      check(
          "scale, not shape, sets RMS(u): Spearman of per-tensor late medians of scale and "
          "RMS(u)² ≥ 0.8",
          scale_explains(measures) >= 0.8,
          f"{scale_explains(measures):.3f}",
          "≥ 0.8",
      ),
  ]

  def rises(name, a, b, key="r_hook"):
    """``key`` of variant ``b`` above variant ``a``'s (not comparable if either was not run)."""
    if a not in s or b not in s:
      return check(name, None)
    return check(name, s[b][key] > s[a][key], f"{s[a][key]:.3f} vs {s[b][key]:.3f}", "higher")

  base = cfg.variants[0].label.split(" (")[0]
  out += [
      rises("batch raises r: 4+2 layers, batch 16 above batch 4", base, "batch 16"),
      rises(
          "batch raises r: 2+2 layers, batch 64 above batch 4", "2+2 layers", "2+2 layers, batch 64"
      ),
      rises(
          "batch raises the scale ratio: 2+2 layers, batch 64 above batch 4",
          "2+2 layers",
          "2+2 layers, batch 64",
          "scale",
      ),
      rises("depth lowers r: 2+2 layers above 4+2 at batch 4", base, "2+2 layers"),
      rises(
          "repeated data raises r: botchan (3.3 epochs) above BBC (0.16 epoch), batch 4",
          base,
          "botchan",
      ),
      rises(
          "factoring lowers RMS(u) at emb 128: unfactored above factored (median past 4 W)",
          "emb 128",
          "emb 128, unfactored",
          "rms_u",
      ),
  ]
  return out


# ----------------------------------------------------------------------------- plot


# ----------------------------------------------------------------------------- make


def _mean_summary(per_seed: list[dict]) -> dict:
  return {
      k: (None if any(s[k] is None for s in per_seed) else float(np.mean([s[k] for s in per_seed])))
      for k in per_seed[0]
  }


def _rows(cfg: Fig1RatioConfig, per_seed: list[list[dict]]) -> list:
  rows = []
  for v, ss in zip(cfg.variants, per_seed):
    label = v.label.split(" (")[0]
    seeds = lambda key: [s[key] for s in ss]  # noqa: E731
    rows += [
        core.Row.of(f"{label}: late r (the hook)", "1 (assumed)", seeds("r_hook")),
        core.Row.of(
            f"{label}: tensor-steps where clipping binds (RMS(u) ≥ 1)", "all", seeds("clip_frac")
        ),
        core.Row(
            f"{label}: RMS(u), median [10%, 90%]",
            None,
            f"{ss[0]['rms_u']:.3f} [{ss[0]['rms_u_q10']:.3f}, {ss[0]['rms_u_q90']:.3f}]",
        ),
        core.Row(
            f"{label}: scale = mean g² / mean v̂, median (share < 1; mean)",
            None,
            f"{ss[0]['scale']:.3g} ({ss[0]['scale_below_1']:.0%}; " f"{ss[0]['scale_mean']:.3g})",
        ),
        core.Row.of(f"{label}: shape = RMS(u)² / scale, median", None, seeds("shape")),
        core.Row(
            f"{label}: RMS(u) median, encoder / decoder",
            None,
            f"{ss[0]['encoder_rms_u']:.3f} / {ss[0]['decoder_rms_u']:.3f}",
        ),
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
  files = fig1_ratio_plot.plot(ctx.path(NAME), cfg, measures, KINDS)
  files.append(
      core.write_numbers(
          ctx,
          NAME,
          {
              "config": dataclasses.asdict(cfg),
              "summary": {v.label: ss for v, ss in zip(cfg.variants, per_seed)},
              "scale_explains_spearman": scale_explains(measures),
          },
      )
  )
  setup = [
      f"{v.label}: {v.run.describe()}" + (f"; {', '.join(v.bindings)}" if v.bindings else "")
      for v in cfg.variants
  ]
  setup += [
      f"optimizer: adafactor_probe.adafactor_t5_probed (T5's Adafactor, the same updates) "
      f"recording RMS(u), scale and zero fraction of every tensor every {cfg.every} "
      f"step(s); late = t > {cfg.late:g} W"
  ]
  notes = [
      f"{v.label}: late r {s['r_hook']:.3f} (probe {s['r_probe']:.3f}); clipping binds "
      f"on {s['clip_frac']:.1%} of tensor-steps; median scale {s['scale']:.3g}, shape "
      f"{s['shape']:.3g}; embedding/logit entries with zero gradient "
      f"{s['embedding_zero_frac']:.0%}; tensor-steps with an all-zero gradient "
      f"{s['zero_gradient_frac']:.2%}"
      for v, s in zip(cfg.variants, summaries)
  ]
  return core.FigureResult(
      NAME, TITLE, files, _rows(cfg, per_seed), judge(cfg, measures, summaries), setup, notes
  )
