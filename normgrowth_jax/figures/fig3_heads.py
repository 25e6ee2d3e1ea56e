"""Fig. 3's measurement: the saturated attention heads of a trained small LM.

Each run's best checkpoint on dev loss is evaluated on dev sentences at rho = ``run.rho`` and
in the exact limit; per layer and head we count the positions attended (weight > 1e-5) and the
fraction of queries whose attention is split, in two conventions: over real queries and real
keys (ours, for correct-mask models), and over every query and key of the padded batch (the
original's, for original-mask models).

Example (fractions of heads from synthetic statistics):
  >>> import numpy as np
  >>> heads = {"num_attended": np.array([1.0, 1.0, 41.0, 41.0]),
  ...          "split_fraction": np.array([0.0, 0.0, 0.98, 0.98])}
  >>> round(head_fractions(heads, 83)["argmax"], 2), round(head_fractions(heads, 83)["half"], 2)
  (0.5, 0.5)
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import saturation as sat
from normgrowth_jax import sinks
from normgrowth_jax.data import word_lm
from normgrowth_jax.figures import runs, small_lm_runs

ARGMAX_MAX = 1.5  # a head attending < 1.5 positions on average is an argmax head
SPLIT_LOW, SPLIT_HIGH = 0.01, 0.9


@functools.lru_cache(maxsize=None)
def _attention_fn(run: small_lm_runs.RunConfig, norm: str, mask: str):
  """jitted ``(params, tokens) -> (rho weights, limit weights)``, [layers, b, h, q, k] each,
  traced under the saturation measurements' float32-exact matmul precision."""
  m = small_lm_runs.run_model(run, norm, mask)

  @jax.jit
  def weights(params, tokens):
    real = tokens != word_lm.PAD_ID
    with jax.default_matmul_precision(sat.MATMUL_PRECISION):
      at_rho = m.apply({"params": sat.scale_params(params, run.rho)}, tokens, real)
      limit = m.apply({"params": params}, tokens, real, saturated=True)
    return jnp.stack(at_rho.attention_weights), jnp.stack(limit.attention_weights)

  return weights


def _future_weight(w: jax.Array, real: jax.Array) -> jax.Array:
  """Per layer and head: mean over real queries of the weight on later positions (and pad)."""
  length = w.shape[-1]
  later = jnp.triu(jnp.ones((length, length), bool), k=1)  # [q, k]: k > q
  per_query = jnp.sum(jnp.where(later, w, 0.0), axis=-1)  # [L, b, h, q]
  qm = real[None, :, None, :].astype(w.dtype)
  return jnp.sum(per_query * qm, axis=(1, 3)) / jnp.maximum(jnp.sum(qm, axis=(1, 3)), 1)


def head_statistics(weights: jax.Array, tokens: np.ndarray) -> dict:
  """Per layer and head, both conventions (see the module doc), as NumPy [layers, heads].

  ``real``: over real queries, counting real keys (ours); ``padded``: over every query and key
  of the padded batch (the original's). Plus ``future_weight`` (weight on later positions).
  """
  real = jnp.asarray(tokens) != word_lm.PAD_ID
  out = {
      "real": sat.attention_stats(weights, mask=real),
      "padded": sat.attention_stats(weights, mask=None),
  }
  out = {conv: {k: np.asarray(v) for k, v in s.items()} for conv, s in out.items()}
  out["future_weight"] = np.asarray(_future_weight(weights, real))
  return out


def analyse_run(
    run: small_lm_runs.RunConfig, norm: str, mask: str, run_dir: Path, tokens: np.ndarray
) -> dict:
  """Curves (eval, norms) and the best checkpoint's saturated head statistics of one run."""
  eval_rows = sinks.read_jsonl(str(Path(run_dir) / "eval.jsonl"))
  norm_rows = sinks.read_jsonl(str(Path(run_dir) / "norms.jsonl"))
  available = small_lm_runs.checkpoint_steps(run_dir)
  step = small_lm_runs.best_step(eval_rows, available)
  if runs.is_finished(run_dir):  # only the best (analysed, Fig. 2) and the last are needed
    small_lm_runs.prune_checkpoints(run_dir, {step, max(available)})
  params = small_lm_runs.restore_params(run_dir, step)
  w_rho, w_lim = _attention_fn(run, norm, mask)(params, jnp.asarray(tokens))
  heads = {"rho": head_statistics(w_rho, tokens), "limit": head_statistics(w_lim, tokens)}
  pick = lambda key: [r.get(key) for r in eval_rows]  # noqa: E731
  return {
      "run_dir": str(run_dir),
      "best_step": step,
      "eval": {
          k: pick(k)
          for k in (
              "step",
              "param_norm",
              "loss",
              "perplexity",
              "accuracy",
              "saturation_rho",
              "saturation_limit",
          )
      },
      # The hook's trace starts after the first update; the evaluator's step-0 norm leads it.
      "norm": {
          "step": [0] + [r["step"] for r in norm_rows],
          "param_norm": [eval_rows[0]["param_norm"]] + [r.get("param_norm") for r in norm_rows],
      },
      "heads": heads,
      "best": next(r for r in eval_rows if r["step"] == step),
      "init": next(r for r in eval_rows if r["step"] == 0),
  }


def convention(mask: str) -> str:
  """Which head statistics a variant is shown with: the original's for the original mask."""
  return "padded" if mask == "original_leaky" else "real"


def head_fractions(stats: dict, padded_length: int) -> dict:
  """Fractions of heads: argmax (< 1.5 positions), at half the padded length ((L-1)/2 +- 1),
  split probability < 0.01 and > 0.9. ``stats`` holds arrays over heads."""
  n = np.ravel(stats["num_attended"])
  s = np.ravel(stats["split_fraction"])
  half = (padded_length - 1) / 2
  return {
      "argmax": float(np.mean(n < ARGMAX_MAX)),
      "half": float(np.mean(np.abs(n - half) <= 1.0)),
      "split_low": float(np.mean(s < SPLIT_LOW)),
      "split_high": float(np.mean(s > SPLIT_HIGH)),
      "heads": int(n.size),
  }


def pooled(results: dict, norm: str, mask: str, kind: str = "rho") -> dict:
  """A variant's head statistics pooled over seeds (its own convention), flat arrays."""
  conv = convention(mask)
  per = [r["heads"][kind][conv] for r in results[norm, mask]]
  return {k: np.concatenate([np.ravel(p[k]) for p in per]) for k in per[0]}
