"""How close is a network to its saturated limit sf(x; theta) = lim_{rho->inf} f(x; rho*theta)?

Everything takes a function of the parameters, `fn(params) -> outputs`, where the outputs are a
single array or a pytree (typically the tuple of per-layer hidden states, each [batch, len, dim]).
Similarities are per-token cosines over the last axis, averaged over real tokens (`mask`,
[batch, len], True = real), one value per output leaf (a scalar for a single array).

* `scale_params(params, rho, where)`: rho * theta on all or a subset of the parameters.
* `saturation_similarity(fn, params, rho)`: cos(f(theta), f(rho*theta)) (paper: rho = 1000).
* `limit_similarity(fn, fn_limit, params)`: cos(f(theta), sf(theta)) with the exact limit (see
  `normgrowth_jax.asymptotic`; our models take `saturated=True`).
* `rho_sweep(fn, params, rhos)`: the finite-rho similarity for many rho in ONE compiled call.
* `attention_stats`, `attention_histogram`: positions attended per head (paper Fig. 3).
* `homogeneity_curve`, `homogeneity_degree`: cos(f(c*theta), sf(theta)) over c (Fig. 4) and the
  degree k in ||f(c*theta)|| ~ c^k.

Every function is jitted with `fn` as a static argument: pass the same function object again to
reuse the compiled computation (a fresh lambda per call recompiles).

Every function that evaluates the model traces it under float32-exact matmul precision
(`matmul_precision="float32"`, i.e. `jax.default_matmul_precision("float32")`, HIGHEST in the
lowered program), also when called inside the caller's own `jax.jit`: on NVIDIA GPUs since Ampere
float32 products default to TF32 (10-bit mantissa), an error that rho = 1000 amplifies into every
softmax. `matmul_precision=None` keeps the backend's default. Training is not affected.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from normgrowth_jax import saturation as sat
    >>> params = {"w1": jax.random.normal(jax.random.key(0), (4, 8)),
    ...           "w2": jax.random.normal(jax.random.key(1), (8, 8))}
    >>> x = jax.random.normal(jax.random.key(2), (2, 3, 4))
    >>> fn = lambda p: (jax.nn.relu(x @ p["w1"]) @ p["w2"],)   # biasless: 2-homogeneous
    >>> [round(float(v), 4) for v in sat.saturation_similarity(fn, params, rho=1000.0)]
    [1.0]
    >>> [round(float(k), 3) for k in sat.homogeneity_degree(fn, params, jnp.linspace(1.0, 10.0, 5))]
    [2.0]
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import norms

PyTree = Any

MATMUL_PRECISION = "float32"
"""The default `matmul_precision` of every measurement (a `jax.default_matmul_precision` name)."""


def _precision_scope(matmul_precision):
  """The context a measurement traces the model in; None keeps the backend's default."""
  if matmul_precision is None:
    return contextlib.nullcontext()
  return jax.default_matmul_precision(matmul_precision)


# ----------------------------------------------------------------------------- input checks


def _is_traced(x) -> bool:
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _check_scales(func: str, name: str, value, *, min_count: int = 1, distinct: int = 1) -> None:
  """Raises ValueError naming ``func`` and ``name`` unless every concrete value is finite
  and > 0 (a traced value is left to the in-graph guard, see `_valid_scale`)."""
  if _is_traced(value):
    return
  try:
    arr = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise TypeError(
        f"{func}: {name} must be a real number or array of them, got "
        f"{type(value).__name__} ({e})."
    ) from None
  if arr.size < min_count:
    raise ValueError(f"{func}: {name} needs at least {min_count} value(s), got {arr.size}.")
  bad = arr[~(np.isfinite(arr) & (arr > 0))]
  if bad.size:
    raise ValueError(
        f"{func}: {name} must be finite and > 0, got {bad.ravel()[:5].tolist()}: "
        "rho = 0 or rho < 0 is not a scaling towards saturation, and NaN/inf "
        "give no number. The paper uses rho = 1000."
    )
  if distinct > 1 and np.unique(arr).size < distinct:
    raise ValueError(
        f"{func}: {name} needs at least {distinct} distinct values to fit a "
        f"slope, got {np.unique(arr).tolist()}."
    )


def _valid_scale(rho) -> jax.Array:
  """In-graph guard for a traced scale: True where rho is finite and > 0."""
  rho = jnp.asarray(rho)
  return jnp.isfinite(rho) & (rho > 0)


# ----------------------------------------------------------------------------- scaling


def _where_mask(params: PyTree, where) -> PyTree:
  """A pytree of Python bools, True where a leaf is scaled."""
  if where is None or isinstance(where, str) or callable(where):
    pred = norms.resolve_param_filter(where)
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(pred(norms.path_str(p), x)), params)
  try:
    return jax.tree_util.tree_map(lambda _, m: bool(m), params, where)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "scale_params: `where` must be None, a filter name ('all', 'paper'), a callable "
        f"(path: str, array) -> bool, or a pytree of bools shaped like params ({e})."
    ) from e


def scale_params(params: PyTree, rho, where=None) -> PyTree:
  """Multiplies parameters by rho (the paper scales every parameter: `where=None`).

  Args:
      params: parameter pytree.
      rho: scalar (Python or traced, so it can be vmapped).
      where: which leaves to scale: None (all), a `norms` filter name, a callable
          `(path, array) -> bool` on "/"-joined paths such as "encoder/layer_0/query/kernel",
          or a pytree of bools with the structure of params. Integer leaves are never scaled.

  Returns:
      A pytree like params.

  Example:
      >>> scale_params({"a": jnp.ones(2), "b": jnp.ones(2)}, 3.0, where=lambda p, x: p == "a")
      {'a': Array([3., 3.], dtype=float32), 'b': Array([1., 1.], dtype=float32)}
  """
  mask = _where_mask(params, where)

  def scale(x, m):
    x = jnp.asarray(x)
    if not m or not jnp.issubdtype(x.dtype, jnp.inexact):
      return x
    return x * jnp.asarray(rho, x.dtype)

  return jax.tree_util.tree_map(scale, params, mask)


# ----------------------------------------------------------------------------- similarity


def _unit(x: jax.Array) -> jax.Array:
  """x / ||x|| over the last axis in float32, overflow-safe; zero vectors stay zero."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  m = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
  x = x / jnp.where(m > 0, m, 1)
  n = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.where(n > 0, n, 1)


def _masked_mean(v: jax.Array, mask) -> jax.Array:
  """Mean of v over all axes, restricted to mask (broadcast) if given."""
  if mask is None:
    return jnp.mean(v)
  m = jnp.broadcast_to(mask, v.shape).astype(v.dtype)
  return jnp.sum(v * m) / jnp.maximum(jnp.sum(m), 1)


def _token_cosine(a: jax.Array, b: jax.Array, mask) -> jax.Array:
  """Per-token cosine over the last axis, averaged over real tokens."""
  if a.shape != b.shape:
    raise ValueError(f"Compared outputs differ in shape: {a.shape} vs {b.shape}.")
  if mask is not None and tuple(jnp.shape(mask)) != tuple(a.shape[:-1]):
    raise ValueError(
        f"mask shape {jnp.shape(mask)} does not match the token axes {a.shape[:-1]} of an "
        f"output of shape {a.shape}; return [batch, len, dim] arrays from fn or pass mask=None."
    )
  cos = jnp.sum(_unit(a) * _unit(b), axis=-1)
  return _masked_mean(cos, mask)


def _similarities(out_a: PyTree, out_b: PyTree, mask) -> jax.Array:
  """One similarity per output leaf: a scalar for a single array, else [n_leaves]."""
  if isinstance(out_a, jax.Array):
    return _token_cosine(out_a, out_b, mask)
  leaves_a, leaves_b = jax.tree_util.tree_leaves(out_a), jax.tree_util.tree_leaves(out_b)
  if len(leaves_a) != len(leaves_b):
    raise ValueError(f"Compared outputs have {len(leaves_a)} vs {len(leaves_b)} leaves.")
  return jnp.stack([_token_cosine(a, b, mask) for a, b in zip(leaves_a, leaves_b)])


@functools.partial(jax.jit, static_argnames=("fn", "where"))
def _saturation_similarity(fn, params, rho, mask, where):
  sims = _similarities(fn(params), fn(scale_params(params, rho, where)), mask)
  return jnp.where(_valid_scale(rho), sims, jnp.nan)


def saturation_similarity(
    fn: Callable,
    params: PyTree,
    rho=1000.0,
    mask=None,
    where=None,
    matmul_precision=MATMUL_PRECISION,
) -> jax.Array:
  """cos(f(theta), f(rho*theta)) per token, averaged over real tokens, per output leaf.

  Args:
      fn: params -> array or pytree of [batch, len, dim] arrays (e.g. per-layer hidden states).
      params: parameter pytree.
      rho: the scale, finite and > 0 (traced: changing it does not recompile).
      mask: optional [batch, len] bool, True at real tokens.
      where: which parameters to scale (see `scale_params`); must be hashable (a name or a
          function) since it is static.
      matmul_precision: `jax.default_matmul_precision` the model is traced under ("float32":
          exact float32 products); None keeps the backend's default (TF32 on NVIDIA GPUs).

  Returns:
      A scalar (single-array output) or [n_leaves] array of mean cosines.

  Raises:
      ValueError: a concrete rho that is not finite and > 0 (rho = 0 would give 0, rho < 0
          -1: numbers that look like results). A *traced* rho (inside the caller's jit or
          vmap) cannot be checked before the computation; the result is then NaN wherever
          rho is not finite and > 0, never a plausible cosine.
  """
  _check_scales("saturation_similarity", "rho", rho)
  with _precision_scope(matmul_precision):
    return _saturation_similarity(fn, params, rho, mask, where)


@functools.partial(jax.jit, static_argnames=("fn_finite", "fn_limit"))
def _limit_similarity(fn_finite, fn_limit, params, mask):
  return _similarities(fn_finite(params), fn_limit(params), mask)


def limit_similarity(
    fn_finite: Callable,
    fn_limit: Callable,
    params: PyTree,
    mask=None,
    matmul_precision=MATMUL_PRECISION,
) -> jax.Array:
  """cos(f(theta), sf(theta)) with the EXACT limit: fn_limit returns leading coefficients.

  Cosines are scale-free, so sf's leading coefficient (the direction of f(rho*theta) as
  rho -> inf) is compared directly. Same output convention and `matmul_precision` as
  `saturation_similarity` (the limit's hard-attention ties are decided on these products).
  """
  with _precision_scope(matmul_precision):
    return _limit_similarity(fn_finite, fn_limit, params, mask)


@functools.partial(jax.jit, static_argnames=("fn", "where", "batch_size"))
def _rho_sweep(fn, params, rhos, mask, where, batch_size):
  ref = fn(params)

  def one(rho):
    sims = _similarities(ref, fn(scale_params(params, rho, where)), mask)
    return jnp.where(_valid_scale(rho), sims, jnp.nan)

  return jax.lax.map(one, jnp.asarray(rhos), batch_size=batch_size or len(rhos))


def rho_sweep(
    fn: Callable,
    params: PyTree,
    rhos,
    mask=None,
    where=None,
    batch_size=None,
    matmul_precision=MATMUL_PRECISION,
) -> jax.Array:
  """`saturation_similarity` for every rho in `rhos`, vectorised in one compiled call.

  f(theta) is computed once; f(rho*theta) is vmapped over rho. `batch_size` (static) bounds
  memory: rho values are then processed `batch_size` at a time inside the same call.

  Args:
      rhos: 1-D, at least one value, each finite and > 0 (see `saturation_similarity` for a
          traced rhos: NaN where a value is invalid).
      batch_size: None (all at once) or an int >= 1.
      matmul_precision: as in `saturation_similarity`.

  Returns:
      [n_rhos] (single-array output) or [n_rhos, n_leaves].
  """
  if np.ndim(rhos) != 1:
    raise ValueError(f"rho_sweep: rhos must be 1-D, got shape {np.shape(rhos)}.")
  _check_scales("rho_sweep", "rhos", rhos)
  if batch_size is not None and (
      isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
  ):
    raise ValueError(f"rho_sweep: batch_size must be None or an int >= 1, got {batch_size!r}.")
  with _precision_scope(matmul_precision):
    return _rho_sweep(fn, params, rhos, mask, where, batch_size)


# ----------------------------------------------------------------------------- attention


def _stack_layers(attention_weights) -> jax.Array:
  if isinstance(attention_weights, (list, tuple)):
    shapes = {tuple(w.shape) for w in attention_weights}
    if len(shapes) != 1:
      raise ValueError(f"attention layers differ in shape {sorted(shapes)}; pass them separately.")
    return jnp.stack(attention_weights)
  w = jnp.asarray(attention_weights)
  if w.ndim == 4:
    return w[None]
  if w.ndim != 5:
    raise ValueError(
        f"attention weights must be [batch, heads, q, k] per layer, got shape {w.shape}."
    )
  return w


@jax.jit
def attention_stats(attention_weights, mask=None, threshold=1e-5, key_mask=None) -> dict:
  """Per layer and head: how many positions each real query attends to (paper Fig. 3).

  The weights are the caller's: compute them at rho * theta or in the limit under
  `jax.default_matmul_precision(MATMUL_PRECISION)`, as `figures.fig3` does.

  Args:
      attention_weights: tuple of per-layer [batch, heads, q_len, k_len] arrays (or one array
          [layers, batch, heads, q_len, k_len]); usually the saturated model's.
      mask: optional [batch, q_len] bool, True at real (non-padding) queries.
      threshold: a position counts as attended when its weight exceeds this.
      key_mask: optional [batch, k_len] bool of real keys; defaults to `mask` when
          q_len == k_len (self-attention), else all keys.

  Returns:
      dict of [layers, heads] arrays, statistics over real queries:
      "num_attended" (mean # positions with weight > threshold, padding keys excluded),
      "num_attended_std", "split_fraction" (fraction of queries attending to > 1 position),
      "entropy" (mean -sum_k w log w, nats).
  """
  w = _stack_layers(attention_weights).astype(jnp.float32)  # [L, b, h, q, k]
  _, _, _, q_len, k_len = w.shape
  if key_mask is None and mask is not None and q_len == k_len:
    key_mask = mask
  above = w > threshold
  if key_mask is not None:
    above = above & jnp.asarray(key_mask, bool)[None, :, None, None, :]
  counts = jnp.sum(above, axis=-1).astype(jnp.float32)  # [L, b, h, q]
  ent = -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1)), 0), axis=-1)
  qm = jnp.ones(counts.shape, jnp.float32)
  if mask is not None:
    qm = qm * jnp.asarray(mask, jnp.float32)[None, :, None, :]
  n = jnp.maximum(jnp.sum(qm, axis=(1, 3)), 1)  # [L, h]

  def mean(v):
    return jnp.sum(v * qm, axis=(1, 3)) / n

  mu = mean(counts)
  return {
      "num_attended": mu,
      "num_attended_std": jnp.sqrt(mean(jnp.square(counts - mu[:, None, :, None]))),
      "split_fraction": mean((counts > 1).astype(jnp.float32)),
      "entropy": mean(ent),
  }


def attention_histogram(stats, bins=20, range=None):  # noqa: A002 (numpy's name)
  """Histogram over all heads of "# positions attended" (paper Fig. 3).

  Args:
      stats: the dict from `attention_stats` (uses "num_attended") or a [layers, heads] array.
      bins: number of bins (int) or bin edges.
      range: (lo, hi) for int bins; default the data's min and max.

  Returns:
      (counts [n_bins], edges [n_bins + 1]), as `jnp.histogram`.
  """
  if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool) and bins < 1:
    raise ValueError(f"attention_histogram: bins must be >= 1, got {bins}.")
  if range is not None and not (np.all(np.isfinite(range)) and range[0] < range[1]):
    raise ValueError(
        f"attention_histogram: range must be finite (lo, hi) with lo < hi, " f"got {range}."
    )
  values = stats["num_attended"] if isinstance(stats, dict) else stats
  return jnp.histogram(jnp.ravel(values), bins=bins, range=range)


# ----------------------------------------------------------------------------- homogeneity


@functools.partial(jax.jit, static_argnames=("fn", "fn_limit"))
def _homogeneity_curve(fn, fn_limit, params, cs, mask):
  lim = fn_limit(params)

  def one(c):
    return jnp.where(
        _valid_scale(c), _similarities(fn(scale_params(params, c)), lim, mask), jnp.nan
    )

  return jax.vmap(one)(jnp.asarray(cs))


def homogeneity_curve(
    fn: Callable,
    fn_limit: Callable,
    params: PyTree,
    cs,
    mask=None,
    matmul_precision=MATMUL_PRECISION,
) -> jax.Array:
  """cos(f(x; c*theta), sf(x; theta)) for each c (paper Fig. 4), vectorised over c.

  Args:
      cs: 1-D scales, each finite and > 0 (traced: NaN where a value is invalid).
      matmul_precision: as in `saturation_similarity`.

  Returns:
      [n_cs] (single-array output) or [n_cs, n_leaves].
  """
  if np.ndim(cs) != 1:
    raise ValueError(f"homogeneity_curve: cs must be 1-D, got shape {np.shape(cs)}.")
  _check_scales("homogeneity_curve", "cs", cs)
  with _precision_scope(matmul_precision):
    return _homogeneity_curve(fn, fn_limit, params, cs, mask)


def _log_norm(x: jax.Array) -> jax.Array:
  """log ||x|| over all entries, overflow-safe."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  m = jnp.max(jnp.abs(x))
  m = jnp.where(m > 0, m, 1)
  return jnp.log(m) + 0.5 * jnp.log(jnp.sum(jnp.square(x / m)))


def homogeneity_degree(
    fn: Callable, params: PyTree, cs, matmul_precision=MATMUL_PRECISION
) -> jax.Array:
  """Least-squares slope k of log ||f(c*theta)|| against log c, per output leaf.

  A k-homogeneous output gives exactly k (e.g. layer l of a biasless ReLU MLP: k = l). Use cs
  large enough for the leading behaviour (e.g. 1..10 at init, as in Fig. 4).

  Args:
      cs: 1-D, at least 2 distinct values, each finite and > 0 (a traced cs is not checked:
          log c of an invalid c is NaN, and so is the slope).
      matmul_precision: as in `saturation_similarity`.

  Returns:
      A scalar (single-array output) or [n_leaves].
  """
  if np.ndim(cs) != 1:
    raise ValueError(f"homogeneity_degree: cs must be 1-D, got shape {np.shape(cs)}.")
  _check_scales("homogeneity_degree", "cs", cs, min_count=2, distinct=2)
  with _precision_scope(matmul_precision):
    return _homogeneity_degree(fn, params, cs)


@functools.partial(jax.jit, static_argnames=("fn",))
def _homogeneity_degree(fn, params, cs):
  log_c = jnp.log(jnp.asarray(cs, jnp.float32))

  def log_norms(c):
    out = fn(scale_params(params, c))
    if isinstance(out, jax.Array):
      return _log_norm(out)
    return jnp.stack([_log_norm(x) for x in jax.tree_util.tree_leaves(out)])

  log_n = jax.vmap(log_norms)(jnp.asarray(cs))  # [n_cs] or [n_cs, n_leaves]
  dc = log_c - jnp.mean(log_c)
  dc = dc.reshape(dc.shape + (1,) * (log_n.ndim - 1))
  return jnp.sum(dc * (log_n - jnp.mean(log_n, axis=0)), axis=0) / jnp.sum(dc * dc, axis=0)


__all__: Sequence[str] = (
    "scale_params",
    "saturation_similarity",
    "limit_similarity",
    "rho_sweep",
    "attention_stats",
    "attention_histogram",
    "homogeneity_curve",
    "homogeneity_degree",
)
