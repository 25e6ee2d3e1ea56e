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
  assert sorted(b) == [
      "decoder_input_tokens",
      "decoder_loss_weights",
      "decoder_target_tokens",
      "encoder_input_tokens",
  ]
  assert b["encoder_input_tokens"].shape == (4, 512) and b["decoder_target_tokens"].shape == (
      4,
      114,
  )
  # Full segments: 511 tokens + EOS in the encoder, 113 + EOS in the decoder; EOS = 1.
  assert (b["encoder_input_tokens"][:, 511] == 1).sum() >= 3
  # decoder inputs are targets shifted right by one (T5X convention, 0 = BOS).
  np.testing.assert_array_equal(
      b["decoder_input_tokens"][:, 1:], b["decoder_target_tokens"][:, :-1]
  )
  assert (b["decoder_input_tokens"][:, 0] == 0).all()
  np.testing.assert_array_equal(b["decoder_loss_weights"], b["decoder_target_tokens"] > 0)
  assert (b["decoder_target_tokens"][:, 0] == vocab.byte_vocabulary().vocab_size - 1).all()


def test_prefix_and_causal_lm_shapes(data_cache):
  b = next(
      pipeline.make_batch_iterator(
          "ng_prefix_lm_botchan_bytes", "train", {"inputs": 64, "targets": 32}, 3, seed=1
      )
  )
  assert b["encoder_input_tokens"].shape == (3, 64) and b["decoder_target_tokens"].shape == (3, 32)
  n_in, n_tg = (b["encoder_input_tokens"] > 0).sum(1), (b["decoder_target_tokens"] > 0).sum(1)
  assert ((n_in >= 2) & (n_in <= 64) & (n_tg >= 2) & (n_tg <= 32)).all()
  assert (n_in + n_tg == 63 + 31 + 2).sum() >= 2  # full segments: 94 tokens + two EOS

  b = next(
      pipeline.make_batch_iterator(
          "ng_prefix_lm_botchan_bytes",
          "train",
          {"inputs": 64, "targets": 32},
          3,
          seed=1,
          model_type="decoder",
      )
  )
  assert b["decoder_target_tokens"].shape == (3, 96) and "decoder_causal_attention" in b

  b = next(
      pipeline.make_batch_iterator(
          "ng_causal_lm_botchan_bytes", "train", {"targets": 128}, 5, seed=2
      )
  )
  assert sorted(b) == ["decoder_input_tokens", "decoder_loss_weights", "decoder_target_tokens"]
  assert b["decoder_target_tokens"].shape == (5, 128)
  assert (b["decoder_target_tokens"] > 0).all()  # full segments of a concatenated stream
  assert (b["decoder_target_tokens"] == 1).any()  # EOS separates lines

  b = next(
      pipeline.make_batch_iterator(
          "ng_causal_lm_botchan_bytes", "validation", {"targets": 128}, 2, seed=2, pack=True
      )
  )
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
  _assert_same(
      _take(pipeline.make_batch_iterator(SC, "train", fl, 4, seed=6, start_batch=6), 3), expected
  )


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
    pipeline.make_batch_iterator(
        "ng_span_corruption_wiki_bytes", "train", {"inputs": 512, "targets": 114}, 2, seed=0
    )


# ----------------------------------------------------------------------------- content

BYTE_OFFSET = 3  # seqio.ByteVocabulary: ids 0, 1, 2 are PAD, EOS, UNK; byte b is id b + 3
EOS = 1


def _body(row):
  """The non-padding tokens of a row without their final EOS, checking that EOS is there."""
  tokens = row[row > 0]
  assert tokens[-1] == EOS and EOS not in tokens[:-1]
  return tokens[:-1]


def _text_bytes(tokens):
  return bytes((np.asarray(tokens) - BYTE_OFFSET).astype(np.uint8).tolist())


def test_prefix_lm_inputs_then_targets_are_the_source_text(data_cache):  # noqa: F811
  """Every example is a contiguous cut of the text; in order, the examples are the text."""
  fl = {"inputs": 64, "targets": 32}
  rows = list(
      pipeline.make_batch_iterator("ng_prefix_lm_botchan_bytes", "validation", fl, 1, seed=0)
  )
  source = "".join(
      line + "\n"
      for line in corpora.split_path("botchan", "validation", data_cache).read_text().splitlines()
  ).encode()
  pieces = []
  for i, b in enumerate(rows):
    inputs, targets = _body(b["encoder_input_tokens"][0]), _body(b["decoder_target_tokens"][0])
    assert 1 <= len(inputs) <= 63 and 1 <= len(targets) <= 31
    if i < len(rows) - 1:  # every segment but the stream's last is full: 63 + 31 tokens
      assert len(inputs) + len(targets) == 94
    pieces += [_text_bytes(inputs), _text_bytes(targets)]
  assert b"".join(pieces) == source

  # Decoder-only prefix LM: the same examples as one sequence, the prefix fully visible and
  # the loss on the continuation only.
  dec = list(
      pipeline.make_batch_iterator(
          "ng_prefix_lm_botchan_bytes", "validation", fl, 1, seed=0, model_type="decoder"
      )
  )
  assert len(dec) == len(rows)
  for b, d in zip(rows, dec):
    enc_in = b["encoder_input_tokens"][0][b["encoder_input_tokens"][0] > 0]
    tgt = b["decoder_target_tokens"][0][b["decoder_target_tokens"][0] > 0]
    seq = d["decoder_target_tokens"][0]
    n_in, n = len(enc_in), len(enc_in) + len(tgt)
    np.testing.assert_array_equal(seq[:n], np.concatenate([enc_in, tgt]))
    assert not seq[n:].any()
    np.testing.assert_array_equal(d["decoder_input_tokens"][0], np.concatenate([[0], seq[:-1]]))
    # Fully visible: the positions whose input token (shifted right) is BOS or the prefix.
    np.testing.assert_array_equal(d["decoder_causal_attention"][0], np.arange(len(seq)) < n_in + 1)
    np.testing.assert_array_equal(
        d["decoder_loss_weights"][0], (np.arange(len(seq)) >= n_in) & (np.arange(len(seq)) < n)
    )


def test_a_packed_row_splits_back_into_its_examples(tmp_path, monkeypatch):
  """Causal LM on a corpus of very short lines: each group of 128 lines is one short example,
  so packing puts several in a row; split by segment id, the rows give back the examples."""
  monkeypatch.setenv("NORMGROWTH_DATA", str(tmp_path))
  lines = [chr(97 + i % 26) * (1 + i % 2) for i in range(1200)]
  src = tmp_path / "lines.txt"
  src.write_text("\n\n".join("\n".join(lines[i : i + 12]) for i in range(0, 1200, 12)) + "\n")
  corpora.prepare_text(src, "packlines", tmp_path, progress=False)
  name = tasks.register_corpus_tasks("packlines", vocab_names=("bytes",))[-1]
  assert name == "ng_causal_lm_packlines_bytes"
  kw = dict(shuffle=False, num_epochs=1)
  plain = list(pipeline.make_batch_iterator(name, "train", {"targets": 1024}, 1, 0, **kw))
  packed = list(
      pipeline.make_batch_iterator(name, "train", {"targets": 1024}, 1, 0, pack=True, **kw)
  )
  examples = [
      tuple(b["decoder_target_tokens"][0][b["decoder_target_tokens"][0] > 0]) for b in plain
  ]
  assert all(len(e) < 512 for e in examples)
  segments, per_row = [], []
  for b in packed:
    tokens, ids = b["decoder_target_tokens"][0], b["decoder_segment_ids"][0]
    pos, inp, w = (
        b["decoder_positions"][0],
        b["decoder_input_tokens"][0],
        b["decoder_loss_weights"][0],
    )
    k = int(ids.max())
    per_row.append(k)
    assert sorted(set(ids.tolist()) - {0}) == list(range(1, k + 1))
    for s in range(1, k + 1):
      at = ids == s
      seg = tokens[at]
      np.testing.assert_array_equal(pos[at], np.arange(len(seg)))
      # Teacher forcing restarts in each segment: 0 (BOS), then the segment shifted.
      np.testing.assert_array_equal(inp[at], np.concatenate([[0], seg[:-1]]))
      assert (w[at] == 1).all()
      segments.append(tuple(seg))
    assert not tokens[ids == 0].any() and not w[ids == 0].any()
  assert max(per_row) >= 2  # packing did put several examples in one row
  assert sorted(segments) == sorted(examples)
  # And the examples are the text: each line, newline, EOS, in order.
  stream = [t for e in examples for t in e]
  train_text = corpora.split_path("packlines", "train", tmp_path).read_text().splitlines()
  expected = [
      t
      for line in train_text
      for t in [*(np.frombuffer(line.encode() + b"\n", np.uint8) + BYTE_OFFSET), EOS]
  ]
  assert stream == expected
