"""Optional adapter for T5X runs (T5X itself is not a dependency; install it from upstream).

Importing this package never needs T5X. The T5X-facing classes are loaded on first use and
raise an ImportError saying how to install T5X when it is missing:

* :class:`NormMetricsComputer` (``normgrowth_jax.t5x.metrics``): a T5X
  ``WeightMetricsComputer`` writing the norm trajectory to TensorBoard every ``stats_period``
  (last values), with the applied learning rate. Works with any T5X optimizer.
* :class:`TrackedOptimizer` (``normgrowth_jax.t5x.optimizer``): wraps any T5X ``OptimizerDef``
  (T5X's Adafactor) so the per-step trace is saved in every checkpoint.
* For optax optimizers, put ``normgrowth_jax.tracking.track_norms`` last in
  ``t5x.optimizers.chain``; its state (``NormTrace``) needs no registration.

:func:`step_quantities` (pure JAX) is importable without T5X.

The gin include ``gin_configs/t5x/norm_tracking.gin`` binds all of this.

Example:
  >>> import normgrowth_jax.t5x as ng_t5x
  >>> callable(ng_t5x.step_quantities)
  True
"""

from __future__ import annotations

import importlib

from normgrowth_jax.t5x.quantities import step_quantities

INSTALL_HINT = (
    "T5X is not installed. It is not on PyPI: install it with its git-only dependencies from "
    "their repositories (github.com/google-research/t5x, github.com/google/airio, "
    "github.com/google-research/jestimator) without their pinned requirements, e.g.\n"
    "  pip install --no-deps ./t5x ./airio ./jestimator\n"
    "  pip install chex fiddle jaxtyping cached_property tensorboard grain\n"
    "(the verified steps: README.md, 'Pod-scale runs with T5X'; on a TPU VM see "
    "experiments/t5x_tpu/README.md)."
)

_LAZY = {"NormMetricsComputer": "metrics", "last_value": "metrics", "TrackedOptimizer": "optimizer"}

__all__ = ["step_quantities", "t5x_available", "INSTALL_HINT", *_LAZY]


def t5x_available() -> bool:
  """True when ``import t5x`` works."""
  try:
    importlib.import_module("t5x")
  except ImportError:
    return False
  return True


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'normgrowth_jax.t5x' has no attribute {name!r}")
  try:
    module = importlib.import_module(f"normgrowth_jax.t5x.{_LAZY[name]}")
  except ModuleNotFoundError as e:
    if e.name and (e.name == "t5x" or e.name.startswith("t5x.")):
      raise ImportError(f"normgrowth_jax.t5x.{name} needs T5X. {INSTALL_HINT}") from e
    raise
  return getattr(module, name)
