"""Batch iterator: T5X feature names and shapes, determinism, exact resumption."""

import numpy as np
import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from normgrowth_jax.data import corpora, pipeline, tasks, vocab

SC = "ng_span_corruption_botchan_bytes"


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_task_names_registered():
  names = tasks.task_names()
  for objective in ("span_corruption", "prefix_lm", "causal_lm"):
    for corpus in ("bbc", "wiki", "shakespeare", "botchan", "wikitext2", "ptb"):
      assert f"ng_{objective}_{corpus}_bytes" in names
      assert f"ng_{objective}_{corpus}_spm32k" in names
    assert f"ng_{objective}_c4_t5" in names


def test_span_corruption_batches(data_cache):
  it = pipeline.make_batch_iterator(SC, "train", {"inputs": 512, "targets": 114}, 4, seed=0)
  b = next(it)
  assert it.position == 1
  assert sorted(b) == ["decoder_input_tokens", "decoder_loss_weights",
                       "decoder_target_tokens", "encoder_input_tokens"]
  assert b["encoder_input_tokens"].shape == (4, 512) and b["decoder_target_tokens"].shape == (4, 114)
  # Full segments: 511 tokens + EOS in the encoder, 113 + EOS in the decoder; EOS = 1.
  assert (b["encoder_input_tokens"][:, 511] == 1).sum() >= 3
  # decoder inputs are targets shifted right by one (T5X convention, 0 = BOS).
  np.testing.assert_array_equal(b["decoder_input_tokens"][:, 1:], b["decoder_target_tokens"][:, :-1])
  assert (b["decoder_input_tokens"][:, 0] == 0).all()
  np.testing.assert_array_equal(b["decoder_loss_weights"], b["decoder_target_tokens"] > 0)
  assert (b["decoder_target_tokens"][:, 0] == vocab.byte_vocabulary().vocab_size - 1).all()


def test_prefix_and_causal_lm_shapes(data_cache):
  b = next(pipeline.make_batch_iterator("ng_prefix_lm_botchan_bytes", "train",
                                        {"inputs": 64, "targets": 32}, 3, seed=1))
  assert b["encoder_input_tokens"].shape == (3, 64) and b["decoder_target_tokens"].shape == (3, 32)
  n_in, n_tg = (b["encoder_input_tokens"] > 0).sum(1), (b["decoder_target_tokens"] > 0).sum(1)
  assert ((n_in >= 2) & (n_in <= 64) & (n_tg >= 2) & (n_tg <= 32)).all()
  assert (n_in + n_tg == 63 + 31 + 2).sum() >= 2  # full segments: 94 tokens + two EOS

  b = next(pipeline.make_batch_iterator("ng_prefix_lm_botchan_bytes", "train",
                                        {"inputs": 64, "targets": 32}, 3, seed=1, model_type="decoder"))
  assert b["decoder_target_tokens"].shape == (3, 96) and "decoder_causal_attention" in b

  b = next(pipeline.make_batch_iterator("ng_causal_lm_botchan_bytes", "train", {"targets": 128}, 5, seed=2))
  assert sorted(b) == ["decoder_input_tokens", "decoder_loss_weights", "decoder_target_tokens"]
  assert b["decoder_target_tokens"].shape == (5, 128)
  assert (b["decoder_target_tokens"] > 0).all()  # full segments of a concatenated stream
  assert (b["decoder_target_tokens"] == 1).any()  # EOS separates lines

  b = next(pipeline.make_batch_iterator("ng_causal_lm_botchan_bytes", "validation", {"targets": 128}, 2,
                                        seed=2, pack=True))
  assert {"decoder_segment_ids", "decoder_positions"} <= set(b)


def test_deterministic_for_a_seed(data_cache):
  fl = {"inputs": 128, "targets": 32}
  a = _take(pipeline.make_batch_iterator(SC, "train", fl, 4, seed=3), 3)
  b = _take(pipeline.make_batch_iterator(SC, "train", fl, 4, seed=3), 3)
  c = _take(pipeline.make_batch_iterator(SC, "train", fl, 4, seed=4), 3)
  _assert_same(a, b)
  assert not np.array_equal(a[0]["encoder_input_tokens"], c[0]["encoder_input_tokens"])


@pytest.mark.parametrize("pack", [False, True])
def test_resume_equals_skipping(data_cache, pack):
  # causal LM, 512 bytes x 8: botchan's train split (~248k bytes) is ~60 batches per
  # epoch, so resuming at 70 crosses an epoch boundary (reshuffle + new concat groups).
  name, fl, k, m = "ng_causal_lm_botchan_bytes", {"targets": 512}, 70, 3
  fresh = pipeline.make_batch_iterator(name, "train", fl, 8, seed=5, pack=pack)
  expected = _take(fresh, k + m)[k:]
  resumed = pipeline.make_batch_iterator(name, "train", fl, 8, seed=5, start_batch=k, pack=pack)
  assert resumed.position == k
  _assert_same(_take(resumed, m), expected)
  assert resumed.position == fresh.position == k + m


def test_resume_span_corruption(data_cache):
  fl = {"inputs": 128, "targets": 32}
  expected = _take(pipeline.make_batch_iterator(SC, "train", fl, 4, seed=6), 9)[6:]
  _assert_same(_take(pipeline.make_batch_iterator(SC, "train", fl, 4, seed=6, start_batch=6), 3), expected)


def test_validation_is_finite_and_unshuffled(data_cache):
  fl = {"targets": 256}
  a = list(pipeline.make_batch_iterator("ng_causal_lm_botchan_bytes", "validation", fl, 4, seed=0))
  b = list(pipeline.make_batch_iterator("ng_causal_lm_botchan_bytes", "validation", fl, 4, seed=9))
  _assert_same(a, b)
  n_bytes = corpora.read_manifest("botchan")["splits"]["validation"]["bytes"]
  # one epoch of the validation stream: ceil(bytes / 256) segments, batches of 4
  assert len(a) == -(-(-(-n_bytes // 256)) // 4)


def test_missing_corpus_error_at_get_dataset(tmp_path, monkeypatch):
  monkeypatch.setenv("NORMGROWTH_DATA", str(tmp_path))
  with pytest.raises(corpora.CorpusNotPreparedError, match="prepare --corpus wiki"):
    pipeline.make_batch_iterator("ng_span_corruption_wiki_bytes", "train",
                                 {"inputs": 512, "targets": 114}, 2, seed=0)
