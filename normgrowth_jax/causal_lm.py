"""The embedded trainer's causal-LM path: the paper's small LMs (`SmallLM`) on word-level data.

Pieces, all gin-configurable (gin files ``import normgrowth_jax.causal_lm`` to register them):

* ``network.SmallLM`` / ``network.SmallLMConfig``: the model (T5X-style ``network`` names);
* ``causal_lm.loss_adapter``: ``adapter(model) -> (init_fn, loss_fn)`` for ``train.train``:
  mean next-token cross-entropy over the real pairs of ``decoder_target_tokens`` (padding 0
  masked), no z-loss;
* ``causal_lm.dev_evaluator``: ``evaluator(model) -> eval_fn(params) -> {name: float}`` for
  ``train.train``: the encoder norm (paper filter, ``param_norm``, also at step 0, which the
  hook's trace lacks), dev loss (nats/token), perplexity exp(loss), accuracy, and the
  saturation of the hidden states on the real dev tokens, cos(f(x; theta), f(x; rho theta))
  at rho = 1000 and cos(f, sf) in the exact limit, for the last layer (``saturation_rho``,
  ``saturation_limit``: the paper's number) and per layer (``.../layers_<i>``);
* data: ``word_lm.batch_iterator`` for tasks ``ng_word_lm_<corpus>`` (see
  ``normgrowth_jax.data.word_lm``).

Recipes: ``gin_configs/local/small_lm_bbc_adamw.gin`` (the paper's setting on BBC sentences),
``gin_configs/local/small_lm_ptb_adamw.gin`` (on PTB for users who have it);
``gin_configs/local/runs/causal_lm.gin`` lists the macros.

Example (the forward pieces, no trainer):
  >>> import jax, jax.numpy as jnp
  >>> from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig
  >>> model = SmallLM(SmallLMConfig(vocab_size=13, num_layers=1, d_model=8, d_ff=8,
  ...                               num_heads=2, max_len=6))
  >>> init_fn, loss_fn = loss_adapter(model)
  >>> batch = {"decoder_target_tokens": jnp.array([[5, 6, 7, 1, 0, 0]])}
  >>> params = init_fn(jax.random.PRNGKey(0), batch)
  >>> loss, aux = loss_fn(params, batch, jax.random.PRNGKey(1))
  >>> float(aux["weight_sum"])   # pairs 5->6, 6->7, 7->1
  3.0
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import norms
from normgrowth_jax import saturation as sat
from normgrowth_jax.data import word_lm
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

gin.external_configurable(SmallLMConfig, module="network")
gin.external_configurable(SmallLM, module="network")

TOKENS = "decoder_target_tokens"


def token_losses(logits, tokens, mask):
  """Per pair (position t predicts t + 1): nll [b, l-1], correct [b, l-1], weight [b, l-1].

  A pair counts when both tokens are real (``mask``); computed in float32.
  """
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  target = tokens[:, 1:]
  nll = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logp, axis=-1) == target).astype(jnp.float32)
  weight = (mask[:, 1:] & mask[:, :-1]).astype(jnp.float32)
  return nll, correct, weight


@gin.configurable(module="causal_lm")
def loss_adapter(model: SmallLM, pad_id: int = word_lm.PAD_ID):
  """``(init_fn(rng, batch) -> params, loss_fn(params, batch, rng) -> (loss, aux))``.

  The differentiated loss is the mean over real pairs (as the original's
  ``sequence_cross_entropy_with_logits``); ``aux`` holds the summed ``loss``, ``z_loss`` (0),
  ``accuracy`` and ``weight_sum`` the trainer logs. Dropout runs when the model has any.
  """
  deterministic = not model.config.has_dropout

  def init_fn(rng, batch):
    return model.init(rng, batch[TOKENS])["params"]

  def loss_fn(params, batch, rng):
    tokens = batch[TOKENS]
    mask = tokens != pad_id
    out = model.apply(
        {"params": params},
        tokens,
        mask,
        deterministic=deterministic,
        rngs=None if deterministic else {"dropout": rng},
    )
    nll, correct, weight = token_losses(out.logits, tokens, mask)
    weight_sum = jnp.sum(weight)
    denom = jnp.maximum(weight_sum, 1.0)
    loss_sum = jnp.sum(nll * weight)
    return loss_sum / denom, {
        "loss": loss_sum,
        "z_loss": jnp.zeros(()),
        "accuracy": jnp.sum(correct * weight) / denom,
        "weight_sum": weight_sum,
    }

  return init_fn, loss_fn


def _batch_sums(model: SmallLM, rho: float, saturation: bool, pad_id: int):
  """A jitted ``sums(params, tokens) -> dict`` of per-batch sums (loss, accuracy, cosines)."""

  @jax.jit
  def sums(params, tokens):
    mask = tokens != pad_id
    out = model.apply({"params": params}, tokens, mask)
    nll, correct, weight = token_losses(out.logits, tokens, mask)
    res = {
        "nll": jnp.sum(nll * weight),
        "correct": jnp.sum(correct * weight),
        "pairs": jnp.sum(weight),
        "tokens": jnp.sum(mask.astype(jnp.float32)),
    }
    if saturation:

      def f(p):
        return model.apply({"params": p}, tokens, mask).hidden_states[1:]

      def sf(p):
        return model.apply({"params": p}, tokens, mask, saturated=True).hidden_states[1:]

      # Means over this batch's real tokens, times their count: sums over tokens.
      res["cos_rho"] = sat.saturation_similarity(f, params, rho, mask) * res["tokens"]
      res["cos_limit"] = sat.limit_similarity(f, sf, params, mask) * res["tokens"]
    return res

  return sums


def evaluate(
    model: SmallLM,
    params,
    tokens: np.ndarray,
    batch_size: int = 64,
    rho: float = 1000.0,
    saturation: bool = True,
    pad_id: int = word_lm.PAD_ID,
    _sums: Optional[Callable] = None,
) -> dict:
  """Dev metrics of ``params`` on padded rows ``tokens`` [n, len] (see the module doc).

  The last batch is padded with all-padding rows (they count nowhere), so one compilation
  serves every batch.

  Returns:
    ``{"param_norm", "loss", "perplexity", "accuracy", "tokens", "saturation_rho",
    "saturation_limit", "saturation_rho/layers_<i>", "saturation_limit/layers_<i>"}``, floats
    (the saturation entries only with ``saturation=True``).
  """
  sums_fn = _sums or _batch_sums(model, float(rho), saturation, pad_id)
  tokens = np.asarray(tokens)
  n = len(tokens)
  if n == 0:
    raise ValueError("evaluate: no dev sentences.")
  total = None
  for start in range(0, n, batch_size):
    batch = tokens[start : start + batch_size]
    if len(batch) < batch_size:
      batch = np.concatenate(
          [batch, np.full((batch_size - len(batch), tokens.shape[1]), pad_id, tokens.dtype)]
      )
    s = jax.device_get(sums_fn(params, jnp.asarray(batch)))
    total = s if total is None else jax.tree.map(np.add, total, s)
  loss = float(total["nll"] / max(total["pairs"], 1.0))
  out = {
      "param_norm": float(norms.global_norm(params, "paper")),
      "loss": loss,
      "perplexity": float(np.exp(loss)),
      "accuracy": float(total["correct"] / max(total["pairs"], 1.0)),
      "tokens": float(total["tokens"]),
  }
  if saturation:
    for kind in ("rho", "limit"):
      per_layer = np.asarray(total[f"cos_{kind}"]) / max(total["tokens"], 1.0)
      out[f"saturation_{kind}"] = float(per_layer[-1])
      for i, v in enumerate(per_layer):
        out[f"saturation_{kind}/layers_{i}"] = float(v)
  return out


@gin.configurable(module="causal_lm")
def dev_evaluator(
    model: SmallLM,
    task_name: str = gin.REQUIRED,
    split: str = "validation",
    max_len: int = word_lm.DEFAULT_MAX_LEN,
    vocab_words: int = word_lm.DEFAULT_VOCAB_WORDS,
    max_sentences: Optional[int] = None,
    batch_size: int = 64,
    rho: float = 1000.0,
    saturation: bool = True,
    root=None,
):
  """``eval_fn(params) -> dict`` on the first ``max_sentences`` sentences of ``split``.

  Args:
    model: the trained SmallLM (``train.train`` passes it).
    task_name: ``ng_word_lm_<corpus>`` (``%MIXTURE_OR_TASK_NAME``).
    split: the dev split ("validation").
    max_len, vocab_words: as the training data (``word_lm.load``).
    max_sentences: evaluate on this many sentences (None: all), in corpus order.
    batch_size: sentences per compiled batch.
    rho: the saturation scale (the paper: 1000).
    saturation: also measure the saturation (three forward passes instead of one).
  """
  data = word_lm.load(word_lm.corpus_of_task(task_name), vocab_words, max_len, root)
  tokens = data.split(split)[:max_sentences]
  sums = _batch_sums(model, float(rho), saturation, word_lm.PAD_ID)
  return functools.partial(
      evaluate,
      model,
      tokens=tokens,
      batch_size=batch_size,
      rho=rho,
      saturation=saturation,
      _sums=sums,
  )
