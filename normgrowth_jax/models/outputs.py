"""The output record shared by every model in `normgrowth_jax.models`.

Example:
    >>> import jax.numpy as jnp
    >>> out = ModelOutput(logits=jnp.zeros((1, 3, 5)), hidden_states=(jnp.zeros((1, 3, 4)),),
    ...                   attention_weights=(), mask=jnp.ones((1, 3), bool))
    >>> out.num_layers
    0
"""

from typing import Tuple

import flax.struct
import jax


@flax.struct.dataclass
class ModelOutput:
  """What a model's forward pass returns (a pytree, so it passes through jit/vmap).

  Attributes:
      logits: [batch, len, vocab] (or [batch, len, num_classes]) output scores.
      hidden_states: tuple of [batch, len, d_model] arrays; index 0 is the embedding output,
          then one entry per layer (the layer's output, before any final norm).
      attention_weights: tuple with one [batch, heads, q_len, k_len] array per layer.
      mask: [batch, len] bool, True at real (non-padding) tokens.

  With `saturated=True` the models fill `logits` and `hidden_states` with the leading
  coefficients of the exact rho -> inf limit and `attention_weights` with hard attention.
  """

  logits: jax.Array
  hidden_states: Tuple[jax.Array, ...]
  attention_weights: Tuple[jax.Array, ...]
  mask: jax.Array

  @property
  def num_layers(self) -> int:
    """Number of layers (hidden_states holds one more entry: the embedding output)."""
    return len(self.hidden_states) - 1
