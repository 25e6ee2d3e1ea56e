"""Convert T5 parameters between unrolled layers (`layers_{i}`) and a scanned stack (`layers`).

`T5Config(scan_layers=True)` runs each stack's layers under `nn.scan`, so its parameter tree
holds one `layers` subtree per stack whose leaves carry a leading layer axis:

    encoder/layers_0/attention/query/kernel  [emb, hd]   (unrolled, the T5X network.py layout)
    encoder/layers/attention/query/kernel    [n, emb, hd]   (scanned, layer axis 0)

Everything else (token embedding, `relpos_bias`, final norms, `logits_dense`) is shared by the
layers and stays as it is. The conversion only stacks and slices, so a round trip is exact,
and both models compute the same function (tests/test_t5_scan.py). The layer axis is 0 (Flax's
`nn.scan` default and the default `stack_axis` of `norms.make_layer_groups`, so the norm hook
records the same per-layer groups `encoder/layers_{i}` either way); T5X's scalable_t5 example
instead names its scanned stack after the stack and inserts the axis at position 1.

NumPy leaves stay NumPy (checkpoint readers), JAX leaves stay JAX.

Example:
    >>> import numpy as np
    >>> params = {"encoder": {"layers_0": {"w": np.zeros(2)}, "layers_1": {"w": np.ones(2)},
    ...                       "encoder_norm": {"scale": np.ones(2)}}}
    >>> scanned = scan_params(params)
    >>> scanned["encoder"]["layers"]["w"].shape, sorted(scanned["encoder"])
    ((2, 2), ['encoder_norm', 'layers'])
    >>> sorted(unscan_params(scanned)["encoder"])
    ['encoder_norm', 'layers_0', 'layers_1']
"""

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

STACKS = ("encoder", "decoder")
SCANNED = "layers"
_LAYER = re.compile(r"layers_(\d+)$")


def _xp(tree):
  """np if every leaf of `tree` is a NumPy array, else jnp."""
  leaves = jax.tree_util.tree_leaves(tree)
  return np if all(isinstance(a, np.ndarray) for a in leaves) else jnp


def is_scanned(params: Mapping[str, Any]) -> bool:
  """Whether a T5 parameter tree holds scanned stacks (`encoder/layers`).

  Example:
      >>> is_scanned({"encoder": {"layers": {}}}), is_scanned({"encoder": {"layers_0": {}}})
      (True, False)
  """
  return any(SCANNED in params.get(stack, {}) for stack in STACKS)


def scan_params(params: Mapping[str, Any]) -> dict:
  """Unrolled T5 params (`encoder/layers_{i}`) -> scanned (`encoder/layers`, axis 0).

  Raises:
      ValueError: if a stack is already scanned or its layer indices are not 0..n-1.
  """
  out = dict(params)
  for stack in STACKS:
    if stack not in params:
      continue
    tree = dict(params[stack])
    if SCANNED in tree:
      raise ValueError(f"{stack}/{SCANNED} is already scanned.")
    index = {int(m.group(1)): k for k in tree if (m := _LAYER.match(k))}
    if sorted(index) != list(range(len(index))):
      raise ValueError(f"{stack} has layers {sorted(index)}; expected 0..n-1.")
    if index:
      layers = [tree.pop(index[i]) for i in range(len(index))]
      xp = _xp(layers)
      tree[SCANNED] = jax.tree_util.tree_map(lambda *a: xp.stack(a), *layers)
    out[stack] = tree
  return out


def unscan_params(params: Mapping[str, Any]) -> dict:
  """Scanned T5 params (`encoder/layers`, axis 0) -> unrolled (`encoder/layers_{i}`).

  Stacks that are not scanned are returned as they are.
  """
  out = dict(params)
  for stack in STACKS:
    if SCANNED not in params.get(stack, {}):
      continue
    tree = dict(params[stack])
    stacked = tree.pop(SCANNED)
    num_layers = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    for i in range(num_layers):
      tree[f"layers_{i}"] = jax.tree_util.tree_map(lambda a: a[i], stacked)
    out[stack] = tree
  return out
