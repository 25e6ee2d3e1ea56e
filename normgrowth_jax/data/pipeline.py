"""Deterministic, resumable batches of NumPy arrays in T5X feature names.

``make_batch_iterator`` runs a seqio task or mixture, converts features with
seqio's converters (``EncDecFeatureConverter`` for encoder-decoder models:
``encoder_input_tokens``, ``decoder_target_tokens``, ``decoder_input_tokens``,
``decoder_loss_weights``; ``DecoderFeatureConverter`` for decoder-only models,
plus ``decoder_causal_attention`` for prefix LM), packs if asked
(``*_segment_ids`` / ``*_positions``), and batches with ``drop_remainder``.

Determinism: for fixed (task, split, feature_lengths, batch_size, seed, pack)
the batch sequence is fixed: the source order, the shuffle buffer and every
random preprocessor (span noise, prefix split points) are seeded from ``seed``;
training splits repeat forever with fresh noise and a fresh shuffle each epoch.

Resumption: the position is the number of batches consumed. Starting with
``start_batch=k`` yields exactly the batches a fresh iterator yields after its
first k. It is implemented as ``tf.data.Dataset.skip(k)`` on the batched
dataset, so skipped batches are produced inside the tf.data runtime (C++, no
NumPy conversion, no Python per batch) but still computed: resuming costs about
the time tf.data needs to produce k batches (see ``benchmarks/bench_data.py``),
typically a few percent of the training time that produced them.

Example:
  >>> it = make_batch_iterator("ng_span_corruption_botchan_bytes", "train",
  ...                          {"inputs": 512, "targets": 114}, 8, seed=0)  # doctest: +SKIP
  >>> batch = next(it); it.position                                        # doctest: +SKIP
  1
  >>> batch["encoder_input_tokens"].shape                                  # doctest: +SKIP
  (8, 512)
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from normgrowth_jax.data import tasks as _tasks  # registers the tasks

del _tasks


def _converter(provider, feature_lengths: Mapping[str, int], pack: bool, model_type: str | None):
  if model_type is None:
    model_type = "encoder_decoder" if "inputs" in feature_lengths else "decoder"
  if model_type == "encoder_decoder":
    if "inputs" not in feature_lengths:
      raise ValueError("An encoder-decoder model needs feature_lengths['inputs'].")
    return seqio.EncDecFeatureConverter(pack=pack)
  if model_type == "decoder":
    return seqio.DecoderFeatureConverter(pack=pack)
  raise ValueError(f"model_type must be 'encoder_decoder', 'decoder' or None, got {model_type!r}.")


def make_dataset(
    task_name: str,
    split: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    seed: int,
    start_batch: int = 0,
    *,
    pack: bool = False,
    shuffle: bool | None = None,
    num_epochs: int | None = None,
    model_type: str | None = None,
    shuffle_buffer_size: int | None = None,
    shard_info: seqio.ShardInfo | None = None,
) -> tf.data.Dataset:
  """The batched ``tf.data.Dataset`` behind ``make_batch_iterator`` (same arguments)."""
  if batch_size < 1 or start_batch < 0:
    raise ValueError(f"Need batch_size >= 1 and start_batch >= 0, got {batch_size}, {start_batch}.")
  is_train = split == "train"
  shuffle = is_train if shuffle is None else shuffle
  if num_epochs is None and not is_train:
    num_epochs = 1
  provider = seqio.get_mixture_or_task(task_name)
  kwargs = dict(shuffle_buffer_size=shuffle_buffer_size) if isinstance(provider, seqio.Task) else {}
  ds = provider.get_dataset(
      sequence_length=dict(feature_lengths),
      split=split,
      use_cached=False,
      shuffle=shuffle,
      seed=seed,
      shard_info=shard_info,
      num_epochs=num_epochs,
      **kwargs,
  )
  ds = _converter(provider, feature_lengths, pack, model_type)(ds, dict(feature_lengths))
  ds = ds.batch(batch_size, drop_remainder=is_train or num_epochs is None)
  if start_batch:
    ds = ds.skip(start_batch)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(2)


class BatchIterator(Iterator[dict]):
  """Iterator of ``{feature: np.ndarray [batch, length]}`` that counts its position.

  Attributes:
    position: number of batches consumed since the start of the stream
      (``start_batch`` included): pass it back as ``start_batch`` to resume.
  """

  def __init__(self, dataset: tf.data.Dataset, start_batch: int):
    self._it = dataset.as_numpy_iterator()
    self.position = start_batch

  def __next__(self) -> dict:
    batch = next(self._it)
    self.position += 1
    return {k: np.asarray(v) for k, v in batch.items()}


def make_batch_iterator(
    task_name: str,
    split: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    seed: int,
    start_batch: int = 0,
    *,
    pack: bool = False,
    shuffle: bool | None = None,
    num_epochs: int | None = None,
    model_type: str | None = None,
    shuffle_buffer_size: int | None = None,
    shard_info: seqio.ShardInfo | None = None,
) -> BatchIterator:
  """Batches of a seqio task/mixture as NumPy dicts with T5X feature names.

  Args:
    task_name: a registered task or mixture, e.g. ``"ng_span_corruption_bbc_bytes"``.
    split: ``"train"``, ``"validation"`` (or ``"test"`` where it exists).
    feature_lengths: T5X's ``TASK_FEATURE_LENGTHS``, e.g. ``{"inputs": 512,
      "targets": 114}``; ``{"targets": L}`` alone for causal LM.
    batch_size: examples per batch (incomplete batches are dropped when repeating).
    seed: seeds the shuffle and every random preprocessor.
    start_batch: skip this many batches (resume position).
    pack: pack several examples per row (T5X's default for pretraining).
    shuffle: default True for ``"train"``, False otherwise.
    num_epochs: None repeats forever (default for ``"train"``; others default to 1).
    model_type: ``"encoder_decoder"`` or ``"decoder"``; default: encoder-decoder
      when ``feature_lengths`` has ``"inputs"``.
    shuffle_buffer_size: example shuffle buffer (seqio's default: 1000).
    shard_info: ``seqio.ShardInfo`` for multi-host input sharding.

  Returns:
    A :class:`BatchIterator`.
  """
  ds = make_dataset(
      task_name,
      split,
      feature_lengths,
      batch_size,
      seed,
      start_batch,
      pack=pack,
      shuffle=shuffle,
      num_epochs=num_epochs,
      model_type=model_type,
      shuffle_buffer_size=shuffle_buffer_size,
      shard_info=shard_info,
  )
  return BatchIterator(ds, start_batch)
