"""Vocabularies: bytes, a small SentencePiece trained offline, sentinels, clear errors."""

import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from normgrowth_jax.data import corpora, pipeline, tasks, vocab


def test_byte_vocabulary_sentinels():
  v = vocab.get_vocabulary("bytes")
  assert v.vocab_size == 3 + 256 + 100
  assert v.encode("Hi") == [ord("H") + 3, ord("i") + 3]
  assert v.decode([ord("H") + 3]) == "H"


def test_small_sentencepiece_trains_offline(data_cache):
  # A local-text corpus trains its own vocabulary (built-ins share "offline").
  corpora.prepare_text(
      corpora.split_path("botchan", "train", data_cache), "novel", data_cache, progress=False
  )
  path = vocab.train_sentencepiece("novel", 400, data_cache)
  assert path.name == "spm_unigram_400.model" and path.parent.name == "novel"
  v = tasks.register_corpus_tasks("novel", ("spm400",))
  voc = vocab.get_vocabulary("spm400", "novel")
  assert voc.vocab_size == 500 and voc.eos_id == 1 and voc.unk_id == 2
  text = "I was sent to the middle school in Shikoku."
  ids = voc.encode(text)
  assert voc.decode(ids) == text and len(ids) < len(text) / 2
  assert voc.encode("<extra_id_0>") != [] and voc.decode([499]) == "<extra_id_0>"
  b = next(
      pipeline.make_batch_iterator(
          "ng_span_corruption_novel_spm400", "train", {"inputs": 128, "targets": 32}, 2, seed=0
      )
  )
  assert (b["decoder_target_tokens"][:, 0] == 499).all()  # first sentinel = vocab_size - 1
  assert b["encoder_input_tokens"].max() <= 499
  assert v[0] == "ng_span_corruption_novel_spm400"


def test_spm_name_parsing_and_shared_offline_vocab():
  assert vocab.parse_spm_name("spm32k") == 32_000 and vocab.parse_spm_name("spm500") == 500
  assert vocab.parse_spm_name("bytes") is None
  assert vocab.vocab_corpus("bbc") == "offline" and vocab.vocab_corpus("mytext") == "mytext"


def test_missing_spm_model_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("NORMGROWTH_DATA", str(tmp_path))
  with pytest.raises(
      FileNotFoundError, match="python -m normgrowth_jax.data vocab --corpus offline"
  ):
    vocab.get_vocabulary("spm32k", "bbc").encode("x")
  monkeypatch.setenv("NORMGROWTH_T5_SPM", str(tmp_path / "nope.model"))
  with pytest.raises(FileNotFoundError, match="NORMGROWTH_T5_SPM"):
    vocab.get_vocabulary("t5").encode("x")


def test_too_large_vocab_is_a_clear_error(data_cache):
  with pytest.raises(ValueError, match="smaller vocab_size"):
    vocab.train_sentencepiece("botchan", 60_000, data_cache)
