"""T5's span-corruption objective, written here in TensorFlow ops (a seqio preprocessor).

Semantics (Raffel et al. 2020, Sec. 3.1.4 and the "i.i.d. span" setting used for
T5.1.1 pretraining), for a segment of ``L`` tokens:

- ``num_noise = round(L * noise_density)`` clipped to [1, L-1];
  ``num_spans = max(1, round(num_noise / mean_noise_span_length))``.
- The noise tokens are partitioned uniformly at random into ``num_spans``
  non-empty spans, the other tokens likewise into ``num_spans`` non-empty
  segments; they interleave starting with non-noise, so the segment always ends
  with a noise span.
- Inputs: each noise span is replaced by one sentinel; targets: each non-noise
  segment is replaced by one sentinel, so targets read
  ``<s0> span0 <s1> span1 ...``. Sentinels are the vocabulary's extra ids in
  descending order: ``s_i = vocab_size - 1 - i`` (``<extra_id_i>`` in seqio).
- ``random_spans_helper(512)`` -> (568, 114): raw segments of 568 tokens give
  inputs of exactly 512 and targets of 114 tokens, EOS included.

Example:
  >>> import tensorflow as tf
  >>> mask = random_spans_noise_mask(100, 0.15, tf.constant([[1, 2], [3, 4]]))
  >>> int(tf.reduce_sum(tf.cast(mask, tf.int32)))
  15
  >>> random_spans_helper(512)
  (568, 114)
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from normgrowth_jax.data import segments

# The pure-Python constants and length helper are shared with the TensorFlow-free path.
from normgrowth_jax.data.numpy_pipeline import (
    MEAN_NOISE_SPAN_LENGTH,
    NOISE_DENSITY,
    random_spans_helper,
)


def _random_segmentation(num_items, num_segments, seed):
  """Lengths of a uniformly random partition of ``num_items`` into ``num_segments`` non-empty parts."""
  # Choose num_segments-1 of the num_items-1 gaps as boundaries.
  gaps = tf.random.stateless_uniform([num_items - 1], seed=seed)
  order = tf.argsort(gaps)
  is_boundary = tf.scatter_nd(
      order[: num_segments - 1, None], tf.ones([num_segments - 1], tf.int32), [num_items - 1]
  )
  segment_id = tf.concat([[0], tf.cumsum(is_boundary)], axis=0)  # [num_items]
  return tf.math.unsorted_segment_sum(tf.ones_like(segment_id), segment_id, num_segments)


def random_spans_noise_mask(
    length,
    noise_density: float = NOISE_DENSITY,
    seeds=None,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.Tensor:
  """Boolean noise mask ``[length]`` with T5's random-spans semantics.

  Args:
    length: number of tokens (int or scalar int tensor).
    noise_density: fraction of tokens that are noise.
    seeds: int tensor ``[2, 2]``: two stateless seeds (noise / non-noise partitions).
    mean_noise_span_length: average noise span length.

  Returns:
    bool tensor ``[length]``; starts with non-noise and ends with noise (length >= 2).
  """
  orig_length = tf.convert_to_tensor(length, tf.int32)
  length = tf.maximum(orig_length, 2)
  num_noise = tf.cast(tf.round(tf.cast(length, tf.float64) * noise_density), tf.int32)
  num_noise = tf.clip_by_value(num_noise, 1, length - 1)
  num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float64) / mean_noise_span_length), tf.int32)
  num_spans = tf.clip_by_value(num_spans, 1, tf.minimum(num_noise, length - num_noise))
  noise_lengths = _random_segmentation(num_noise, num_spans, seeds[0])  # [num_spans]
  nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, seeds[1])
  interleaved = tf.reshape(tf.stack([nonnoise_lengths, noise_lengths], axis=1), [-1])
  span_starts = tf.cumsum(interleaved)[:-1]  # [2*num_spans - 1]
  start_indicator = tf.scatter_nd(span_starts[:, None], tf.ones_like(span_starts), [length])
  is_noise = tf.equal(tf.math.floormod(tf.cumsum(start_indicator), 2), 1)
  return is_noise[:orig_length]


def noise_span_to_unique_sentinel(tokens, noise_mask, vocab_size: int) -> tf.Tensor:
  """Replace each run of ``noise_mask`` by one sentinel (vocab_size-1, vocab_size-2, ...)."""
  prev = tf.pad(noise_mask[:-1], [[1, 0]])
  first_noise = tf.logical_and(noise_mask, tf.logical_not(prev))
  later_noise = tf.logical_and(noise_mask, prev)
  sentinel = vocab_size - tf.cumsum(tf.cast(first_noise, tokens.dtype))
  tokens = tf.where(first_noise, sentinel, tokens)
  return tf.boolean_mask(tokens, tf.logical_not(later_noise))


def corrupt_spans(
    tokens,
    seeds,
    vocab_size: int,
    noise_density=NOISE_DENSITY,
    mean_noise_span_length=MEAN_NOISE_SPAN_LENGTH,
) -> dict:
  """``{"inputs", "targets"}`` for one 1-D token tensor (no EOS added)."""
  mask = random_spans_noise_mask(tf.size(tokens), noise_density, seeds, mean_noise_span_length)
  return {
      "inputs": noise_span_to_unique_sentinel(tokens, mask, vocab_size),
      "targets": noise_span_to_unique_sentinel(tokens, tf.logical_not(mask), vocab_size),
  }


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
    concat_batch_size: int = 128,
) -> tf.data.Dataset:
  """seqio preprocessor: tokenized ``targets`` -> span-corrupted ``inputs``/``targets``.

  Concatenates ``concat_batch_size`` examples, cuts raw segments of
  ``random_spans_helper(sequence_length["inputs"])[0]`` tokens, and corrupts
  each. Follow it with ``seqio.preprocessors.append_eos_after_trim``.
  """
  if not sequence_length or "inputs" not in sequence_length:
    raise ValueError("span_corruption needs sequence_length={'inputs': N, 'targets': M}.")
  tokens_length, targets_length = random_spans_helper(
      sequence_length["inputs"], noise_density, mean_noise_span_length
  )
  if sequence_length.get("targets") and targets_length > sequence_length["targets"]:
    raise ValueError(
        f"inputs length {sequence_length['inputs']} gives span-corruption targets of "
        f"{targets_length} tokens, more than targets length {sequence_length['targets']}; "
        f"use targets >= {targets_length} (T5: inputs 512 / targets 114)."
    )
  vocab_size = output_features["targets"].vocabulary.vocab_size
  dataset = segments.reduce_concat_tokens(dataset, "targets", concat_batch_size)
  dataset = segments.split_tokens(dataset, tokens_length, "targets")

  @seqio.map_over_dataset(num_seeds=2)
  def _corrupt(x, seeds):
    return corrupt_spans(x["targets"], seeds, vocab_size, noise_density, mean_noise_span_length)

  return _corrupt(dataset)
