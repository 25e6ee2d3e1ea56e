"""Reading runs back: trajectories from checkpoints/TensorBoard/JSONL, post-hoc quantities, fits.

* :mod:`.trajectory`: ``read_trajectory(model_dir)``, ``read_checkpoint_trace``,
  ``read_tensorboard``, ``read_jsonl_trajectory``.
* :mod:`.checkpoints`: ``checkpoint_trajectory(model_dir)`` (Fig. 1 / Fig. 5 data from the
  saved checkpoints, one at a time), ``list_checkpoints``, ``read_params``,
  ``pair_quantities``.
* :mod:`.run_reader`: ``load(model_dir)`` -> ``Trajectory`` (per-step rows, the checkpoint
  grid from the hook's anchor, checkpoints or rows, the learning rate each update applied).
* :mod:`.fits`: ``fit_sqrt`` (a sqrt(t) + b), ``fit_power_law``, ``fit_law`` (sqrt, linear,
  t^(1/4), log), ``fit_offset_power`` (a t^p + b, free p) and ``bootstrap_exponent`` (its
  block-bootstrap confidence interval).

Example:
  >>> from normgrowth_jax import analysis
  >>> round(analysis.fit_sqrt([1, 4, 9], [3, 5, 7]).a, 6)
  2.0
"""

from normgrowth_jax.analysis.checkpoints import (
    CheckpointRef,
    checkpoint_trajectory,
    list_checkpoints,
    pair_quantities,
    param_norms,
    read_params,
)
from normgrowth_jax.analysis.fits import (
    ExponentCI,
    LawFit,
    OffsetPowerFit,
    PowerLawFit,
    SqrtFit,
    bootstrap_exponent,
    fit_law,
    fit_offset_power,
    fit_power_law,
    fit_sqrt,
    r_squared,
)
from normgrowth_jax.analysis.trajectory import (
    read_checkpoint_trace,
    read_jsonl_trajectory,
    read_tensorboard,
    read_trajectory,
)

__all__ = [
    "CheckpointRef",
    "checkpoint_trajectory",
    "list_checkpoints",
    "pair_quantities",
    "param_norms",
    "read_params",
    "ExponentCI",
    "LawFit",
    "OffsetPowerFit",
    "PowerLawFit",
    "SqrtFit",
    "bootstrap_exponent",
    "fit_law",
    "fit_offset_power",
    "fit_power_law",
    "fit_sqrt",
    "r_squared",
    "read_checkpoint_trace",
    "read_jsonl_trajectory",
    "read_tensorboard",
    "read_trajectory",
]
