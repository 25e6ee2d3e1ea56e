"""The per-step trajectory quantities from two parameter pytrees (no T5X needed).

T5X hands a ``WeightMetricsComputer`` the train state before and after an update; this module
turns ``(theta_t, theta_{t+1})`` into exactly the row :func:`normgrowth_jax.tracking.track_norms`
records for that update (same filter, groups, float32 accumulation and stable angle): it is
:func:`normgrowth_jax.tracking.step_row` with ``new_params``, the hook's own row computation
given ``delta_t = theta_{t+1} - theta_t``.

Example:
  >>> import jax.numpy as jnp
  >>> old = {"encoder": {"layers_0": {"w": jnp.array([3.0, 0.0])}}}
  >>> new = {"encoder": {"layers_0": {"w": jnp.array([3.0, 4.0])}}}
  >>> q = step_quantities(old, new, param_filter="paper", groups="layers")
  >>> float(q["param_norm"]), float(q["update_norm"]), float(q["alignment"])
  (5.0, 4.0, 0.0)
  >>> sorted(k for k in q if "/" in k)
  ['direction_angle/encoder/layers_0', 'param_norm/encoder/layers_0']
"""

from __future__ import annotations

from typing import Any

import jax

from normgrowth_jax import tracking


def step_quantities(
    old_params: Any, new_params: Any, param_filter="paper", groups="layers"
) -> dict[str, jax.Array]:
  """``track_norms``'s row for the update that took ``old_params`` to ``new_params``.

  Args:
    old_params: theta_t (any pytree; T5X: ``old_train_state.params``).
    new_params: theta_{t+1}, same structure.
    param_filter: "paper", "all" or a callable ``(path, array) -> bool``.
    groups: None, "layers", ``{name: regex}`` or a group function (see ``norms``).

  Returns:
    ``{"param_norm", "update_norm", "alignment", "direction_angle", "direction_cos",
    "param_norm/<g>", "direction_angle/<g>", "nonfinite"}`` as float32 scalars; param_norm is
    ||theta_{t+1}||; nonfinite is 1.0 when delta_t, an unfiltered leaf of theta_t or a value
    is not finite. Traceable (use inside jit).
  """
  return tracking.step_row(
      old_params, new_params=new_params, param_filter=param_filter, groups=groups
  )
