"""Vocabularies: bytes (default), SentencePiece trained here on a corpus, or T5's own.

All three are seqio vocabularies with 100 extra ids, the sentinels of span
corruption. seqio numbers extra ids in descending order from the top, so
``<extra_id_0>`` is ``vocab_size - 1`` (T5's convention).

- ``"bytes"``: ``seqio.ByteVocabulary(extra_ids=100)``: 3 specials (pad 0, eos 1,
  unk 2) + 256 bytes + 100 extra ids = 359 ids; no file needed.
- ``"spm32k"`` (generally ``"spm<N>"`` or ``"spm<N>k"``): a unigram SentencePiece
  model with N pieces trained offline (T5's special ids: pad 0, eos 1, unk 2, no
  bos) + 100 extra ids. It is trained on the train split(s) of a *vocabulary
  corpus*: ``"offline"`` = the four built-in corpora together (one shared vocab,
  as T5 shares one; ~12.6 MB, no single built-in corpus has 32k distinct pieces)
  or any one prepared corpus; cached as
  ``<root>/corpora/<vocab corpus>/spm_unigram_<N>.model``.
- ``"t5"``: T5's released model (``cc_all.32000``) from a path: the
  ``NORMGROWTH_T5_SPM`` environment variable, else T5X's default GCS location
  (only for users with access to it).

Example:
  >>> from normgrowth_jax.data import vocab
  >>> v = vocab.get_vocabulary("bytes")
  >>> v.vocab_size, v.encode("hi")
  (359, [107, 108])
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import seqio

from normgrowth_jax.data import corpora

DEFAULT_EXTRA_IDS = 100
T5_SPM_DEFAULT = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"


def byte_vocabulary(extra_ids: int = DEFAULT_EXTRA_IDS) -> seqio.ByteVocabulary:
  return seqio.ByteVocabulary(extra_ids=extra_ids)


OFFLINE = "offline"  # vocabulary corpus: all built-in corpora together


def vocab_corpus(corpus: str) -> str:
  """The corpus a task's SentencePiece vocab is trained on: built-ins share ``"offline"``."""
  return OFFLINE if corpus in corpora.BUILTIN_CORPORA else corpus


def spm_path(corpus: str, vocab_size: int, root=None) -> Path:
  return corpora.corpus_dir(corpus, root) / f"spm_unigram_{vocab_size}.model"


def _train_files(corpus: str, root) -> list[Path]:
  names = corpora.BUILTIN_CORPORA if corpus == OFFLINE else (corpus,)
  return [corpora.split_path(name, "train", root) for name in names]


def train_sentencepiece(
    corpus: str,
    vocab_size: int = 32_000,
    root=None,
    *,
    input_sentence_size: int = 2_000_000,
    force: bool = False,
    num_threads: int = 2,
) -> Path:
  """Train a unigram SentencePiece model on prepared train split(s) (once).

  Args:
    corpus: a prepared corpus name (see ``corpora.prepare``), or ``"offline"``
      for all four built-in corpora together.
    vocab_size: number of pieces, specials included (T5: 32,000).
    root: cache directory.
    input_sentence_size: at most this many lines are sampled for training.
    force: retrain even if the model file exists.
    num_threads: trainer threads.

  Returns:
    Path of the ``.model`` file (written atomically next to the corpus).
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  path = spm_path(corpus, vocab_size, root)
  if path.is_file() and not force:
    return path
  train_files = _train_files(corpus, root)
  path.parent.mkdir(parents=True, exist_ok=True)
  prefix = path.with_name(path.stem + ".tmp")
  try:
    spm.SentencePieceTrainer.train(
        input=",".join(map(str, train_files)),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,  # T5's ids
        character_coverage=0.9995,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=max(100_000, 10 * vocab_size),
        num_threads=num_threads,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise ValueError(
        f"SentencePiece could not train {vocab_size} pieces on corpus {corpus!r} "
        f"({', '.join(map(str, train_files))}): {e}. Choose a smaller vocab_size "
        "for a small corpus."
    ) from e
  os.replace(f"{prefix}.model", path)
  Path(f"{prefix}.vocab").unlink(missing_ok=True)
  return path


class CorpusSentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """A SentencePiece vocabulary whose model file is resolved (and checked) at first use.

  The task registry builds vocabularies at import time; the cache directory
  (``$NORMGROWTH_DATA``) and the model file are looked up only when the
  vocabulary is first used, and a missing model says how to train it.
  """

  def __init__(self, corpus: str, vocab_size: int, extra_ids: int = DEFAULT_EXTRA_IDS):
    self.corpus, self.num_pieces = corpus, vocab_size
    super().__init__(str(spm_path(corpus, vocab_size)), extra_ids=extra_ids)

  def _model_context(self):
    if not self._model:
      path = spm_path(self.corpus, self.num_pieces)
      if not path.is_file():
        raise FileNotFoundError(
            f"SentencePiece model {path} does not exist. Train it once with:\n"
            f"  python -m normgrowth_jax.data vocab --corpus {self.corpus} "
            f"--size {self.num_pieces}"
        )
      self._sentencepiece_model_file = str(path)
    return super()._model_context()


class T5SentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """T5's released SentencePiece model (+100 extra ids), path checked at first use."""

  def __init__(self, path: str | None = None, extra_ids: int = DEFAULT_EXTRA_IDS):
    self._explicit_path = path
    super().__init__(path or T5_SPM_DEFAULT, extra_ids=extra_ids)

  def _model_context(self):
    if not self._model:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top

      path = self._explicit_path or os.environ.get("NORMGROWTH_T5_SPM", T5_SPM_DEFAULT)
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"T5's SentencePiece model is not at {path}. Point $NORMGROWTH_T5_SPM at "
            "your copy of cc_all.32000/sentencepiece.model (it is not available "
            "offline here; use vocabulary 'bytes' or 'spm32k' instead)."
        )
      self._sentencepiece_model_file = path
    return super()._model_context()


def parse_spm_name(name: str) -> int | None:
  """``"spm32k"`` -> 32000, ``"spm500"`` -> 500, other names -> None."""
  m = re.fullmatch(r"spm(\d+)(k?)", name)
  if not m:
    return None
  return int(m.group(1)) * (1000 if m.group(2) else 1)


def get_vocabulary(name: str, corpus: str | None = None) -> seqio.Vocabulary:
  """A vocabulary by name: ``"bytes"``, ``"t5"``, or ``"spm<N>[k]"``.

  For ``"spm<N>"``, ``corpus`` is the task's corpus; built-in corpora share the
  ``"offline"`` vocabulary (see :func:`vocab_corpus`).
  """
  if name == "bytes":
    return byte_vocabulary()
  if name == "t5":
    return T5SentencePieceVocabulary()
  size = parse_spm_name(name)
  if size is not None:
    if corpus is None:
      raise ValueError(f"Vocabulary {name!r} is trained on a corpus; pass corpus=.")
    return CorpusSentencePieceVocabulary(vocab_corpus(corpus), size)
  raise ValueError(f"Unknown vocabulary {name!r}: use 'bytes', 'spm32k' (or 'spm<N>'), or 't5'.")
