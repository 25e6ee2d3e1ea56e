"""Span corruption on real text: density, span lengths, sentinels, exact reconstruction."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from data_helpers import data_cache  # noqa: F401  (session fixture)
from data_helpers import reconstruct_spans as _reconstruct
from normgrowth_jax.data import corpora, segments, span_corruption as sc, vocab

VOCAB = vocab.byte_vocabulary()  # vocab_size 359: sentinels 358, 357, ...
SEQ = {"inputs": 512, "targets": 114}


def test_random_spans_helper_matches_t5_lengths():
  assert sc.random_spans_helper(512) == (568, 114)  # T5's inputs 512 / targets 114
  assert sc.random_spans_helper(256) == (284, 58)

  # Brute force: largest raw length whose corrupted inputs + EOS fit in 512.
  def inputs_len(n):
    noise = round(n * 0.15)
    return n - noise + max(1, round(noise / 3)) + 1

  assert max(n for n in range(3, 2000) if inputs_len(n) <= 512) == 568


def _botchan_streams(root, n_lines=1200, seed=7):
  """(raw segments, corrupted examples) from the same botchan token stream."""
  path = corpora.split_path("botchan", "train", root)
  lines = tf.data.TextLineDataset(str(path)).take(n_lines)
  feats = {"targets": seqio.Feature(VOCAB)}
  tokens = seqio.preprocessors.tokenize(
      lines.map(lambda s: {"targets": tf.strings.join([s, "\n"])}), feats
  )
  tokens_length, _ = sc.random_spans_helper(SEQ["inputs"])
  raw = segments.split_tokens(segments.reduce_concat_tokens(tokens, "targets", 128), tokens_length)
  with seqio.utils.map_seed_manager(seed):
    corrupted = sc.span_corruption(tokens, SEQ, feats)
  raw = [x["targets"] for x in raw.as_numpy_iterator()]
  corrupted = list(corrupted.as_numpy_iterator())
  return raw, corrupted


@pytest.fixture(scope="module")
def streams(data_cache):
  return _botchan_streams(data_cache)


def test_reconstruction_and_sentinel_order(streams):
  raw, corrupted = streams
  assert len(raw) == len(corrupted) >= 40
  v = VOCAB.vocab_size
  for original, ex in zip(raw, corrupted):
    inp, tgt = ex["inputs"], ex["targets"]
    s_in = inp[inp >= v - 100]
    s_tg = tgt[tgt >= v - 100]
    # Descending sentinels from vocab_size - 1, identical in inputs and targets.
    np.testing.assert_array_equal(s_in, np.arange(v - 1, v - 1 - len(s_in), -1))
    np.testing.assert_array_equal(s_in, s_tg)
    assert tgt[0] == v - 1  # targets start with the first sentinel
    assert inp[-1] == s_in[-1]  # T5 semantics: the segment ends with a noise span
    np.testing.assert_array_equal(_reconstruct(inp, tgt, v), original)
  # Full-length segments fill the T5 lengths exactly (EOS is appended later).
  full = [ex for ex, r in zip(corrupted, raw) if len(r) == 568]
  assert full and all(len(ex["inputs"]) == 511 and len(ex["targets"]) == 113 for ex in full)


def test_noise_density_and_span_lengths(streams):
  raw, corrupted = streams
  v = VOCAB.vocab_size
  noise = spans = total = 0
  span_lengths = []
  for original, ex in zip(raw, corrupted):
    tgt = ex["targets"]
    n_spans = int(np.sum(tgt >= v - 100))
    n_noise = len(tgt) - n_spans
    # Exact T5 counts per segment (float64 reference).
    expected_noise = min(max(int(np.round(np.float64(len(original)) * 0.15)), 1), len(original) - 1)
    assert n_noise == expected_noise
    assert n_spans == max(1, int(np.round(expected_noise / np.float64(3.0))))
    boundaries = np.flatnonzero(tgt >= v - 100)
    span_lengths += list(np.diff(np.append(boundaries, len(tgt))) - 1)
    noise, spans, total = noise + n_noise, spans + n_spans, total + len(original)
  span_lengths = np.array(span_lengths)
  density = noise / total
  print(
      f"segments={len(raw)} tokens={total} density={density:.4f} "
      f"mean_span={span_lengths.mean():.3f} std={span_lengths.std():.3f}"
  )
  assert abs(density - 0.15) < 0.002, density
  assert abs(span_lengths.mean() - 3.0) < 0.1, span_lengths.mean()
  assert span_lengths.min() >= 1
  # Random partition: span lengths vary (not all 3), about geometric-like spread.
  assert 1.0 < span_lengths.std() < 3.0
  assert np.mean(span_lengths == 1) > 0.15


def test_noise_positions_vary_with_the_seed():
  def masks(length, n):
    seeds = tf.stack(
        [
            tf.stack([tf.range(n), tf.ones(n, tf.int32)], -1),
            tf.stack([tf.range(n), 2 * tf.ones(n, tf.int32)], -1),
        ],
        1,
    )  # [n, 2, 2]
    fn = tf.function(lambda s: sc.random_spans_noise_mask(length, 0.15, s))
    return tf.map_fn(fn, seeds, fn_output_signature=tf.bool).numpy()  # [n, length]

  long = masks(568, 20)
  assert (long.sum(axis=1) == 85).all()
  assert len({m.tobytes() for m in long}) == 20
  # Over many seeds every position (except the first, always kept) is sometimes noise.
  short = masks(40, 300)
  assert not short[:, 0].any() and short[:, -1].all()
  assert short[:, 1:-1].any(axis=0).all()


def test_short_segments():
  for n in (1, 2, 3, 7):
    out = sc.corrupt_spans(tf.range(10, 10 + n), tf.constant([[1, 2], [3, 4]]), 359)
    inp, tgt = out["inputs"].numpy(), out["targets"].numpy()
    if n == 1:  # nothing to hide: T5 keeps the token, targets are one sentinel
      assert inp.tolist() == [10] and tgt.tolist() == [358]
    else:
      np.testing.assert_array_equal(_reconstruct(inp, tgt, 359), np.arange(10, 10 + n))


def test_targets_length_too_small_is_an_error():
  ds = tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant([[5, 6, 7]])})
  with pytest.raises(ValueError, match="targets >= 114"):
    sc.span_corruption(ds, {"inputs": 512, "targets": 64}, {"targets": seqio.Feature(VOCAB)})
