"""Prefix-LM and causal-LM objectives as seqio preprocessors (TensorFlow ops).

- ``prefix_lm``: the token stream is cut into segments of
  ``(inputs - 1) + (targets - 1)`` tokens; each is split at a uniformly random
  point into a prefix (``inputs``) and its continuation (``targets``), both
  within their lengths (EOS is added afterwards by ``append_eos_after_trim``).
  This is T5's prefix-LM objective for an encoder-decoder; with
  ``DecoderFeatureConverter`` it feeds a decoder-only prefix LM.
- ``causal_lm``: every line gets an EOS (the ``<eos>`` of the standard
  PTB/WikiText setup), lines are concatenated and cut into segments of exactly
  ``targets`` tokens (the last one of the stream may be shorter): only ``targets``.

Example:
  >>> import tensorflow as tf
  >>> split_prefix(tf.range(10), tf.constant([1, 2]), 6, 6)["inputs"].shape[0] in range(4, 6)
  True
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from normgrowth_jax.data import segments


def split_prefix(tokens, seed, max_inputs: int, max_targets: int) -> dict:
  """Split ``tokens`` [n] at a random point k with 1 <= k, k <= max_inputs, n - k <= max_targets."""
  n = tf.size(tokens)
  low = tf.maximum(1, n - max_targets)
  high = tf.maximum(low, tf.minimum(n - 1, max_inputs))  # inclusive
  k = tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high + 1, dtype=tf.int32)
  return {"inputs": tokens[:k], "targets": tokens[k:]}


def prefix_lm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    concat_batch_size: int = 128,
) -> tf.data.Dataset:
  """seqio preprocessor: tokenized ``targets`` -> random prefix ``inputs`` / rest ``targets``."""
  del output_features
  if not sequence_length or "inputs" not in sequence_length or "targets" not in sequence_length:
    raise ValueError("prefix_lm needs sequence_length={'inputs': N, 'targets': M}.")
  max_inputs, max_targets = sequence_length["inputs"] - 1, sequence_length["targets"] - 1
  dataset = segments.reduce_concat_tokens(dataset, "targets", concat_batch_size)
  dataset = segments.split_tokens(dataset, max_inputs + max_targets, "targets")
  dataset = dataset.filter(lambda x: tf.size(x["targets"]) >= 2)

  @seqio.map_over_dataset(num_seeds=1)
  def _split(x, seed):
    return split_prefix(x["targets"], seed, max_inputs, max_targets)

  return _split(dataset)


def causal_lm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    concat_batch_size: int = 128,
) -> tf.data.Dataset:
  """seqio preprocessor: tokenized lines -> EOS-separated stream in ``targets``-long segments."""
  if not sequence_length or "targets" not in sequence_length:
    raise ValueError("causal_lm needs sequence_length={'targets': M}.")
  eos = output_features["targets"].vocabulary.eos_id

  @seqio.map_over_dataset
  def _add_eos(x):
    tokens = x["targets"]  # [n]
    return {"targets": tf.concat([tokens, tf.constant([eos], tokens.dtype)], axis=0)}

  dataset = _add_eos(dataset)
  dataset = segments.reduce_concat_tokens(dataset, "targets", concat_batch_size)
  return segments.split_tokens(dataset, sequence_length["targets"], "targets")
