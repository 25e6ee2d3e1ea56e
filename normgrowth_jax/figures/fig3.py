"""Fig. 3: saturated attention heads of the paper's small LMs, correct vs the original mask.

The paper trains small causal LMs (pre-norm x + LN(F(x)) and post-norm LN(x + F(x))) on PTB,
reports that all of them grow in norm and reach saturation ~1.00 at rho = 1000, and shows in
Fig. 3 the histogram over all 144 heads of "# positions attended" (weight > 1e-5) in the
saturated models: one mode at 1 position (argmax heads), one at ~41 of the padded length 83
("mean heads"). The original's mask multiplied future scores by 0 (instead of -inf) and left
padding visible, and its statistics ran over every query and key of the padded batch; a head
whose visible scores are all negative then spreads over the future and padding, which averages
to (83 - 1) / 2 = 41 positions too.

We train each of {pre-norm, post-norm} x {correct mask, original mask} with several seeds
through the embedded trainer (the run family of :mod:`small_lm_runs`), record the encoder norm,
dev loss/perplexity and the saturation (rho = 1000 and the exact limit) over training, pick
each run's best checkpoint on dev loss, and measure its saturated heads on 200 dev sentences
(:mod:`fig3_heads`). Two figures (:mod:`fig3_plot`): ``fig3.png``, histograms over heads, and
``fig3_training.png``, the runs' training. Fig. 2 measures the correct-mask models against
their own initialisation (``subjects.trained_small_lms``).

Example (the criteria on synthetic head fractions):
  >>> f = {("prenorm_paper", "causal"): {"argmax": 1.0, "split_high": 0.0}}
  >>> [c.passed for c in judge(f, {k: ([0.5], [0.99]) for k in f}, {k: [1.2] for k in f}, 83)]
  [False, True, True, True, None]
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from normgrowth_jax.data import word_lm
from normgrowth_jax.figures import core, fig3_heads, fig3_plot, paper, runs, small_lm_runs
from normgrowth_jax.figures.fig3_heads import ARGMAX_MAX, SPLIT_HIGH, SPLIT_LOW
from normgrowth_jax.figures.small_lm_runs import MASKS, NORMS, PAPER_KEY, variant_label
from normgrowth_jax.figures.verdict import check

NAME = "fig3"
TITLE = "Saturated attention heads of small LMs (correct vs original mask) and their training"
UNIGRAM_MARGIN = 0.1  # nats: a dev loss within this of the unigram loss learned only unigrams


@dataclasses.dataclass(frozen=True)
class Fig3Config:
  """One profile: the runs (data, model, training budget) and the head analysis."""

  run: small_lm_runs.RunConfig = small_lm_runs.PROFILES["full"]
  attention_sentences: int = 200


CONFIGS = {
    "smoke": Fig3Config(small_lm_runs.PROFILES["smoke"], attention_sentences=16),
    "quick": Fig3Config(small_lm_runs.PROFILES["quick"]),
    "full": Fig3Config(small_lm_runs.PROFILES["full"]),
}


def work(cfg: Fig3Config) -> int:
  return len(small_lm_runs.keys(cfg.run))  # one unit per run measured (run_specs: training)


def run_specs(ctx, cfg: Fig3Config) -> list[runs.RunSpec]:
  del ctx
  return small_lm_runs.specs(cfg.run)


def make(ctx: core.FigureContext, cfg: Fig3Config) -> core.FigureResult:
  run = cfg.run
  data = small_lm_runs.load_data(run)
  steps = small_lm_runs.train_steps(run, data)
  run_dirs = small_lm_runs.train_all(ctx, run, steps)
  tokens = data.split("validation")[: cfg.attention_sentences]
  results = {}
  for (norm, mask, seed), d in run_dirs.items():
    ctx.advance(0, f"{NAME}: heads of {small_lm_runs.run_name(norm, mask, seed)}")
    results.setdefault((norm, mask), []).append(fig3_heads.analyse_run(run, norm, mask, d, tokens))
    ctx.advance(1, None)
  unigram = word_lm.unigram_loss(data, "validation", run.eval_sentences)  # the dev loss's text
  files = fig3_plot.plot_heads(ctx.path(NAME), cfg, results) + fig3_plot.plot_training(
      ctx.path(f"{NAME}_training"), cfg, results, unigram
  )
  m = summarise(results, run)
  criteria = judge(m["fractions"], m["saturation"], m["growth"], run.max_len)
  files.append(core.write_numbers(ctx, NAME, _numbers(cfg, results, m, steps, unigram, data)))
  return core.FigureResult(
      NAME,
      TITLE,
      files,
      _rows(run, results, m, unigram),
      criteria,
      _setup(cfg, steps, data),
      _notes(run, results, m, unigram),
  )


def summarise(results: dict, run: small_lm_runs.RunConfig) -> dict:
  """Per variant: head fractions at rho and in the limit, saturation (init, trained) and the
  encoder norm's growth of every seed."""
  return {
      "fractions": {
          k: fig3_heads.head_fractions(fig3_heads.pooled(results, *k), run.max_len) for k in results
      },
      "fractions_limit": {
          k: fig3_heads.head_fractions(fig3_heads.pooled(results, *k, "limit"), run.max_len)
          for k in results
      },
      "saturation": {
          k: ([r["init"]["saturation_rho"] for r in v], [r["best"]["saturation_rho"] for r in v])
          for k, v in results.items()
      },
      "growth": {
          k: [r["norm"]["param_norm"][-1] / r["norm"]["param_norm"][0] for r in v]
          for k, v in results.items()
      },
  }


def unigram_note(label: str, loss: float, unigram: float) -> Optional[str]:
  """A note when a model's dev loss says it learned no more than unigram statistics.

  Example:
    >>> unigram_note("x", 6.45, 6.50)[:40]
    'x: dev loss 6.45 is within 0.1 nats of t'
    >>> unigram_note("x", 5.0, 6.50) is None
    True
  """
  if loss > unigram + UNIGRAM_MARGIN:
    return (
        f"{label}: dev loss {loss:.2f} is above the unigram loss {unigram:.2f}: the model "
        "has not even learned unigram statistics (undertrained); its saturation says little."
    )
  if loss >= unigram - UNIGRAM_MARGIN:
    return (
        f"{label}: dev loss {loss:.2f} is within {UNIGRAM_MARGIN} nats of the unigram loss "
        f"{unigram:.2f}: the model learned only unigram statistics, so its saturation may be "
        "trivial (the original's post-norm runs did too: PTB dev 6.50 nats)."
    )
  return None


def paper_fractions(norm: str) -> dict:
  p = paper.FIG3[PAPER_KEY[norm]]
  return {
      "argmax": p["bins"][0][2] / p["heads"],
      "half": p["mean_heads"] / p["heads"],
      "split_low": p["split_below_0.01"] / p["heads"],
      "split_high": p["split_near_0.97"] / p["heads"],
  }


def judge(fractions: dict, saturation: dict, norm_growth: dict, padded_length: int) -> list:
  """The stated criteria.

  Args:
    fractions: ``{(norm, mask): head_fractions(...)}`` at rho = 1000 (pooled over seeds).
    saturation: ``{(norm, mask): (init values, trained values)}`` per seed (last layer,
      rho = 1000).
    norm_growth: ``{(norm, mask): [final / initial encoder norm per seed]}``.
    padded_length: L.

  Example:
    >>> f = {("prenorm_paper", "original_leaky"): {"argmax": .3, "half": .4},
    ...      ("prenorm_paper", "causal"): {"argmax": 1.0, "split_high": 0.0}}
    >>> s = {k: ([0.5], [0.99]) for k in f}
    >>> g = {k: [1.2] for k in f}
    >>> [c.passed for c in judge(f, s, g, 83)]
    [True, False, True, True, True, None]
  """
  return _mode_criteria(fractions, padded_length) + _training_criteria(saturation, norm_growth)


def _mode_criteria(fractions: dict, padded_length: int) -> list:
  """The histograms' modes: both under the original mask, the mean heads under ours."""
  out = []
  leaky = {n: f for (n, m), f in fractions.items() if m == "original_leaky"}
  correct = {n: f for (n, m), f in fractions.items() if m == "causal"}
  if leaky:
    ok = all(f["argmax"] >= 0.1 and f["half"] >= 0.1 for f in leaky.values())
    out.append(
        check(
            "original mask: two modes, >= 10% of heads at ~1 position and >= 10% at half the "
            f"padded length ((L-1)/2 = {(padded_length - 1) / 2:g})",
            ok,
            ours="; ".join(
                f"{NORMS[n]} {f['argmax']:.2f} / {f['half']:.2f}" for n, f in leaky.items()
            ),
            paper="; ".join(
                f"{NORMS[n]} {paper_fractions(n)['argmax']:.2f} / "
                f"{paper_fractions(n)['half']:.2f}"
                for n in leaky
            ),
        )
    )
  if correct:
    ok = all(f["split_high"] >= 0.1 for f in correct.values())
    out.append(
        check(
            "correct mask: a second mode survives, >= 10% of heads split their attention for "
            "> 90% of queries (mean heads)",
            ok,
            ours="; ".join(
                f"{NORMS[n]} {f['split_high']:.2f} (argmax heads {f['argmax']:.2f})"
                for n, f in correct.items()
            ),
            paper="; ".join(
                f"{NORMS[n]} {paper_fractions(n)['split_high']:.2f} (with its mask)"
                for n in correct
            ),
        )
    )
  return out


def _training_criteria(saturation: dict, norm_growth: dict) -> list:
  """Saturation and norm growth, judged on seed means per variant (spread shown), so float
  drift between machines in one run cannot flip a verdict."""
  out = []
  trained = {k: _mean_sd(v[1]) for k, v in saturation.items()}
  worst = min(trained, key=lambda k: trained[k][0])
  out.append(
      check(
          "every trained model at saturation >= 0.98 (rho = 1000, last layer, dev tokens; seed "
          "means per variant)",
          trained[worst][0] >= 0.98,
          ours=f"lowest {_fmt_mean_sd(trained[worst])} ({NORMS[worst[0]]}, {MASKS[worst[1]]})",
          paper="0.986-0.9997",
      )
  )
  gain = {k: _mean_sd(np.subtract(v[1], v[0])) for k, v in saturation.items()}
  out.append(
      check(
          "saturation rises from initialisation to the trained model (seed mean of trained - init "
          "> 0 in every variant)",
          all(m > 0 for m, _ in gain.values()),
          ours="; ".join(f"{variant_label(*k)} {_fmt_mean_sd(g)}" for k, g in gain.items()),
          paper="pre-norm 0.47-0.52, post-norm 0.06-0.08 -> 0.986-0.9997",
      )
  )
  growth = {k: _mean_sd(v) for k, v in norm_growth.items()}
  out.append(
      check(
          "the encoder norm grows (seed mean of final / initial > 1 in every variant)",
          all(m > 1 for m, _ in growth.values()),
          ours="; ".join(f"{variant_label(*k)} {_fmt_mean_sd(g)}" for k, g in growth.items()),
          paper="every model grows",
      )
  )
  pre = [i for (n, _), v in saturation.items() if n == "prenorm_paper" for i in v[0]]
  post = [i for (n, _), v in saturation.items() if n == "postnorm" for i in v[0]]
  out.append(
      check(
          "at initialisation pre-norm is closer to saturation than post-norm",
          (np.mean(pre) > np.mean(post)) if pre and post else None,
          ours=f"{np.mean(pre):.3f} vs {np.mean(post):.3f}" if pre and post else None,
          paper="0.47-0.52 vs 0.06-0.08",
      )
  )
  return out


def _mean_sd(values) -> tuple:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _fmt_mean_sd(ms: tuple) -> str:
  return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def _rows(run: small_lm_runs.RunConfig, results: dict, m: dict, unigram: float) -> list[core.Row]:
  rows = []
  lo, hi = paper.SMALL_LM["saturation_trained"]
  for (norm, mask), v in results.items():
    label = variant_label(norm, mask)
    pf = paper_fractions(norm)
    f, fl = m["fractions"][norm, mask], m["fractions_limit"][norm, mask]
    ilo, ihi = paper.SMALL_LM[f"saturation_init_{PAPER_KEY[norm]}"]
    rows += [
        core.Row(
            f"{label}: saturation ρ = {run.rho:g}, trained",
            f"{lo}-{hi}",
            *core.mean_spread([r["best"]["saturation_rho"] for r in v]),
        ),
        core.Row(
            f"{label}: saturation, exact limit, trained",
            None,
            *core.mean_spread([r["best"]["saturation_limit"] for r in v]),
        ),
        core.Row(
            f"{label}: saturation ρ = {run.rho:g}, initialisation",
            f"{ilo}-{ihi}",
            *core.mean_spread([r["init"]["saturation_rho"] for r in v]),
        ),
        core.Row(
            f"{label}: dev loss, best checkpoint (unigram {unigram:.2f})",
            paper.SMALL_LM["postnorm_unigram_dev_loss"] if norm == "postnorm" else None,
            *core.mean_spread([r["best"]["loss"] for r in v]),
        ),
        core.Row(
            f"{label}: encoder norm, final / initial",
            None,
            *core.mean_spread(m["growth"][norm, mask]),
        ),
        core.Row(
            f"{label}: heads at ~1 position (< {ARGMAX_MAX}), ρ / limit",
            f"{pf['argmax']:.2f} in [1, 1.4)",
            f"{f['argmax']:.2f} / {fl['argmax']:.2f}",
        ),
        core.Row(
            f"{label}: heads at (L-1)/2 ± 1 = {(run.max_len - 1) / 2:g}, ρ / limit",
            f"{pf['half']:.2f}",
            f"{f['half']:.2f} / {fl['half']:.2f}",
        ),
        core.Row(
            f"{label}: heads with split probability < {SPLIT_LOW} / > {SPLIT_HIGH}",
            f"{pf['split_low']:.2f} / {pf['split_high']:.2f}",
            f"{f['split_low']:.2f} / {f['split_high']:.2f}",
        ),
    ]
  return rows


def _notes(run: small_lm_runs.RunConfig, results: dict, m: dict, unigram: float) -> list[str]:
  """Which variants stay at the unigram loss, and what the original mask changes."""
  notes = []
  for (norm, mask), v in results.items():
    note = unigram_note(
        variant_label(norm, mask), float(np.mean([r["best"]["loss"] for r in v])), unigram
    )
    if note:
      notes.append(note)
  loss = {k: np.mean([r["best"]["loss"] for r in v]) for k, v in results.items()}
  fractions = m["fractions"]
  for n in dict.fromkeys(n for n, mask in results if mask == "causal"):
    if (n, "original_leaky") not in results:
      continue
    fw = np.mean(
        [np.mean(r["heads"]["rho"]["future_weight"]) for r in results[n, "original_leaky"]]
    )
    notes.append(
        f"What the original mask changes ({NORMS[n]}): dev loss {loss[n, 'original_leaky']:.2f} "
        f"vs {loss[n, 'causal']:.2f} nats with the correct mask (the future leaks through the "
        f"zero scores: at ρ = {run.rho:g} its heads put {fw:.0%} of their weight on later or "
        f"padding positions on average); heads at (L-1)/2: "
        f"{fractions[n, 'original_leaky']['half']:.2f} vs {fractions[n, 'causal']['half']:.2f}"
        f"; argmax heads {fractions[n, 'original_leaky']['argmax']:.2f} vs "
        f"{fractions[n, 'causal']['argmax']:.2f}."
    )
  return notes


def _numbers(cfg: Fig3Config, results: dict, m: dict, steps: int, unigram: float, data) -> dict:
  return {
      "config": dataclasses.asdict(cfg),
      "steps": steps,
      "unigram_dev_loss": unigram,
      "data": data.stats,
      "runs": {
          f"{n}/{k}": [
              {x: r[x] for x in ("run_dir", "best_step", "eval", "norm")}
              | {"best": r["best"], "init": r["init"], "heads": r["heads"]}
              for r in v
          ]
          for (n, k), v in results.items()
      },
      "head_fractions": {
          f"{n}/{k}": {"rho": m["fractions"][n, k], "limit": m["fractions_limit"][n, k]}
          for (n, k) in results
      },
      "paper": {"fig3": paper.FIG3, "small_lm": paper.SMALL_LM},
  }


def _setup(cfg: Fig3Config, steps: int, data) -> list[str]:
  run, a = cfg.run, cfg.run.arch
  epochs = small_lm_runs.epochs(run, steps, data)
  return [
      f"data: word-level sentences of {run.corpus!r} (PTB-like: lowercased, numbers -> N, "
      f"punctuation dropped; {run.vocab_words} words + <unk>, <eos> appended, padded to "
      f"{run.max_len}; {data.stats['train']['sentences']} training sentences, <unk> rate "
      f"{data.stats['train']['unk_rate']:.1%}); the paper: PTB (10k words, padded length 83)",
      f"model: SmallLM {a.num_layers} layers, d_model {a.d_model}, FF {a.d_ff}, "
      f"{a.num_heads} heads ({a.num_layers * a.num_heads} heads per model)"
      + ("" if a.is_paper_size else "; the paper: 12 layers, 768, FF 512, 12 heads (144 heads)"),
      f"training: AdamW lr {run.learning_rate:g}, wd {run.weight_decay:g}, batch "
      f"{run.batch_size}, {steps} steps (= {epochs:.2f} epochs); the paper: 5 epochs; "
      f"{len(run.seeds)} seed(s) per variant (the paper: one)",
      f"best checkpoint on dev loss among {run.evals} evaluations "
      f"({'all' if run.eval_sentences is None else run.eval_sentences} dev sentences); heads "
      f"measured on the first {cfg.attention_sentences} dev sentences (the paper: 200)",
      "statistics: correct-mask models over real queries and real keys; original-mask models "
      "as the original computed them (every query and key of the padded batch)",
      "the original mask trains with padding visible; our padding id 0 is a dedicated token "
      "(the original padded with id 0, which was a real word)",
  ]
