"""Fig. 3's small LMs trained for the paper's 5 epochs: does saturation follow the norm?

The paper trains its small LMs for 5 epochs and reports saturation ~1.00 (rho = 1000) for every
one, as the consequence of norm growth. Fig. 3's quick profile trains 0.22 epoch. This figure
(beyond the paper; ``make fig3-five-epochs``) trains the same four variants (pre-/post-norm x
correct/original mask) for 5 epochs with 20 evaluations and measures at every checkpoint:

* saturation per layer, at rho = 1000 and in the exact limit (the trainer's evaluator);
* the encoder norm ||theta|| (the paper's global norm) and per layer ||W_Q|| ||W_K||;
* the logit scale on dev tokens (`normgrowth_jax.attention_logits`): per head the gap between a
  query's best and second-best visible score, the quantity rho amplifies into a hard softmax;
* what the heads attend to (weight on the first position, on the previous one, on the query
  itself, and for the original mask on later positions and padding).

and asks which of these saturation follows (Spearman rank correlation over the checkpoints),
the dev loss included (saturation that is highest near the unigram solution rises with it).

Example (rank correlation of a rising and a falling series):
  >>> round(spearman([1, 2, 3, 4], [0.1, 0.5, 0.4, 0.9]), 2), spearman([1, 2, 3], [3, 2, 1])
  (0.8, -1.0)
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from normgrowth_jax import attention_logits as al
from normgrowth_jax import sinks
from normgrowth_jax.data import word_lm
from normgrowth_jax.figures import core, fig3_long_plot, paper, small_lm_runs
from normgrowth_jax.figures.verdict import check
from normgrowth_jax.models.small_lm import causal_attention_mask

NAME = "fig3_long"
TITLE = "Small LMs at the paper's 5 epochs: saturation against the parameter and logit norms"
FOLLOWS = 0.8  # a Spearman correlation at least this high: saturation "follows" the quantity
COLORS = {
    ("prenorm_paper", "causal"): "C0",
    ("postnorm", "causal"): "C1",
    ("prenorm_paper", "original_leaky"): "C2",
    ("postnorm", "original_leaky"): "C3",
}
TARGETS = {
    "first": "first position",
    "previous": "previous position",
    "self": "itself",
    "later": "later positions and padding",
}


@dataclasses.dataclass(frozen=True)
class Fig3LongConfig:
  """``run``: the runs (Fig. 3's config: model, data, epochs, evaluations, seeds, variants);
  ``sentences``: the dev sentences the logit scale and attention targets are measured on."""

  run: small_lm_runs.RunConfig
  sentences: int = 200


CONFIGS = {
    "smoke": Fig3LongConfig(
        dataclasses.replace(
            small_lm_runs.PROFILES["smoke"], steps=24, evals=3, masks=("causal", "original_leaky")
        ),
        16,
    ),
    "quick": Fig3LongConfig(
        dataclasses.replace(
            small_lm_runs.PROFILES["quick"],
            steps=None,
            epochs=5.0,
            evals=20,
            seeds=(0, 1),
            track_every=10,
        )
    ),
    "full": Fig3LongConfig(
        dataclasses.replace(small_lm_runs.PROFILES["full"], evals=20, seeds=(0,))
    ),
}


def work(cfg: Fig3LongConfig) -> int:
  return len(
      small_lm_runs.keys(cfg.run)
  )  # one unit per run measured; training counted from run_specs


def spearman(x, y) -> float:
  """Spearman's rank correlation of two series (ties averaged)."""
  return float(scipy.stats.spearmanr(np.asarray(x), np.asarray(y)).statistic)


# ----------------------------------------------------------------------------- measure


@functools.lru_cache(maxsize=None)
def _scores_fn(run: small_lm_runs.RunConfig, norm: str, mask: str):
  """jitted ``(params, tokens) -> (scores, weights)`` at theta, [layers, b, h, q, k] each."""
  m = small_lm_runs.run_model(run, norm, mask)

  @jax.jit
  def apply(params, tokens):
    out, state = m.apply(
        {"params": params}, tokens, tokens != word_lm.PAD_ID, mutable=["intermediates"]
    )
    return jnp.stack(al.sown_scores(state["intermediates"])), jnp.stack(out.attention_weights)

  return apply


def attention_targets(weights: jax.Array, real: jax.Array) -> dict:
  """Per layer, the mean over heads and real queries of the weight on each kind of key.

  Example:
    >>> w = jnp.array([[[[[1.0, 0.0], [0.25, 0.75]]]]])  # [L, b, h, q, k]
    >>> {k: round(float(v[0]), 3) for k, v in attention_targets(w, jnp.ones((1, 2), bool)).items()}
    {'first': 0.625, 'previous': 0.125, 'self': 0.875, 'later': 0.0}
  """
  length = weights.shape[-1]
  pos = jnp.arange(length)
  on = {
      "first": pos[None, :] == 0,
      "previous": pos[None, :] == pos[:, None] - 1,
      "self": pos[None, :] == pos[:, None],
      "later": pos[None, :] > pos[:, None],
  }
  qm = real[None, :, None, :].astype(weights.dtype)  # [1, b, 1, q]
  n = jnp.maximum(jnp.sum(qm) * weights.shape[2], 1.0)
  return {
      k: jnp.sum(jnp.sum(jnp.where(m, weights, 0.0), axis=-1) * qm, axis=(1, 2, 3)) / n
      for k, m in on.items()
  }


def measure_checkpoint(run: small_lm_runs.RunConfig, norm: str, mask: str, params, tokens) -> dict:
  """The logit scale, ||W_Q|| ||W_K|| and attention targets of one set of parameters."""
  tokens = jnp.asarray(tokens)
  real = tokens != word_lm.PAD_ID
  scores, weights = _scores_fn(run, norm, mask)(params, tokens)
  visible = causal_attention_mask(real) if mask == "causal" else None
  stats = al.logit_stats(scores, visible, real)
  return {
      "margin": np.asarray(stats["margin"]).mean(axis=1),  # [layers], mean over heads
      "spread": np.asarray(stats["spread"]).mean(axis=1),
      "qk_norm": al.qk_norms(params),
      "targets": {k: np.asarray(v) for k, v in attention_targets(weights, real).items()},
  }


def measure_run(
    run: small_lm_runs.RunConfig, norm: str, mask: str, seed: int, run_dir: Path, tokens
) -> dict:
  """Every evaluated checkpoint of a run (and its initialisation), as per-step lists."""
  evals = {r["step"]: r for r in sinks.read_jsonl(str(Path(run_dir) / "eval.jsonl"))}
  steps = [0] + [s for s in small_lm_runs.checkpoint_steps(run_dir) if s in evals and s > 0]
  layers = [f"layers_{i}" for i in range(run.arch.num_layers)]
  rows = []
  for s in steps:
    params = (
        small_lm_runs.init_params(run, norm, mask, seed)
        if s == 0
        else small_lm_runs.restore_params(run_dir, s)
    )
    m = measure_checkpoint(run, norm, mask, params, tokens)
    e = evals[s]
    rows.append(
        {
            "step": s,
            "param_norm": e["param_norm"],
            "loss": e["loss"],
            "saturation_rho": [e[f"saturation_rho/{k}"] for k in layers],
            "saturation_limit": [e[f"saturation_limit/{k}"] for k in layers],
            **m,
        }
    )
  return {
      "run_dir": str(run_dir),
      "seed": seed,
      **{k: [r[k] for r in rows] for k in rows[0] if k != "targets"},
      "targets": {k: [r["targets"][k] for r in rows] for k in TARGETS},
  }


def summarise(r: dict) -> dict:
  """One run's headline numbers: last-layer saturation (init, peak, end), growth, correlations."""
  sat = np.asarray(r["saturation_rho"])[:, -1]
  peak = int(np.argmax(sat))
  norm = np.asarray(r["param_norm"])
  qk = np.asarray(r["qk_norm"]).mean(axis=1)
  margin = np.asarray(r["margin"])[:, -1]
  return {
      "init": float(sat[0]),
      "peak": float(sat[peak]),
      "peak_step": r["step"][peak],
      "end": float(sat[-1]),
      "end_limit": float(np.asarray(r["saturation_limit"])[-1, -1]),
      "growth": float(norm[-1] / norm[0]),
      "loss_end": float(r["loss"][-1]),
      "rho_norm": spearman(sat, norm),
      "rho_qk": spearman(sat, qk),
      "rho_margin": spearman(sat, margin),
      "rho_loss": spearman(sat[1:], r["loss"][1:]),
      "margin": (float(margin[0]), float(margin[peak]), float(margin[-1])),
      "targets_peak": {k: float(np.asarray(v)[peak, -1]) for k, v in r["targets"].items()},
  }


# ----------------------------------------------------------------------------- judge


def judge(summary: dict) -> list:
  """The paper's claims at 5 epochs, judged on seed means per variant."""
  lo, _ = paper.SMALL_LM["saturation_trained"]
  mean = lambda k, key: float(np.mean([s[key] for s in summary[k]]))  # noqa: E731
  ends = {k: mean(k, "end") for k in summary}
  growth = {k: mean(k, "growth") for k in summary}
  follows = {k: mean(k, "rho_norm") for k in summary}
  name = lambda k: small_lm_runs.variant_label(*k)  # noqa: E731
  fmt = lambda d: "; ".join(f"{name(k)} {v:.3f}" for k, v in d.items())  # noqa: E731
  return [
      check(
          "every model grows in norm over 5 epochs (final / initial > 1, seed means)",
          all(v > 1 for v in growth.values()),
          fmt(growth),
          "every model grows",
      ),
      check(
          f"every model saturated after 5 epochs: last layer at ρ = 1000 >= {lo} (seed means)",
          all(v >= lo for v in ends.values()),
          fmt(ends),
          f"{lo}-1.00",
      ),
      check(
          f"saturation follows the encoder norm: Spearman over the checkpoints >= {FOLLOWS} "
          "in every variant (seed means)",
          all(v >= FOLLOWS for v in follows.values()),
          fmt(follows),
          "norm growth -> saturation",
      ),
  ]


# ----------------------------------------------------------------------------- plot


# ----------------------------------------------------------------------------- make


def _rows(summary: dict) -> list:
  lo, hi = paper.SMALL_LM["saturation_trained"]
  rows = []
  for k, v in summary.items():
    label = small_lm_runs.variant_label(*k)
    seeds = lambda key: [s[key] for s in v]  # noqa: E731
    rows += [
        core.Row.of(
            f"{label}: saturation ρ = 1000, last layer, after 5 epochs", f"{lo}-{hi}", seeds("end")
        ),
        core.Row.of(f"{label}: saturation, exact limit, after 5 epochs", None, seeds("end_limit")),
        core.Row.of(f"{label}: saturation at initialisation", None, seeds("init")),
        core.Row(
            f"{label}: saturation peak (its step, seed 0)",
            None,
            f"{np.mean([s['peak'] for s in v]):.3f} (step {v[0]['peak_step']})",
        ),
        core.Row.of(f"{label}: encoder norm, final / initial", "grows", seeds("growth")),
        core.Row.of(f"{label}: dev loss after 5 epochs", None, seeds("loss_end")),
        core.Row.of(f"{label}: Spearman(saturation, ||θ||)", None, seeds("rho_norm")),
        core.Row.of(f"{label}: Spearman(saturation, mean ||W_Q|| ||W_K||)", None, seeds("rho_qk")),
        core.Row.of(
            f"{label}: Spearman(saturation, last layer's logit margin)", None, seeds("rho_margin")
        ),
        core.Row.of(
            f"{label}: Spearman(saturation, dev loss), trained checkpoints", None, seeds("rho_loss")
        ),
        core.Row(
            f"{label}: last layer's logit margin: init / at the peak / end (seed 0)",
            None,
            " / ".join(f"{m:.3g}" for m in v[0]["margin"]),
        ),
        core.Row(
            f"{label}: at the saturation peak, last layer's weight on first / previous / "
            "itself / later (seed 0)",
            None,
            " / ".join(f"{v[0]['targets_peak'][t]:.2f}" for t in TARGETS),
        ),
    ]
  return rows


def run_specs(ctx, cfg: Fig3LongConfig) -> list:
  """Fig. 3's runs at the paper's length."""
  return small_lm_runs.specs(cfg.run)


def make(ctx: core.FigureContext, cfg: Fig3LongConfig) -> core.FigureResult:
  run = cfg.run
  data = small_lm_runs.load_data(run)
  steps = small_lm_runs.train_steps(run, data)
  per_epoch = word_lm.steps_per_epoch(len(data.split("train")), run.batch_size)
  run_dirs = small_lm_runs.train_all(ctx, run, steps)
  tokens = data.split("validation")[: cfg.sentences]
  results = {}
  for (norm, mask, seed), d in run_dirs.items():
    ctx.advance(0, f"{NAME}: checkpoints of {small_lm_runs.run_name(norm, mask, seed)}")
    results.setdefault((norm, mask), []).append(measure_run(run, norm, mask, seed, d, tokens))
    ctx.advance(1, None)
  summary = {k: [summarise(r) for r in v] for k, v in results.items()}
  files = fig3_long_plot.plot(ctx.path(NAME), cfg, results, per_epoch, TARGETS)
  files.append(
      core.write_numbers(
          ctx,
          NAME,
          {
              "config": dataclasses.asdict(cfg),
              "steps": steps,
              "steps_per_epoch": per_epoch,
              "runs": {f"{n}/{m}": v for (n, m), v in results.items()},
              "summary": {f"{n}/{m}": v for (n, m), v in summary.items()},
              "paper": paper.SMALL_LM,
          },
      )
  )
  setup = [
      f"model: SmallLM {run.arch.num_layers} layers, d_model {run.arch.d_model}, FF {run.arch.d_ff}, "
      f"{run.arch.num_heads} heads; the paper: 12 x 768, FF 512, 12 heads",
      f"data: word-level sentences of {run.corpus!r} ({run.vocab_words} words, padded length "
      f"{run.max_len}); the paper: PTB",
      f"training: AdamW lr {run.learning_rate:g}, wd {run.weight_decay:g}, batch "
      f"{run.batch_size}, {steps} steps = {steps / per_epoch:.2f} epochs, {run.evals} "
      f"evaluations ({run.eval_sentences} dev sentences), seeds {list(run.seeds)}",
      f"logit margin and attention targets on the first {cfg.sentences} dev sentences, real "
      "queries; the original mask's softmax sees every key (future and padding included)",
  ]
  notes = [
      f"{small_lm_runs.variant_label(*k)}, seed {r['seed']}: saturation peaks at step "
      f"{s['peak_step']} ({s['peak_step'] / per_epoch:.2f} epoch) at {s['peak']:.3f} and "
      f"ends at {s['end']:.3f} while ||θ|| grows x{s['growth']:.2f}"
      for k, v in summary.items()
      for s, r in zip(v, results[k])
  ]
  return core.FigureResult(NAME, TITLE, files, _rows(summary), judge(summary), setup, notes)
