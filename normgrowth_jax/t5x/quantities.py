"""The per-step trajectory quantities from two parameter pytrees (no T5X needed).

T5X hands a ``WeightMetricsComputer`` the train state before and after an update; this module
turns ``(theta_t, theta_{t+1})`` into exactly the row :func:`normgrowth_jax.tracking.track_norms`
records for that update (same filter, groups, float32 accumulation and stable angle), by giving
the hook's own row computation the update ``delta_t = theta_{t+1} - theta_t``.

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
import jax.numpy as jnp

from normgrowth_jax import norms, tracking


def step_quantities(old_params: Any, new_params: Any, param_filter="paper",
                    groups="layers") -> dict[str, jax.Array]:
  """``track_norms``'s row for the update that took ``old_params`` to ``new_params``.

  Args:
    old_params: theta_t (any pytree; T5X: ``old_train_state.params``).
    new_params: theta_{t+1}, same structure.
    param_filter: "paper", "all" or a callable ``(path, array) -> bool``.
    groups: None, "layers", ``{name: regex}`` or a group function (see ``norms``).

  Returns:
    ``{"param_norm", "update_norm", "alignment", "direction_angle", "direction_cos",
    "param_norm/<g>", "direction_angle/<g>", "nonfinite"}`` as float32 scalars; param_norm is
    ||theta_{t+1}||. Traceable (use inside jit).
  """
  keep = norms.resolve_param_filter(param_filter)
  group_fn = norms.resolve_groups(groups)

  def delta(new, old):  # in the accumulation dtype: exact for float32 params of close values
    dt = norms.acc_dtype(old)
    return new.astype(dt) - old.astype(dt)

  updates = jax.tree_util.tree_map(delta, new_params, old_params)
  units = tracking._units(old_params, keep, group_fn)  # pylint: disable=protected-access
  row = tracking._row_values(old_params, updates, units, (),  # pylint: disable=protected-access
                             group_fn is not None)
  # param_norm of the params the run really holds next (not old + delta re-rounded).
  row["param_norm"] = norms.global_norm(new_params, keep)
  if group_fn is not None:
    for g, v in norms.grouped_global_norm(new_params, group_fn, keep).items():
      row[f"param_norm/{g}"] = v
  bad = tracking._any_nonfinite(updates)  # pylint: disable=protected-access
  for v in row.values():
    bad = bad | ~jnp.isfinite(v)
  row["nonfinite"] = bad.astype(jnp.float32)
  return {k: jnp.asarray(v, jnp.float32) for k, v in row.items()}
