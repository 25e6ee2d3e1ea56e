"""How sharp attention is before any scaling: the logit scale of each head on real tokens.

Scaling every parameter by rho multiplies a layer's query and key maps by rho each, so the
scores of a layer whose input is normalised grow like rho^2 and its softmax hardens onto the
top-scoring key. How far the *unscaled* network already sits from that limit is set by how far
apart its scores are: the gap between a query's best and second-best visible key (``margin``)
and the spread of its visible scores (``spread``). These are the numbers saturation should
follow if it follows anything in the parameters; `qk_norms` gives the parameter-side bound,
||W_Q|| ||W_K|| per layer.

Scores come from `SmallLM` through the ``intermediates`` collection (`sown_scores`).

Example:
    >>> import jax.numpy as jnp
    >>> s = jnp.array([[[[2.0, 0.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]]])  # [b, h, q, k]
    >>> causal = jnp.tril(jnp.ones((3, 3), bool))
    >>> st = logit_stats((s,), visible=causal)
    >>> [round(float(v), 3) for v in st["margin"][0]], [round(float(v), 3) for v in st["spread"][0]]
    ([1.0], [0.333])
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_LAYER = re.compile(r"layers_(\d+)$")


def sown_scores(intermediates: Any) -> tuple:
  """The per-layer scores [batch, heads, q, k] that `SmallLM` sowed, in layer order.

  Args:
      intermediates: the ``intermediates`` collection of
          ``model.apply({"params": p}, tokens, mutable=["intermediates"])``.
  """
  layers = intermediates.get("encoder", {})
  found = {int(m.group(1)): v for k, v in layers.items() if (m := _LAYER.match(k))}
  if not found:
    raise ValueError(
        "no encoder/layers_{i}/attention/scores in the intermediates: apply "
        "the model with mutable=['intermediates'] and finite parameters."
    )
  return tuple(found[i]["attention"]["scores"][0] for i in sorted(found))


@jax.jit
def logit_stats(scores: Sequence[jax.Array], visible=None, query_mask=None) -> dict:
  """Per layer and head, over real queries: the top-1 minus top-2 margin and the spread.

  Args:
      scores: per-layer [batch, heads, q, k] arrays (or one [layers, batch, heads, q, k]).
      visible: bool broadcastable to [batch, heads, q, k]: the keys each query's softmax
          sees (e.g. causal and real keys); None = every key.
      query_mask: optional [batch, q] bool, True at real queries.

  Returns:
      dict of [layers, heads] float32 arrays: ``margin`` (mean over real queries that see at
      least two keys of best minus second-best score), ``spread`` (mean over real queries of
      the standard deviation of the visible scores) and ``queries`` (how many queries enter
      ``margin``).
  """
  s = jnp.stack(list(scores)) if isinstance(scores, (list, tuple)) else jnp.asarray(scores)
  s = s.astype(jnp.float32)  # [L, b, h, q, k]
  vis = (
      jnp.ones(s.shape[1:], bool)
      if visible is None
      else jnp.broadcast_to(jnp.asarray(visible, bool), s.shape[1:])
  )
  vis = jnp.broadcast_to(vis[None], s.shape)
  real = (
      jnp.ones(s.shape[1:4], bool)
      if query_mask is None
      else jnp.broadcast_to(jnp.asarray(query_mask, bool)[:, None, :], s.shape[1:4])
  )
  count = jnp.sum(vis, axis=-1)  # [L, b, h, q]
  top2 = jax.lax.top_k(jnp.where(vis, s, -jnp.inf), 2)[0]
  has_two = real[None] & (count >= 2)
  margin = jnp.where(has_two, top2[..., 0] - top2[..., 1], 0.0)
  n = jnp.maximum(count, 1)
  mean = jnp.sum(jnp.where(vis, s, 0.0), axis=-1, keepdims=True) / n[..., None]
  var = jnp.sum(jnp.where(vis, jnp.square(s - mean), 0.0), axis=-1) / n
  has_one = real[None] & (count >= 1)

  def over_queries(v, keep):
    k = keep.astype(jnp.float32)
    return jnp.sum(v * k, axis=(1, 3)) / jnp.maximum(jnp.sum(k, axis=(1, 3)), 1.0)

  return {
      "margin": over_queries(margin, has_two),
      "spread": over_queries(jnp.sqrt(var), has_one),
      "queries": jnp.sum(has_two, axis=(1, 3)),
  }


def qk_norms(params: Any) -> np.ndarray:
  """Per layer ||W_Q||_F * ||W_K||_F of a `SmallLM`'s parameters (float64 NumPy, [layers]).

  Example:
      >>> import numpy as np
      >>> p = {"encoder": {"layers_0": {"attention": {"query": {"kernel": np.eye(2)},
      ...                                             "key": {"kernel": 2 * np.eye(2)}}}}}
      >>> qk_norms(p).round(3).tolist()
      [4.0]
  """
  layers = params["encoder"]
  idx = sorted(int(m.group(1)) for k in layers if (m := _LAYER.match(k)))
  fro = lambda x: float(np.linalg.norm(np.asarray(x, np.float64)))  # noqa: E731
  return np.array(
      [
          fro(layers[f"layers_{i}"]["attention"]["query"]["kernel"])
          * fro(layers[f"layers_{i}"]["attention"]["key"]["kernel"])
          for i in idx
      ]
  )
