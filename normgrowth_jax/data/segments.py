"""Token-stream plumbing shared by every objective: concatenate lines, cut segments.

Corpora store one text line (a paragraph, a verse line, a sentence) per example,
far shorter than a 512-token input. As in T5's pretraining pipeline, consecutive
tokenized examples are concatenated (``reduce_concat_tokens``) and the stream is
cut into fixed-size segments (``split_tokens``) before an objective is applied.
All functions are seqio preprocessors (``tf.data.Dataset`` -> ``tf.data.Dataset``).

Example:
  >>> import tensorflow as tf
  >>> ds = tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant([[1, 2], [3], [4, 5, 6]])})
  >>> ds = split_tokens(reduce_concat_tokens(ds, batch_size=3), max_tokens_per_segment=4)
  >>> [x["targets"].tolist() for x in ds.as_numpy_iterator()]
  [[1, 2, 3, 4], [5, 6]]
"""

from __future__ import annotations

import seqio
import tensorflow as tf


@seqio.map_over_dataset
def append_newline(x: dict, key: str = "text") -> dict:
  """Append "\\n" to the raw text so concatenated lines stay separated.

  With bytes this is a newline byte; SentencePiece normalises it away (its
  pieces already start each line with the word-boundary mark "▁").
  """
  return {**x, key: tf.strings.join([x[key], "\n"])}


def reduce_concat_tokens(
    dataset: tf.data.Dataset, feature_key: str = "targets", batch_size: int = 128
) -> tf.data.Dataset:
  """Concatenate the ``feature_key`` tokens of ``batch_size`` consecutive examples.

  Other features are dropped. The last group may hold fewer examples.
  """
  dataset = dataset.map(lambda x: {feature_key: x[feature_key]})
  dataset = dataset.ragged_batch(batch_size)
  return dataset.map(lambda x: {feature_key: x[feature_key].flat_values})


def split_tokens(
    dataset: tf.data.Dataset, max_tokens_per_segment: int, feature_key: str = "targets"
) -> tf.data.Dataset:
  """Cut each example's tokens into consecutive segments of at most ``max_tokens_per_segment``.

  Only the last segment of an example can be shorter; empty examples vanish.
  """

  def _split(x):
    tokens = x[feature_key]  # [n]
    n = tf.size(tokens)
    splits = tf.concat([tf.range(0, n, max_tokens_per_segment), [n]], axis=0)
    segments = tf.RaggedTensor.from_row_splits(tokens, splits)  # [ceil(n/L), (L)]
    return tf.data.Dataset.from_tensor_slices({feature_key: segments})

  return dataset.flat_map(_split)
