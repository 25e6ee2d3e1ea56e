"""seqio Tasks, registered on import: one definition for the embedded trainer and T5X.

Names: ``ng_{objective}_{corpus}_{vocab}`` with

- objective: ``span_corruption`` (inputs + targets), ``prefix_lm`` (inputs +
  targets), ``causal_lm`` (targets only);
- corpus: ``bbc``, ``wiki``, ``shakespeare``, ``botchan`` (built-in offline
  corpora), ``wikitext2``, ``ptb``, every corpus prepared from local text files
  that exists under the cache directory at import time (or registered later with
  :func:`register_corpus_tasks`), and ``c4`` (TFDS ``c4/en:3.0.1``);
- vocab: ``bytes`` and ``spm32k`` (built-in corpora share one trained on all
  four, ``python -m normgrowth_jax.data vocab``; other corpora train their own:
  ``... vocab --corpus NAME``); C4 gets ``bytes``
  and ``t5`` (T5's own SentencePiece model, path from ``$NORMGROWTH_T5_SPM``).

Mixtures ``ng_{objective}_offline_{vocab}`` mix the four built-in corpora in
proportion to their training words.

Nothing is read at import: a task whose corpus is not prepared fails at
``get_dataset`` with the command that prepares it. In T5X gin files::

  MIXTURE_OR_TASK_MODULE = "normgrowth_jax.data.tasks"
  MIXTURE_OR_TASK_NAME = "ng_span_corruption_c4_t5"
  TASK_FEATURE_LENGTHS = {"inputs": 512, "targets": 114}

Example:
  >>> from normgrowth_jax.data import tasks
  >>> "ng_span_corruption_bbc_bytes" in tasks.task_names()
  True
"""

from __future__ import annotations

import functools
import os

import seqio
import tensorflow as tf

from normgrowth_jax.data import corpora, lm_objectives, span_corruption, vocab

OBJECTIVES = ("span_corruption", "prefix_lm", "causal_lm")
CORPUS_VOCABS = ("bytes", "spm32k")
C4_VOCABS = ("bytes", "t5")
C4_TFDS_NAME = "c4/en:3.0.1"


class CorpusDataSource(seqio.TextLineDataSource):
  """Text lines of a prepared corpus; the cache directory is resolved when reading.

  Reads ``$NORMGROWTH_DATA`` (or the default) at ``get_dataset`` time, so tasks
  registered at import follow a cache directory chosen later, and a corpus that
  is not prepared raises ``CorpusNotPreparedError`` with the command to run.
  """

  def __init__(self, corpus: str, splits=("train", "validation")):
    self.corpus = corpus
    super().__init__(
        {s: f"$NORMGROWTH_DATA/corpora/{corpus}/{s}.txt" for s in splits},
        caching_permitted=False,
    )

  def list_shards(self, split: str):
    return [str(corpora.split_path(self.corpus, split))]

  def num_input_examples(self, split: str) -> int | None:
    manifest = corpora.read_manifest(self.corpus)
    return manifest["splits"][split]["lines"] if manifest else None


class C4DataSource(seqio.TfdsDataSource):
  """TFDS ``c4/en`` that checks the data directory before reading (never downloads)."""

  def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **kwargs):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    data_dir = (
        self.tfds_dataset.data_dir
        or os.environ.get("TFDS_DATA_DIR")
        or tfds.core.constants.DATA_DIR
    )
    name = self.tfds_dataset.name
    try:
      builder = tfds.builder(name, data_dir=data_dir)
      ready = tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))
    except Exception as e:  # pylint: disable=broad-except
      ready, builder = False, e
    if not ready:
      raise FileNotFoundError(
          f"TFDS dataset {name!r} is not prepared under {data_dir} ({builder}). C4 is "
          "never downloaded here: prepare it with TFDS/Apache Beam elsewhere "
          "(https://www.tensorflow.org/datasets/catalog/c4) and set $TFDS_DATA_DIR, "
          "or use an offline corpus (e.g. task ng_span_corruption_bbc_bytes)."
      )
    return super().get_dataset(
        split=split, shuffle=shuffle, seed=seed, shard_info=shard_info, **kwargs
    )


@seqio.map_over_dataset
def _line_to_targets(line):
  return {"targets": tf.strings.join([line, "\n"])}


@seqio.map_over_dataset
def _document_to_targets(x):
  return {"targets": x["text"]}


def _output_features(objective: str, vocabulary: seqio.Vocabulary) -> dict:
  if objective == "causal_lm":
    return {"targets": seqio.Feature(vocabulary, add_eos=False)}
  return {
      "inputs": seqio.Feature(vocabulary, add_eos=True, required=False),
      "targets": seqio.Feature(vocabulary, add_eos=True),
  }


_OBJECTIVE_FNS = {
    "span_corruption": span_corruption.span_corruption,
    "prefix_lm": lm_objectives.prefix_lm,
    "causal_lm": lm_objectives.causal_lm,
}


def _preprocessors(objective: str, to_targets) -> list:
  steps = [to_targets, seqio.preprocessors.tokenize, _OBJECTIVE_FNS[objective]]
  if objective != "causal_lm":
    steps.append(seqio.preprocessors.append_eos_after_trim)
  return steps


def task_name(objective: str, corpus: str, vocab_name: str) -> str:
  return f"ng_{objective}_{corpus}_{vocab_name}"


def _add(name: str, **kwargs) -> str:
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(name, metric_fns=[], **kwargs)
  return name


def register_corpus_tasks(corpus: str, vocab_names=CORPUS_VOCABS) -> list[str]:
  """Register the three objectives for a prepared (or to-be-prepared) corpus; idempotent.

  Args:
    corpus: corpus name (built-in, ``wikitext2``, ``ptb`` or a ``prepare_text`` name).
    vocab_names: e.g. ``("bytes", "spm32k")``; any ``"spm<N>"`` works once
      trained with ``vocab.train_sentencepiece(corpus, N)``.

  Returns:
    The task names.
  """
  splits = (
      ("train", "validation", "test") if corpus in ("wikitext2", "ptb") else ("train", "validation")
  )
  names = []
  for vocab_name in vocab_names:
    vocabulary = vocab.get_vocabulary(vocab_name, corpus)
    for objective in OBJECTIVES:
      names.append(
          _add(
              task_name(objective, corpus, vocab_name),
              source=CorpusDataSource(corpus, splits),
              preprocessors=_preprocessors(objective, _line_to_targets),
              output_features=_output_features(objective, vocabulary),
          )
      )
  return names


def register_c4_tasks(
    tfds_name: str = C4_TFDS_NAME, tfds_data_dir: str | None = None, vocab_names=C4_VOCABS
) -> list[str]:
  """Register ``ng_{objective}_c4_{vocab}`` on TFDS C4 (for users who have it)."""
  names = []
  for vocab_name in vocab_names:
    vocabulary = vocab.get_vocabulary(vocab_name)
    for objective in OBJECTIVES:
      names.append(
          _add(
              task_name(objective, "c4", vocab_name),
              source=C4DataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir),
              preprocessors=_preprocessors(objective, _document_to_targets),
              output_features=_output_features(objective, vocabulary),
          )
      )
  return names


def _train_words(corpus: str) -> float:
  manifest = corpora.read_manifest(corpus)
  if manifest is None:
    corpora.split_path(corpus, "train")  # raises CorpusNotPreparedError
  return float(manifest["splits"]["train"]["words"])


def register_offline_mixtures(vocab_names=CORPUS_VOCABS) -> list[str]:
  """``ng_{objective}_offline_{vocab}``: the built-in corpora, rate = training words."""
  names = []
  for vocab_name in vocab_names:
    for objective in OBJECTIVES:
      name = f"ng_{objective}_offline_{vocab_name}"
      if name not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(
            name,
            [
                (task_name(objective, c, vocab_name), functools.partial(_train_words_of_task, c))
                for c in corpora.BUILTIN_CORPORA
            ],
        )
      names.append(name)
  return names


def _train_words_of_task(corpus: str, task: seqio.Task) -> float:
  del task
  return _train_words(corpus)


def task_names() -> list[str]:
  """All registered ``ng_*`` task names."""
  return sorted(n for n in seqio.TaskRegistry.names() if n.startswith("ng_"))


def register_all() -> None:
  """Register every task and mixture (what importing this module does)."""
  for corpus in (*corpora.BUILTIN_CORPORA, "wikitext2", "ptb"):
    register_corpus_tasks(corpus)
  for corpus in corpora.prepared_corpora():
    register_corpus_tasks(corpus)
  register_c4_tasks()
  register_offline_mixtures()


register_all()
