"""Why Adafactor's update ratio r stays below 1: the preconditioned update, recorded per tensor.

T5's Adafactor (:func:`optimizers.adafactor_t5`) divides the gradient by the root of its
second-moment estimate, ``u = g / sqrt(v_hat)``, divides ``u`` by ``max(1, RMS(u))`` and
scales it by ``lr * RMS(theta)``. Each tensor therefore moves by ``min(RMS(u), 1)`` of
``lr ||theta||``, and the paper's sqrt(t) law needs that ratio at 1. Since ``u^2 = g^2 / v_hat``
elementwise, ``RMS(u)^2`` is the mean ratio of the current squared gradient to its running
estimate, and it splits into two factors:

- ``scale = mean(g^2) / mean(v_hat)``: the gradient's size now against its running average
  (``mean(v_hat)`` is the decayed average of ``mean(g^2)``, factored or not);
- ``shape = RMS(u)^2 / scale``: how the elementwise ratio departs from that (rows with no
  gradient this step, a factored estimate's rank-1 error).

:func:`adafactor_t5_probed` is :func:`optimizers.adafactor_t5` (same updates) that also keeps,
every ``every`` steps, ``RMS(u)``, ``scale`` and the fraction of exactly-zero gradient entries of
every tensor in its state, so they are checkpointed with the run; :func:`read_probe` reads them
back from a live state or a checkpoint's raw tree.

Example:
  >>> import jax.numpy as jnp
  >>> tx = adafactor_t5_probed(learning_rate=0.1, history_size=4)
  >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  >>> grads = {"w": jnp.array([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]]), "b": jnp.ones(2)}
  >>> _, state = tx.update(grads, tx.init(params), params)  # step 0: v_hat = g^2, u = sign(g)
  >>> probe = read_probe(state)
  >>> probe.steps.tolist(), round(float(probe.rms_u["w"][0]), 4), round(float(probe.zero_frac["w"][0]), 4)
  ([0], 0.8165, 0.3333)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from normgrowth_jax import norms

FIELDS = ("rms_u", "scale", "zero_frac")


class ProbeState(NamedTuple):
  """State of :func:`probed_factored_rms`.

  Attributes:
    inner: ``optax.scale_by_factored_rms``'s state.
    count: [] updates seen.
    steps: [history_size] the step of each slot (-1: never written); a ring buffer.
    rms_u, scale, zero_frac: trees shaped like the params, each leaf [history_size].
    factored: tree of [] bools: whether the tensor's second moment is factored.
  """

  inner: Any
  count: jax.Array
  steps: jax.Array
  rms_u: Any
  scale: Any
  zero_frac: Any
  factored: Any


def probed_factored_rms(
    decay_rate: float = 0.8,
    min_dim_size_to_factor: int = 128,
    eps: float = 1e-30,
    history_size: int = 4096,
    every: int = 1,
) -> optax.GradientTransformation:
  """``optax.scale_by_factored_rms`` that records RMS(u), scale and zero fraction per tensor."""
  if history_size < 1 or every < 1:
    raise ValueError(
        f"probed_factored_rms: history_size and every must be >= 1, got "
        f"{history_size} and {every}."
    )
  inner = optax.scale_by_factored_rms(
      decay_rate=decay_rate, epsilon=eps, min_dim_size_to_factor=min_dim_size_to_factor
  )

  def init(params):
    state = inner.init(params)
    # optax keeps a (1,) placeholder for v where the moment is factored (and for v_row where not)
    factored = jax.tree.map(
        lambda p, v: jnp.asarray(p.ndim >= 2 and v.shape != p.shape), params, state.v
    )
    history = lambda: jax.tree.map(lambda p: jnp.zeros(history_size, jnp.float32), params)
    return ProbeState(
        state,
        jnp.zeros([], jnp.int32),
        jnp.full(history_size, -1, jnp.int32),
        history(),
        history(),
        history(),
        factored,
    )

  def update(grads, state, params=None):
    u, new_inner = inner.update(grads, state.inner, params)
    count = state.count
    record = count % every == 0
    slot = (count // every) % history_size

    def write(buf, value):
      return jnp.where(record, buf.at[slot].set(value.astype(jnp.float32)), buf)

    def stats(g, uu, v_row, v):
      g = g.astype(jnp.float32)
      mean_g2 = jnp.mean(jnp.square(g))
      # mean(v_hat) is the decayed average of mean(g^2 + eps) either way the moment is stored
      vhat = jnp.mean(v_row) if v.shape != g.shape else jnp.mean(v)
      return (
          jnp.sqrt(jnp.mean(jnp.square(uu.astype(jnp.float32)))),
          mean_g2 / vhat,
          jnp.mean((g == 0).astype(jnp.float32)),
      )

    leaves_g, treedef = jax.tree.flatten(grads)
    per_leaf = [
        stats(*args)
        for args in zip(
            leaves_g,
            treedef.flatten_up_to(u),
            treedef.flatten_up_to(new_inner.v_row),
            treedef.flatten_up_to(new_inner.v),
        )
    ]
    new = {}
    for i, name in enumerate(FIELDS):
      bufs = treedef.flatten_up_to(getattr(state, name))
      new[name] = treedef.unflatten([write(b, s[i]) for b, s in zip(bufs, per_leaf)])
    steps = jnp.where(record, state.steps.at[slot].set(count), state.steps)
    return u, ProbeState(
        new_inner,
        optax.safe_increment(count),
        steps,
        new["rms_u"],
        new["scale"],
        new["zero_frac"],
        state.factored,
    )

  return optax.GradientTransformation(init, update)


@gin.configurable(module="adafactor_probe")
def adafactor_t5_probed(
    learning_rate: Any,
    history_size: int = 4096,
    every: int = 1,
    decay_rate: float = 0.8,
    clipping_threshold: float | None = 1.0,
    min_dim_size_to_factor: int = 128,
    multiply_by_parameter_scale: bool = True,
    eps: float = 1e-30,
) -> optax.GradientTransformation:
  """:func:`optimizers.adafactor_t5` (no momentum) with :func:`probed_factored_rms` inside.

  The updates equal ``optax.adafactor``'s with the same settings; the probe keeps the last
  ``history_size`` records (one every ``every`` steps).

  Example:
    >>> tx = adafactor_t5_probed(learning_rate=0.01, history_size=100)
  """
  return optax.chain(
      probed_factored_rms(decay_rate, min_dim_size_to_factor, eps, history_size, every),
      optax.clip_by_block_rms(clipping_threshold) if clipping_threshold else optax.identity(),
      optax.scale_by_learning_rate(learning_rate, flip_sign=False),
      optax.scale_by_param_block_rms() if multiply_by_parameter_scale else optax.identity(),
      optax.scale(-1),
  )


@dataclasses.dataclass(frozen=True)
class Probe:
  """The records of one run, oldest first: ``steps`` [n]; ``rms_u``, ``scale``, ``zero_frac``:
  ``{param path: [n]}``; ``factored``: ``{param path: bool}``."""

  steps: np.ndarray
  rms_u: dict
  scale: dict
  zero_frac: dict
  factored: dict

  @property
  def shape_factor(self) -> dict:
    """RMS(u)^2 / scale per tensor and record (1 where the elementwise ratio is uniform)."""
    return {k: np.square(self.rms_u[k]) / self.scale[k] for k in self.rms_u}


def _is_probe(node) -> bool:
  if isinstance(node, ProbeState):
    return True
  return isinstance(node, dict) and {"steps", "factored", *FIELDS} <= set(node)


def _find(node):
  if _is_probe(node):
    return [node]
  children = (
      node.values() if isinstance(node, dict) else node if isinstance(node, (list, tuple)) else ()
  )
  return [p for c in children for p in _find(c)]


def _named(tree) -> dict:
  return {path: np.asarray(x) for path, x in norms.named_leaves(tree)}


def read_probe(opt_state) -> Probe:
  """The probe's records from an optimizer state (live, or a checkpoint's raw nested dict).

  Raises:
    ValueError: the state holds no probe, or several.
  """
  found = _find(opt_state._asdict() if isinstance(opt_state, ProbeState) else opt_state)
  if len(found) != 1:
    raise ValueError(
        f"read_probe: expected one adafactor probe in the optimizer state, found "
        f"{len(found)}; train with adafactor_probe.adafactor_t5_probed."
    )
  node = found[0]
  get = (lambda k: getattr(node, k)) if isinstance(node, ProbeState) else node.__getitem__
  steps = np.asarray(get("steps"))
  order = np.argsort(np.where(steps < 0, np.iinfo(np.int64).max, steps), kind="stable")
  order = order[steps[order] >= 0]
  fields = {name: {k: v[order] for k, v in _named(get(name)).items()} for name in FIELDS}
  factored = {k: bool(v) for k, v in _named(get("factored")).items()}
  return Probe(steps[order], factored=factored, **fields)
