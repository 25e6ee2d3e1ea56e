"""Fig. 2: per-layer saturation of pretrained (or trained) transformers vs their baselines.

Per layer, the cosine of f(x; theta) and f(x; 1000 theta) (and of f and the exact limit sf),
averaged over the real tokens of sentences of offline text (the paper used 100 Brown-corpus
sentences, not available offline). Measured: all-MiniLM-L6-v2 against randomly initialised
copies of its architecture; Hugging Face directories given with ``--hf_model_dir`` (BERT,
RoBERTa, T5 on its encoder and, as the original, on its decoder with decoder inputs = inputs);
and our trained runs against their own initialisation: the T5 of Fig. 1's family and the
correct-mask small LMs of Fig. 3's, which this figure declares (``run_specs``), so the pipeline
has trained them before it runs. The paper's four models are drawn in their own panel for
comparison.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from matplotlib import ticker
import numpy as np

from normgrowth_jax.figures import core, paper, plotting, runs, small_lm_runs, t5_runs
from normgrowth_jax.figures import subjects as subjects_lib
from normgrowth_jax.figures.verdict import check

NAME = "fig2"
TITLE = "Saturation by layer: pretrained vs randomly initialised"


@dataclasses.dataclass(frozen=True)
class Fig2Config:
  """One profile: the sentences, the baselines' seeds, and our trained runs to draw (the
  T5 family's first seed, the small-LM family's correct-mask models; None: not drawn)."""

  corpus: str = "bbc"
  num_sentences: int = 100
  max_len: int = 64
  seeds: tuple = (0, 1, 2)
  rho: float = 1000.0
  t5_run: Optional[t5_runs.T5RunConfig] = None
  small_lms: Optional[small_lm_runs.RunConfig] = None


def _ours(profile: str) -> dict:
  return {"t5_run": t5_runs.PROFILES[profile], "small_lms": small_lm_runs.PROFILES[profile]}


CONFIGS = {
    "smoke": Fig2Config(
        corpus="botchan", num_sentences=8, max_len=24, seeds=(0,), **_ours("smoke")
    ),
    "quick": Fig2Config(**_ours("quick")),
    "full": Fig2Config(seeds=(0, 1, 2, 3, 4), **_ours("full")),
}


def work(cfg: Fig2Config) -> int:
  return 1 + len(cfg.seeds)  # MiniLM and its random inits; other subjects add no units


def run_specs(ctx, cfg: Fig2Config) -> list[runs.RunSpec]:
  """The trained runs drawn: the T5 family's first seed, the small LMs' correct-mask ones."""
  out = t5_runs.specs(ctx, cfg.t5_run)[:1] if cfg.t5_run else []
  lms = cfg.small_lms
  if lms and "causal" in lms.masks:
    steps = small_lm_runs.train_steps(lms)
    out += [small_lm_runs.spec(lms, norm, "causal", lms.seeds[0], steps) for norm in lms.norms]
  return out


def gather_subjects(ctx, cfg: Fig2Config, sentences) -> list:
  subjects = [subjects_lib.minilm(sentences, cfg.seeds, cfg.max_len)]
  for d in ctx.options.hf_model_dirs:
    subjects += subjects_lib.hf_directory(d, sentences, cfg.seeds, cfg.max_len)
  if cfg.t5_run:
    subjects += subjects_lib.trained_t5(ctx, cfg.t5_run, sentences)
  if cfg.small_lms:
    subjects += subjects_lib.trained_small_lms(ctx, cfg.small_lms, sentences)
  return subjects


def measure(ctx, cfg: Fig2Config, subject) -> dict:
  """{"measured": {rho, limit}, "baselines": [{rho, limit}, ...]} per layer 1..L."""
  ctx.advance(0, f"{NAME}: {subject.label}")
  measured = subjects_lib.per_layer(subject, subject.params, cfg.rho)
  ctx.advance(1, None)
  baselines = []
  for p in subject.baselines:
    baselines.append(subjects_lib.per_layer(subject, p, cfg.rho))
    ctx.advance(1, None)
  return {"measured": measured, "baselines": baselines}


def _plot_paper(ax):
  colors = dict(zip(paper.FIG2, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
  for model, vals in paper.FIG2.items():
    for kind, style in (("pretrained", "-"), ("random_init", ":")):
      y = vals[kind]
      ax.plot(
          np.arange(1, len(y) + 1),
          y,
          style,
          color=colors[model],
          marker=".",
          markersize=3,
          label=f"{model}" if kind == "pretrained" else None,
      )
  ax.plot([], [], "k:", label="random init (dotted)")
  ax.set_title("paper (ρ = 1000, Brown corpus, base models)")


def _plot_subject(ax, subject, res, rho):
  m = res["measured"]
  x = np.arange(1, len(m["rho"]) + 1)
  ax.plot(
      x,
      m["rho"],
      "-",
      color="tab:blue",
      marker=".",
      markersize=3,
      label=f"{'trained' if subject.baseline_label == 'own init' else 'pretrained'}, ρ={rho:g}",
  )
  ax.plot(x, m["limit"], "--", color="tab:blue", linewidth=0.8, label="same, exact limit")
  base = np.asarray([b["rho"] for b in res["baselines"]])
  ax.plot(
      x,
      base.mean(0),
      "-",
      color="tab:gray",
      marker=".",
      markersize=3,
      label=f"{subject.baseline_label}, ρ={rho:g}"
      + (f" (band: {len(base)} seeds)" if len(base) > 1 else ""),
  )
  if len(base) > 1:
    ax.fill_between(x, base.min(0), base.max(0), color="tab:gray", alpha=0.25, linewidth=0)
  if subject.paper_model:
    y = paper.FIG2[subject.paper_model]["pretrained"]
    xp = np.linspace(1, len(x), len(y))  # the paper's 12 layers on our depth axis
    ax.plot(xp, y, **plotting.PAPER_STYLE, label=f"paper {subject.paper_model} (depth-scaled)")
  ax.set_title(subject.label)


def _plot(ctx, subjects, results, rho):
  n = 1 + len(subjects)
  cols = min(3, n)
  rows = -(-n // cols)
  fig, axes = plotting.new_figure(
      rows, cols, height_per_row=3.0, squeeze=False, sharey=True, layout="constrained"
  )
  axes = axes.ravel()
  _plot_paper(axes[0])
  for ax, s, r in zip(axes[1:], subjects, results):
    _plot_subject(ax, s, r, rho)
  for ax in axes[:n]:
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylim(-0.15, 1.05)
    ax.set_yticks(np.arange(0.0, 1.01, 0.2))
    ax.grid(True)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=2 if ax is axes[0] else 1,
        columnspacing=0.8,
        handlelength=1.6,
    )
  for ax in axes[n:]:
    ax.set_visible(False)
  for r in range(rows):
    axes[r * cols].set_ylabel("cos(f(x; θ), f(x; ρθ))")
  return plotting.save(fig, ctx.path(NAME))


def _criteria_and_rows(subject, res):
  meas = res["measured"]["rho"]
  base = np.asarray([b["rho"] for b in res["baselines"]])  # [seeds, L]
  base_mean = base.mean(0)
  pm = paper.FIG2.get(subject.paper_model) if subject.paper_model else None
  p_pre = float(np.mean(pm["pretrained"])) if pm else None
  p_rand = float(np.mean(pm["random_init"])) if pm else None
  p_layers = (
      (
          f"{sum(a > b for a, b in zip(pm['pretrained'], pm['random_init']))} of "
          f"{len(pm['pretrained'])}"
      )
      if pm
      else None
  )
  above = int(np.sum(meas > base_mean))
  label = subject.label
  vs = f" (paper: {subject.paper_model})" if pm else ""
  rows = [
      core.Row(f"{label}: mean over layers{vs}", p_pre, float(meas.mean())),
      core.Row.of(f"{label}: {subject.baseline_label}, mean over layers{vs}", p_rand, base.mean(1)),
      core.Row(f"{label}: last layer{vs}", pm["pretrained"][-1] if pm else None, float(meas[-1])),
      core.Row(
          f"{label}: layers above {subject.baseline_label}{vs}", p_layers, f"{above} of {len(meas)}"
      ),
  ]
  criteria = [
      check(
          f"{label} above its {subject.baseline_label} in the mean over layers",
          meas.mean() > base_mean.mean(),
          ours=f"{meas.mean():.3f} vs {base_mean.mean():.3f}",
          paper=f"{p_pre:.3f} vs {p_rand:.3f}" if pm else None,
      ),
      check(
          f"{label} above its {subject.baseline_label} in at least half of the layers",
          2 * above >= len(meas),
          ours=f"{above} of {len(meas)}",
          paper=p_layers,
      ),
  ]
  return rows, criteria


# The paper's "close to saturation" claims: (model, layer index, which stack we compare).
LEVEL_CLAIMS = (("T5-base", -1, "decoder"), ("RoBERTa-base", -2, ""))
LEVEL_TOLERANCE = 0.1


def level_criteria(subjects, results) -> list:
  """Pretrained T5 / RoBERTa close to saturated in their last layers, as the paper measured.

  Evaluated on a user's checkpoint of that model (``--hf_model_dir``); without one the
  criterion is not comparable (no such checkpoint is available offline).
  """
  out = []
  for model, layer, stack in LEVEL_CLAIMS:
    want = paper.FIG2[model]["pretrained"][layer]
    text = (
        f"pretrained {model} within {LEVEL_TOLERANCE} of the paper's "
        f"{'last' if layer == -1 else 'penultimate'} layer"
    )
    found = [
        (s, r)
        for s, r in zip(subjects, results)
        if s.paper_model == model and s.baseline_label == "random init" and s.label.endswith(stack)
    ]
    if not found:
      out.append(
          check(
              text,
              None,
              ours=f"not comparable: no {model}-size checkpoint "
              "(--hf_model_dir of width 768, 12 layers)",
              paper=want,
          )
      )
    for s, r in found:
      got = float(r["measured"]["rho"][layer])
      out.append(
          check(f"{text} ({s.label})", abs(got - want) <= LEVEL_TOLERANCE, ours=got, paper=want)
      )
  return out


def make(ctx: core.FigureContext, cfg: Fig2Config) -> core.FigureResult:
  sentences = subjects_lib.corpus_sentences(cfg.corpus, cfg.num_sentences)
  subjects = gather_subjects(ctx, cfg, sentences)
  results = [measure(ctx, cfg, s) for s in subjects]
  files = _plot(ctx, subjects, results, cfg.rho)
  numbers = {
      "rho": cfg.rho,
      "corpus": cfg.corpus,
      "sentences": sentences,
      "subjects": {
          s.label: {"note": s.note, "baseline": s.baseline_label, "paper_model": s.paper_model, **r}
          for s, r in zip(subjects, results)
      },
      "paper": paper.FIG2,
  }
  files.append(core.write_numbers(ctx, NAME, numbers))
  rows, criteria = [], []
  for s, r in zip(subjects, results):
    rw, cr = _criteria_and_rows(s, r)
    rows += rw
    criteria += cr
  criteria += level_criteria(subjects, results)
  gap = max(float(np.max(np.abs(r["measured"]["rho"] - r["measured"]["limit"]))) for r in results)
  setup = [
      f"text: the first {cfg.num_sentences} sentences (5-40 words) of the {cfg.corpus!r} "
      "corpus's validation split (the paper: 100 Brown-corpus sentences, not available offline)",
      "models: " + "; ".join(f"{s.label} ({s.note})" for s in subjects),
      "all-MiniLM-L6-v2 is a 6-layer BERT distilled and contrastively fine-tuned for sentence "
      "embeddings, not BERT-base; the paper's curves are drawn on our depth axis for shape only",
      f"baselines: {len(cfg.seeds)} random initialisations, dropout off (the original ran its "
      "random-init models with dropout on)",
      f"every parameter scaled by rho = {cfg.rho:g} as in the paper; exact limit beside it "
      f"(largest per-layer difference {gap:.3f})",
  ]
  return core.FigureResult(NAME, TITLE, files, rows, criteria, setup)
