"""``TrackedOptimizer``: any T5X ``OptimizerDef`` plus the norm trace in its checkpointed state.

T5X's Adafactor is an ``OptimizerDef``, not optax, so ``track_norms`` cannot be chained after
it. This wrapper runs the base optimizer, then feeds ``track_norms`` the applied update
``theta_{t+1} - theta_t``; the trace lives next to the base state,
``state.param_states = {"base": <base param_states>, "norm_trace": NormTrace}``, so T5X saves
and restores it with every checkpoint (arrays replicated: NamedTuple ``NormTrace`` does not end
in "State", so T5X's optax partition rules leave it unpartitioned). Read it back with
``normgrowth_jax.analysis.trajectory.read_checkpoint_trace(model_dir)``.

Checkpoints of a wrapped run have ``state/param_states/base/...`` where a plain run has
``state/param_states/...``; start from scratch (or restore with ``strict=False``).

Requires T5X (see ``normgrowth_jax.t5x.INSTALL_HINT`` and README's T5X section). The state has
no empty node (``NormTrace`` never does), so T5X's orbax checkpoints restore it on resume.

Example (gin):
  models.EncoderDecoderModel.optimizer_def = @ng_t5x.TrackedOptimizer()
  ng_t5x.TrackedOptimizer.base = %OPTIMIZER
"""

from __future__ import annotations

from typing import Any, Optional

import jax
from t5x import optimizers as t5x_optimizers

from normgrowth_jax import tracking

OptimizerState = t5x_optimizers.OptimizerState


class TrackedOptimizer(t5x_optimizers.OptimizerDef):
  """Wraps ``base`` (e.g. ``adafactor.Adafactor()``) and records ``track_norms`` each step.

  Args:
    base: the T5X ``OptimizerDef`` doing the update (its hyper parameters, learning rate
      override and logical-axis rules are used unchanged).
    param_filter, groups, every, history_size, anchor_every: ``track_norms`` arguments.
      ``history_size`` rows are kept (a ring buffer); 524,288 steps at every=64 fit in 8192.
  """

  def __init__(
      self,
      base: t5x_optimizers.OptimizerDef,
      param_filter: Any = "paper",
      groups: Any = "layers",
      every: int = 64,
      history_size: int = 8192,
      anchor_every: Optional[int] = None,
  ):
    # No super().__init__: hyper_params are the base's (Adafactor's set_param_axes mutates them).
    self.base = base
    self.tracker = tracking.track_norms(
        param_filter=param_filter,
        groups=groups,
        every=every,
        history_size=history_size,
        anchor_every=anchor_every,
    )

  @property
  def hyper_params(self):
    return self.base.hyper_params

  @hyper_params.setter
  def hyper_params(self, value):
    self.base.hyper_params = value

  def init_state(self, params):
    base_state = self.base.init_state(params)
    return OptimizerState(
        step=base_state.step,
        param_states={"base": base_state.param_states, "norm_trace": self.tracker.init(params)},
    )

  def apply_gradient(self, hyper_params, params, state, grads):
    base_state = OptimizerState(state.step, state.param_states["base"])
    new_params, new_base = self.base.apply_gradient(hyper_params, params, base_state, grads)
    updates = jax.tree_util.tree_map(lambda n, o: n - o, new_params, params)
    _, trace = self.tracker.update(updates, state.param_states["norm_trace"], params)
    return new_params, OptimizerState(
        new_base.step, {"base": new_base.param_states, "norm_trace": trace}
    )

  def set_param_axes(self, param_logical_axes):
    if hasattr(self.base, "set_param_axes"):
      self.base.set_param_axes(param_logical_axes)

  def derive_logical_axes(self, optimizer, param_logical_axes):
    if not hasattr(self.base, "derive_logical_axes"):
      raise ValueError(
          f"Optimizer {type(self.base).__name__} has no derive_logical_axes; "
          "T5X cannot partition it, so TrackedOptimizer cannot either."
      )
    state = optimizer.state
    base_opt = t5x_optimizers.Optimizer(
        self.base, OptimizerState(state.step, state.param_states["base"]), optimizer.target
    )
    base_axes = self.base.derive_logical_axes(base_opt, param_logical_axes)
    trace_axes = jax.tree_util.tree_map(lambda _: None, state.param_states["norm_trace"])
    return t5x_optimizers.Optimizer(
        self,
        OptimizerState(
            base_axes.state.step, {"base": base_axes.state.param_states, "norm_trace": trace_axes}
        ),
        base_axes.target,
    )
