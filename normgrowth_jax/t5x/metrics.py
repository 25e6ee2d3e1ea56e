"""``NormMetricsComputer``: T5X's weight-metrics hook recording the norm trajectory.

T5X calls ``Trainer.weight_metrics_computer.compute_metrics(grads, old_state, new_state)``
inside its jitted, partitioned train step after every update, whatever the optimizer (T5X's
Adafactor included). This subclass returns :func:`normgrowth_jax.t5x.quantities.step_quantities`
of ``(old_state.params, new_state.params)`` as ``clu.metrics.LastValue`` metrics named
``<prefix>/<quantity>``, so each TensorBoard point written every ``stats_period`` steps is the
value at the last step of the period (not an average over it), plus
``<prefix>/learning_rate``: ``learning_rate_fn(old_state.step)``, the rate applied by that
update (bind it to the schedule the optimizer really uses: ``Trainer.learning_rate_fn`` for
T5X's Adafactor, the optax schedule for an ``OptaxWrapper`` chain).

Requires T5X (``pip install git+https://github.com/google-research/t5x``).

Example (gin):
  trainer.Trainer.weight_metrics_computer = @ng_t5x.NormMetricsComputer()
  ng_t5x.NormMetricsComputer.learning_rate_fn = @utils.create_learning_rate_scheduler()
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import clu.metrics
import jax.numpy as jnp
from t5x import trainer as t5x_trainer

from normgrowth_jax.t5x.quantities import step_quantities


def last_value(x) -> clu.metrics.LastValue:
  """A LastValue metric holding the float32 scalar ``x`` (T5X's own learning_rate/current form)."""
  return clu.metrics.LastValue.from_model_output(jnp.asarray([x], jnp.float32))


class NormMetricsComputer(t5x_trainer.WeightMetricsComputer):
  """Records global/per-layer param norms, update norm, alignment, direction angle and cos.

  Args:
    param_filter: "paper" (encoder, non-scalar, no embeddings; the paper's App. A), "all",
      or a callable ``(path, array) -> bool`` on "/"-joined parameter paths.
    groups: "layers" (``encoder/layers_i``, ``decoder/layers_i``), None, ``{name: regex}``
      or a group function (see :mod:`normgrowth_jax.norms`).
    learning_rate_fn: ``step -> learning rate`` applied by the optimizer, or None.
    prefix: metric name prefix ("norms": the same tags as ``sinks.TensorBoardSink``).
    include_default_metrics: also return T5X's own per-parameter RMS metrics (many tags).
  """

  def __init__(
      self,
      param_filter: Any = "paper",
      groups: Any = "layers",
      learning_rate_fn: Optional[Callable[[Any], Any]] = None,
      prefix: str = "norms",
      include_default_metrics: bool = False,
  ):
    self.param_filter = param_filter
    self.groups = groups
    self.learning_rate_fn = learning_rate_fn
    self.prefix = prefix
    self.include_default_metrics = include_default_metrics

  def compute_metrics(self, gradients, old_train_state, new_train_state):
    metrics = {}
    if self.include_default_metrics:
      metrics.update(super().compute_metrics(gradients, old_train_state, new_train_state))
    q = step_quantities(
        old_train_state.params, new_train_state.params, self.param_filter, self.groups
    )
    if self.learning_rate_fn is not None:
      q["learning_rate"] = self.learning_rate_fn(old_train_state.step)
    metrics.update({f"{self.prefix}/{k}": last_value(v) for k, v in q.items()})
    return metrics
