"""Optimizers for the embedded trainer: T5's Adafactor, the paper's AdamW, any optax one.

Every optimizer the trainer builds goes through :func:`make_optimizer`, which

1. wraps the base optimizer in ``optax.inject_hyperparams`` so the learning rate
   *actually applied* at each update sits in the optimizer state (read it with
   :func:`applied_learning_rate`), and
2. chains the norm hook ``tracking.track_norms`` LAST, so it sees the final
   update ``delta_t = theta_{t+1} - theta_t`` (paper filter and per-layer groups
   by default), handing it the same learning rate: every row of the trace also
   holds ``learning_rate``, the rate that row's update applied.

Schedules follow T5X's naming: ``rsqrt_schedule`` is T5X's
``constant * rsqrt_decay``: ``lr_t = base / sqrt(max(t, warmup_steps))`` with
``t`` the 0-based update count (T5: base 1.0, warmup 10,000).

Example:
  >>> import jax.numpy as jnp
  >>> tx = make_optimizer(adafactor_t5, rsqrt_schedule(warmup_steps=100))
  >>> params = {"encoder": {"layers_0": {"mlp": {"wo": {"kernel": jnp.ones((4, 4))}}}}}
  >>> state = tx.init(params)
  >>> updates, state = tx.update(params, state, params)
  >>> round(float(applied_learning_rate(state)), 6)  # 1 / sqrt(100)
  0.1
"""

from __future__ import annotations

from typing import Any, Callable

import gin
import jax
import jax.numpy as jnp
import optax

from normgrowth_jax import adafactor_probe, norms, tracking

Schedule = Callable[[jax.Array], jax.Array]


@gin.configurable
def rsqrt_schedule(base_learning_rate: float = 1.0, warmup_steps: int = 10_000) -> Schedule:
  """T5's inverse-square-root schedule, ``base / sqrt(max(t, warmup_steps))``.

  Args:
    base_learning_rate: the constant factor (T5: 1.0).
    warmup_steps: steps of constant learning rate ``base / sqrt(warmup)``.

  Returns:
    An optax schedule ``count -> learning rate`` (float32).

  Example:
    >>> float(rsqrt_schedule(warmup_steps=4)(16))
    0.25
  """
  if warmup_steps < 1:
    raise ValueError(f"rsqrt_schedule: warmup_steps must be >= 1, got {warmup_steps}.")

  def schedule(count):
    t = jnp.maximum(jnp.asarray(count, jnp.float32), float(warmup_steps))
    return base_learning_rate / jnp.sqrt(t)

  return schedule


@gin.configurable
def constant_schedule(value: float = 1e-3) -> Schedule:
  """A constant learning rate (the paper's AdamW runs use 1e-3)."""
  return optax.constant_schedule(value)


@gin.configurable
def adafactor_t5(
    learning_rate: Any,
    decay_rate: float = 0.8,
    clipping_threshold: float | None = 1.0,
    min_dim_size_to_factor: int = 128,
    multiply_by_parameter_scale: bool = True,
    momentum: float | None = None,
    eps: float = 1e-30,
) -> optax.GradientTransformation:
  """T5's Adafactor setting (as in T5X's default recipe) through ``optax.adafactor``.

  Factored second moments for matrices with both dims >= ``min_dim_size_to_factor``,
  second-moment decay ``1 - (t+1)^-0.8``, update clipping at RMS 1.0, no momentum,
  step scaled by ``max(RMS(param), 1e-3)``.

  Example:
    >>> tx = adafactor_t5(learning_rate=0.01)
  """
  return optax.adafactor(
      learning_rate=learning_rate,
      min_dim_size_to_factor=min_dim_size_to_factor,
      decay_rate=decay_rate,
      multiply_by_parameter_scale=multiply_by_parameter_scale,
      clipping_threshold=clipping_threshold,
      momentum=momentum,
      eps=eps,
  )


def normalize_block_rms(target: float = 1.0, min_ndim: int = 2) -> optax.GradientTransformation:
  """Scales every update tensor of ``min_ndim`` or more dimensions to RMS exactly ``target``.

  Tensors of fewer dimensions (scales, biases) are clipped at RMS 1 as Adafactor's own
  ``clip_by_block_rms(1.0)`` does: their gradients can be ~0 for long stretches, and
  scaling such a tensor's noise up to a fixed RMS makes it run away.

  Example:
    >>> import jax.numpy as jnp
    >>> tx = normalize_block_rms(0.5)
    >>> u, _ = tx.update({"w": jnp.full((2, 2), 3.0), "b": jnp.full(2, 0.1)}, tx.init(None))
    >>> float(u["w"][0, 0]), round(float(u["b"][0]), 6)  # w scaled to RMS 0.5, b left (RMS < 1)
    (0.5, 0.1)
  """
  if target <= 0:
    raise ValueError(f"normalize_block_rms: target must be > 0, got {target}.")

  def update(updates, state, params=None):
    del params

    def scale(u):
      if u.ndim < min_ndim:
        return u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(jnp.square(u))))
      # The RMS of u / max|u|: u's own squares underflow to 0 once |u| < ~1e-19 (a gradient
      # that has all but vanished), and dividing by that 0 would blow u up to ~1e17.
      peak = jnp.max(jnp.abs(u))
      unit = u / jnp.where(peak > 0, peak, 1.0)
      return unit * (
          target / jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(unit))), jnp.finfo(u.dtype).tiny)
      )

    return jax.tree.map(scale, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@gin.configurable
def adafactor_fixed_ratio(
    learning_rate: Any,
    update_rms: float = 1.0,
    min_ndim: int = 2,
    decay_rate: float = 0.8,
    min_dim_size_to_factor: int = 128,
    multiply_by_parameter_scale: bool = True,
    eps: float = 1e-30,
) -> optax.GradientTransformation:
  """T5's Adafactor with the update ratio r held at ``update_rms`` (the paper's mechanism test).

  :func:`adafactor_t5` divides the preconditioned update ``u`` by ``max(1, RMS(u))``, so with
  parameter scaling each tensor moves by ``||delta|| = lr ||theta|| min(RMS(u), 1)``: the
  ratio ``r = ||delta|| / (lr ||theta||)`` is 1 only while the clipping binds. Here every
  tensor of ``min_ndim`` or more dimensions is divided by ``RMS(u) / update_rms`` instead, so
  its ``r`` equals ``update_rms`` on every step and the update keeps Adafactor's direction;
  vectors keep Adafactor's clipping (:func:`normalize_block_rms`). Misaligned updates under
  ``lr_t = 1/sqrt(t)`` then predict ``||theta_t|| ~ t^(r^2/2)``.

  Example:
    >>> tx = adafactor_fixed_ratio(learning_rate=0.01, update_rms=0.5)
  """
  return optax.chain(
      optax.scale_by_factored_rms(
          decay_rate=decay_rate, min_dim_size_to_factor=min_dim_size_to_factor, epsilon=eps
      ),
      normalize_block_rms(update_rms, min_ndim),
      optax.scale_by_learning_rate(learning_rate, flip_sign=False),
      optax.scale_by_param_block_rms() if multiply_by_parameter_scale else optax.identity(),
      optax.scale(-1),
  )


def layerwise(
    tx: optax.GradientTransformation, group_fn: norms.GroupFn = norms.layer_groups
) -> optax.GradientTransformation:
  """Applies ``tx`` to each layer of a scanned stack on its own (vmapped over the layer axis).

  A scanned model (``T5Config(scan_layers=True)``) stores its layers as one leaf per stack
  with a leading layer axis. Adafactor's update clipping, parameter scale and factored
  moments are per tensor, so on such a leaf they would mix the layers: this runs ``tx`` on
  every slice separately, which makes training a scanned model the same as training the
  unrolled one. Leaves that ``group_fn`` does not mark as :class:`norms.Stacked` go through
  ``tx`` unchanged, and a tree without stacked leaves gets exactly ``tx``'s state.

  Example:
    >>> import jax.numpy as jnp
    >>> tx = layerwise(optax.adafactor(learning_rate=1.0, multiply_by_parameter_scale=False))
    >>> g = {"encoder": {"layers": {"w": jnp.stack([jnp.full((2, 2), 1e-3), jnp.ones((2, 2))])}}}
    >>> u, _ = tx.update(g, tx.init(g), g)
    >>> [round(float(jnp.sqrt(jnp.mean(x ** 2))), 4) for x in u["encoder"]["layers"]["w"]]
    [1.0, 1.0]
  """

  def stacked_axis(path: str, leaf) -> int | None:
    group = group_fn(path, leaf)
    return group.axis if isinstance(group, norms.Stacked) else None

  def labels(tree):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: "shared" if stacked_axis(norms.path_str(p), x) is None else "layers", tree
    )

  def any_stacked(tree) -> bool:
    return any(stacked_axis(p, x) is not None for p, x in norms.named_leaves(tree))

  def vmapped(tree):
    axes = {stacked_axis(p, x) for p, x in norms.named_leaves(tree)} - {None}
    if len(axes) > 1:
      raise ValueError(
          f"layerwise: stacked leaves with different layer axes {sorted(axes)}; "
          "stack every scanned leaf on one axis."
      )
    return axes.pop()

  def split(tree, with_params: bool = True) -> optax.GradientTransformation:
    """``tx`` on the shared leaves, ``tx`` vmapped over the stacked ones (their optimizer
    state stacked on axis 0, whatever the parameters' layer axis)."""
    axis = vmapped(tree)
    stacked = optax.GradientTransformation(
        jax.vmap(tx.init, axis, 0),
        jax.vmap(tx.update, (axis, 0, axis if with_params else None), (axis, 0)),
    )
    return optax.multi_transform({"layers": stacked, "shared": tx}, labels)

  def init(params):
    return split(params).init(params) if any_stacked(params) else tx.init(params)

  def update(updates, state, params=None):
    if not any_stacked(updates):
      return tx.update(updates, state, params)
    return split(updates, params is not None).update(updates, state, params)

  return optax.GradientTransformation(init, update)


@gin.configurable
def adamw_paper(
    learning_rate: Any = 1e-3,
    weight_decay: float = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
  """AdamW with PyTorch's defaults, the paper's small-LM optimizer.

  PyTorch's ``torch.optim.AdamW``: lr 1e-3, betas (0.9, 0.999), eps 1e-8 (added
  to the bias-corrected sqrt of v), decoupled weight decay 1e-2 on every parameter
  (``p -= lr * wd * p``), which is exactly ``optax.adamw``'s rule.

  Example:
    >>> tx = adamw_paper()
  """
  return optax.adamw(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


# Any optax optimizer can be named in gin, e.g. `make_optimizer.base = @optax.sgd`.
for _name in (
    "adafactor",
    "adamw",
    "adam",
    "sgd",
    "lion",
    "adagrad",
    "rmsprop",
    "lamb",
    "lars",
    "adabelief",
    "nadamw",
):
  if hasattr(optax, _name):
    gin.external_configurable(getattr(optax, _name), name=_name, module="optax")
for _name in (
    "warmup_cosine_decay_schedule",
    "linear_schedule",
    "cosine_decay_schedule",
    "piecewise_constant_schedule",
):
  gin.external_configurable(getattr(optax, _name), name=_name, module="optax")


@gin.configurable
def make_optimizer(
    base: Callable[..., optax.GradientTransformation] = adafactor_t5,
    learning_rate: Any = None,
    param_filter: Any = "paper",
    groups: Any = "layers",
    track_every: int = 1,
    sink: Any = None,
    history_size: int = 8192,
    anchor_every: int | None = None,
    stream_every_rows: int = 1,
    record_learning_rate: bool = True,
) -> optax.GradientTransformation:
  """``chain(inject_hyperparams(base)(learning_rate), track_norms(...))``.

  Args:
    base: an optax factory taking ``learning_rate`` as keyword (``adafactor_t5``,
      ``adamw_paper``, ``optax.sgd``, ...); its other arguments come from gin.
    learning_rate: a float or an optax schedule; None means
      ``rsqrt_schedule()`` (T5's) for Adafactor and 1e-3 otherwise.
    param_filter: the hook's parameter filter ("paper" = App. A convention).
    groups: "layers" (per-layer groups, ``norms.layer_groups``), a dict
      ``{name: regex}`` (``norms.regex_groups``), a callable, or None.
    track_every: record the trajectory every this many steps.
    sink: optional sink streaming the trajectory (``sinks.JsonlSink`` ...).
    history_size, anchor_every, stream_every_rows: passed to ``track_norms``.
    record_learning_rate: hand the hook ``learning_rate`` (its rows get the column); False
      records no rate, as runs started before the column existed did: resume such a run
      with ``make_optimizer.record_learning_rate = False``.

  Returns:
    An optax GradientTransformation whose state holds the applied learning rate
    and the norm trace (``tracking.read_trace(state)``, with a ``learning_rate`` column:
    the hook evaluates ``learning_rate`` at the same update count as ``inject_hyperparams``).
  """
  if learning_rate is None:
    learning_rate = (
        rsqrt_schedule()
        if base in (adafactor_t5, adafactor_fixed_ratio, adafactor_probe.adafactor_t5_probed)
        else 1e-3
    )

  def base_with_lr(learning_rate):
    return layerwise(base(learning_rate=learning_rate))

  tx = optax.inject_hyperparams(base_with_lr, hyperparam_dtype=jnp.float32)(
      learning_rate=learning_rate
  )
  hook = tracking.track_norms(
      param_filter=param_filter,
      groups=norms.resolve_groups(groups),
      every=track_every,
      sink=sink,
      history_size=history_size,
      anchor_every=anchor_every,
      stream_every_rows=stream_every_rows,
      learning_rate=learning_rate if record_learning_rate else None,
  )
  return optax.chain(tx, hook)


def applied_learning_rate(opt_state) -> jax.Array:
  """The learning rate used by the most recent update (before any: the first one).

  Example:
    >>> import jax.numpy as jnp
    >>> tx = make_optimizer(adamw_paper, 0.5, groups=None, param_filter="all")
    >>> float(applied_learning_rate(tx.init({"w": jnp.ones(3)})))
    0.5
  """
  found = [hp["learning_rate"] for hp in _find_hyperparams(opt_state) if "learning_rate" in hp]
  if len(found) != 1:
    raise ValueError(
        f"applied_learning_rate: expected exactly one injected learning_rate in the "
        f"optimizer state, found {len(found)}; build the optimizer with make_optimizer."
    )
  return found[0]


def _find_hyperparams(state):
  """Yields the ``hyperparams`` dicts of every inject_hyperparams state inside ``state``."""
  if isinstance(state, optax.InjectStatefulHyperparamsState):
    yield state.hyperparams
    yield from _find_hyperparams(state.inner_state)
  elif isinstance(state, (tuple, list)):
    for s in state:
      yield from _find_hyperparams(s)
