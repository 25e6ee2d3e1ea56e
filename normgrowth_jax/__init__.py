"""normgrowth_jax: parameter norm growth and saturation in transformers.

A JAX/Flax reproduction of Merrill et al., "Effects of Parameter Norm Growth
During Transformer Training" (EMNLP 2021).

The top level re-exports the norm hook; everything else lives in its module:
`norms` (pytree math), `saturation` and `asymptotic` (rho -> infinity),
`models`, `data` (seqio; imports TensorFlow), `train`, `analysis`, `t5x`.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from normgrowth_jax import track_norms, read_trace
  >>> params = {"encoder": {"layers_0": {"kernel": jnp.ones((2, 2))}}}
  >>> opt = optax.chain(optax.sgd(0.1), track_norms(param_filter="paper", groups="layers"))
  >>> state = opt.init(params)
  >>> updates, state = opt.update(params, state, params)
  >>> round(float(read_trace(state)["param_norm"][0]), 4)  # ‖(1 - 0.1) * ones(2, 2)‖
  1.8
"""

from normgrowth_jax import norms
from normgrowth_jax.sinks import JsonlSink, MultiSink, TensorBoardSink
from normgrowth_jax.tracking import NormTrace, first_nonfinite_step, read_trace, track_norms

__version__ = "0.1.0"

__all__ = [
    "JsonlSink",
    "MultiSink",
    "NormTrace",
    "TensorBoardSink",
    "first_nonfinite_step",
    "norms",
    "read_trace",
    "track_norms",
]
