"""What a test may assume about the backend it runs on (CPU, or an accelerator when present).

On NVIDIA GPUs since Ampere, float32 matrix products run in TF32 by default (10-bit mantissa,
relative error ~1e-3 per product); TPUs use bfloat16 passes. A test that compares a model's
float32 outputs with a float64 reference therefore traces the model under
``jax.default_matmul_precision("float32")`` (exact float32 products on every backend), and
`dot_precisions` checks what a lowered program asks for.
"""

import jax

ACCELERATOR = jax.default_backend() != "cpu"


def dot_precisions(lowered_text: str) -> list[str]:
  """The precision of every ``dot_general`` in StableHLO text ("" where it names none).

  Example:
    >>> import jax.numpy as jnp
    >>> f = jax.jit(lambda a: a @ a)
    >>> with jax.default_matmul_precision("float32"):
    ...   dot_precisions(f.lower(jnp.ones((2, 2))).as_text())
    ['[HIGHEST, HIGHEST]']
  """
  lines = [ln for ln in lowered_text.splitlines() if "dot_general" in ln]
  return [
      ln.split("precision = ")[1].split("]")[0] + "]" if "precision = " in ln else ""
      for ln in lines
  ]
