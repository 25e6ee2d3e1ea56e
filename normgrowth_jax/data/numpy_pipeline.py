"""The TensorFlow-free data path: T5's objectives on byte tokens in NumPy, as a ``data_fn``.

Accelerator images rarely have TensorFlow; this module imports neither TensorFlow nor
seqio (only NumPy, gin and ``corpora``) and yields the batches of the seqio path
(``train.batch_iterator`` / ``pipeline.make_batch_iterator``, unpacked) for the tasks
``ng_{span_corruption,prefix_lm,causal_lm}_{corpus}_bytes``:

- tokens: seqio's ``ByteVocabulary(extra_ids=100)``: UTF-8 byte b -> b + 3 (pad 0, eos 1,
  unk 2), 359 ids; every text line gets a ``"\\n"`` (as the seqio tasks append);
- segments: groups of 128 consecutive lines are concatenated and cut into segments
  (seqio's ``reduce_concat_tokens`` + ``split_tokens``);
- ``span_corruption``: segments of ``random_spans_helper(inputs)[0]`` tokens, T5's
  i.i.d. random spans (noise density 0.15, mean span 3), sentinels ``358, 357, ...``
  (``<extra_id_0>``, ``<extra_id_1>``, ...), EOS appended: the semantics of
  ``span_corruption.py``, with NumPy's random numbers instead of TensorFlow's;
- ``prefix_lm``: segments of ``(inputs - 1) + (targets - 1)`` tokens split at a uniform
  random point, EOS appended to both;
- ``causal_lm``: an EOS after every line, segments of exactly ``targets`` tokens;
- features: T5X's names and int32 as seqio's ``EncDecFeatureConverter`` (with ``inputs``)
  or ``DecoderFeatureConverter`` (``targets`` only) give them, unpacked.

Determinism and resumption: example i of epoch e is segment ``perm_e[i]`` (a permutation
seeded by ``(seed, e)``; identity for unshuffled splits) with its noise seeded by
``(seed, e, segment)``; ``start_batch=k`` yields exactly the batches from k on without
computing the first k (O(1), where the seqio path replays them). The random numbers differ
from the seqio path's, the distributions are the same (``tests/test_data_numpy.py``
compares them); unshuffled causal-LM batches are identical.

Text comes from the prepared corpus of the task (``$NORMGROWTH_DATA/corpora/<corpus>``,
``python -m normgrowth_jax.data prepare``), or from ``source``: another corpus name, a
text file, or ``"builtin"`` (CPython's Language Reference, ``pydoc_data.topics``: ~0.5 MB
of English in every standard Python installation, for machines without the corpora), or
from ``texts`` given directly.

gin (the trainer imports this module, so no gin ``import`` is needed)::

  train.train.data_fn = @numpy_data.batches
  train.validation_loss.data_fn = @numpy_data.batches
  numpy_data.batches.source = 'builtin'    # optional

Example:
  >>> it = batches("ng_span_corruption_any_bytes", "train", {"inputs": 64, "targets": 16},
  ...              batch_size=2, seed=0, texts="The quick brown fox jumps over the dog.\\n" * 20)
  >>> b = next(it)
  >>> sorted(b), b["encoder_input_tokens"].shape, it.position
  (['decoder_input_tokens', 'decoder_loss_weights', 'decoder_target_tokens', 'encoder_input_tokens'], (2, 64), 1)
  >>> int(b["encoder_input_tokens"][0, -1]) == EOS_ID, int(b["decoder_target_tokens"][0, 0])
  (True, 358)
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Mapping, Sequence, Union

import gin
import numpy as np

from normgrowth_jax.data import corpora

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SPECIAL_IDS = 3  # seqio.ByteVocabulary: byte b is id b + 3
EXTRA_IDS = 100
BYTE_VOCAB_SIZE = NUM_SPECIAL_IDS + 256 + EXTRA_IDS  # 359, as vocab.get_vocabulary("bytes")
NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0
CONCAT_LINES = 128  # lines concatenated before cutting segments (seqio path: concat_batch_size)
OBJECTIVES = ("span_corruption", "prefix_lm", "causal_lm")
BUILTIN = "builtin"
_TASK = re.compile(r"^ng_(span_corruption|prefix_lm|causal_lm)_(.+)_(\w+?)$")
_NEWLINE = ord("\n")

Texts = Union[str, bytes, Sequence[str]]


# ------------------------------------------------------------------------- objectives


def _span_counts(tokens_length: int, noise_density: float, mean_noise_span_length: float):
  num_noise = int(round(tokens_length * noise_density))
  num_noise = min(max(num_noise, 1), tokens_length - 1)
  num_spans = max(1, int(round(num_noise / mean_noise_span_length)))
  return num_noise, num_spans


def random_spans_helper(
    inputs_length: int = 512,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
    extra_tokens_per_span_inputs: int = 1,
    extra_tokens_per_span_targets: int = 1,
) -> tuple[int, int]:
  """Raw segment length whose corruption fills ``inputs_length`` (EOS included).

  Returns:
    ``(tokens_length, targets_length)``: the largest raw length whose corrupted
    inputs (non-noise + one sentinel per span + EOS) fit in ``inputs_length``,
    and the resulting targets length (noise + one sentinel per span + EOS).

  Example:
    >>> random_spans_helper(512)
    (568, 114)
  """

  def lengths(tokens_length):
    num_noise, num_spans = _span_counts(tokens_length, noise_density, mean_noise_span_length)
    inputs = tokens_length - num_noise + num_spans * extra_tokens_per_span_inputs + 1
    targets = num_noise + num_spans * extra_tokens_per_span_targets + 1
    return inputs, targets

  if inputs_length < 3:
    raise ValueError(f"inputs_length must be at least 3, got {inputs_length}.")
  tokens_length = 2
  while lengths(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  return tokens_length, lengths(tokens_length)[1]


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths ``[num_segments]`` of a uniformly random partition of ``num_items`` into non-empty parts.

  Example:
    >>> random_segmentation(10, 3, np.random.default_rng(0)).tolist()
    [6, 1, 3]
  """
  cuts = np.sort(rng.choice(num_items - 1, num_segments - 1, replace=False)) + 1
  return np.diff(np.concatenate([[0], cuts, [num_items]]))


def random_spans_noise_mask(
    length: int,
    rng: np.random.Generator,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> np.ndarray:
  """Boolean noise mask ``[length]`` with T5's random-spans semantics (``span_corruption.py``'s).

  ``round(length * noise_density)`` noise tokens (clipped to [1, length - 1]) in
  ``round(num_noise / mean_noise_span_length)`` spans (clipped to [1, min(num_noise,
  length - num_noise)]); noise and non-noise are each partitioned uniformly at random and
  interleaved starting with non-noise, so the mask ends with noise (length >= 2).

  Example:
    >>> mask = random_spans_noise_mask(100, np.random.default_rng(0))
    >>> int(mask.sum()), bool(mask[0]), bool(mask[-1])
    (15, False, True)
  """
  orig_length, length = length, max(length, 2)
  num_noise = int(np.clip(np.round(length * noise_density), 1, length - 1))
  num_spans = int(
      np.clip(np.round(num_noise / mean_noise_span_length), 1, min(num_noise, length - num_noise))
  )
  noise_lengths = random_segmentation(num_noise, num_spans, rng)
  nonnoise_lengths = random_segmentation(length - num_noise, num_spans, rng)
  runs = np.stack([nonnoise_lengths, noise_lengths], axis=1).ravel()
  return np.repeat(np.tile([False, True], num_spans), runs)[:orig_length]


def noise_span_to_unique_sentinel(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab_size: int = BYTE_VOCAB_SIZE
) -> np.ndarray:
  """Replace each run of ``noise_mask`` by one sentinel (vocab_size - 1, vocab_size - 2, ...).

  Example:
    >>> noise_span_to_unique_sentinel(np.array([5, 6, 7, 8, 9]),
    ...                               np.array([0, 1, 1, 0, 1], bool)).tolist()
    [5, 358, 8, 357]
  """
  prev = np.concatenate([[False], noise_mask[:-1]])
  first = noise_mask & ~prev
  sentinels = vocab_size - np.cumsum(first)
  return np.where(first, sentinels, tokens)[~(noise_mask & prev)]


def corrupt_spans(
    tokens: np.ndarray,
    rng: np.random.Generator,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
    vocab_size: int = BYTE_VOCAB_SIZE,
) -> dict:
  """``{"inputs", "targets"}`` of one segment (no EOS): sentinels for noise / non-noise runs."""
  mask = random_spans_noise_mask(tokens.size, rng, noise_density, mean_noise_span_length)
  return {
      "inputs": noise_span_to_unique_sentinel(tokens, mask, vocab_size),
      "targets": noise_span_to_unique_sentinel(tokens, ~mask, vocab_size),
  }


def split_prefix(
    tokens: np.ndarray, rng: np.random.Generator, max_inputs: int, max_targets: int
) -> dict:
  """Split at a uniform k with 1 <= k <= max_inputs, n - k <= max_targets (``lm_objectives``').

  Example:
    >>> x = split_prefix(np.arange(10), np.random.default_rng(0), 6, 6)
    >>> len(x["inputs"]) in range(4, 7), len(x["inputs"]) + len(x["targets"])
    (True, 10)
  """
  n = tokens.size
  low = max(1, n - max_targets)
  high = max(low, min(n - 1, max_inputs))
  k = int(rng.integers(low, high + 1))
  return {"inputs": tokens[:k], "targets": tokens[k:]}


# ------------------------------------------------------------------------- text -> segments


def encode_bytes(text: Union[str, bytes]) -> np.ndarray:
  """``seqio.ByteVocabulary().encode``: UTF-8 bytes + 3, as int32.

  Example:
    >>> encode_bytes("hi").tolist()
    [107, 108]
  """
  data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
  return np.frombuffer(data, np.uint8).astype(np.int32) + NUM_SPECIAL_IDS


def _as_bytes(texts: Texts) -> bytes:
  """One newline-terminated byte string: the lines, each with its ``"\\n"``."""
  if isinstance(texts, (str, bytes)):
    data = texts.encode("utf-8") if isinstance(texts, str) else texts
  else:
    data = "".join(line + "\n" for line in texts).encode("utf-8")
  return data if not data or data.endswith(b"\n") else data + b"\n"


def line_groups(
    texts: Texts, eos_per_line: bool = False, lines_per_group: int = CONCAT_LINES
) -> list[np.ndarray]:
  """Token streams of ``lines_per_group`` consecutive lines (each line with its ``"\\n"``).

  ``texts`` is one text (lines split at ``"\\n"``, as TensorFlow's ``TextLineDataset``
  reads a file) or a sequence of lines; ``eos_per_line`` adds an EOS after each line.

  Example:
    >>> [g.tolist() for g in line_groups("a\\nb\\nc", eos_per_line=True, lines_per_group=2)]
    [[100, 13, 1, 101, 13, 1], [102, 13, 1]]
  """
  tokens = encode_bytes(_as_bytes(texts))
  line_ends = np.flatnonzero(tokens == _NEWLINE + NUM_SPECIAL_IDS) + 1
  if eos_per_line:
    tokens = np.insert(tokens, line_ends, EOS_ID)
    line_ends = line_ends + np.arange(1, line_ends.size + 1)
  group_ends = line_ends[lines_per_group - 1 :: lines_per_group]
  if line_ends.size and (not group_ends.size or group_ends[-1] != line_ends[-1]):
    group_ends = np.append(group_ends, line_ends[-1])
  return np.split(tokens, group_ends[:-1]) if group_ends.size else []


def split_segments(groups: Sequence[np.ndarray], length: int) -> list[np.ndarray]:
  """Each group cut into consecutive segments of ``length`` (the last of a group may be shorter).

  Example:
    >>> [s.tolist() for s in split_segments([np.arange(5), np.arange(2)], 2)]
    [[0, 1], [2, 3], [4], [0, 1]]
  """
  return [g[i : i + length] for g in groups for i in range(0, g.size, length)]


def builtin_text(split: str = "train") -> str:
  """CPython's Language Reference (``pydoc_data.topics``), for machines without the corpora.

  Present in every standard CPython installation (it backs ``help("topics")``): ~0.5 MB
  of English prose and code in ~80 topics (Python 3.11; later versions have more). Every 20th topic (sorted by name) is the
  ``"validation"`` split, the rest ``"train"``.

  Example:
    >>> len(builtin_text("train")) > 400_000, "expression" in builtin_text("validation")
    (True, True)
  """
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top

  names = sorted(topics.topics)
  if split == "train":
    names = [n for i, n in enumerate(names) if i % 20]
  elif split == "validation":
    names = names[::20]
  else:
    raise ValueError(f"The builtin text has splits 'train' and 'validation', not {split!r}.")
  return "\n".join(topics.topics[n].strip("\n") for n in names) + "\n"


def parse_task(task_name: str) -> tuple[str, str]:
  """``(objective, corpus)`` of ``ng_{objective}_{corpus}_bytes``.

  Example:
    >>> parse_task("ng_prefix_lm_bbc_bytes")
    ('prefix_lm', 'bbc')
  """
  m = _TASK.match(task_name)
  if not m:
    raise ValueError(
        f"Task {task_name!r} is not ng_{{{','.join(OBJECTIVES)}}}_<corpus>_bytes; "
        "the NumPy data path knows those objectives only."
    )
  if m.group(3) != "bytes":
    raise ValueError(
        f"Task {task_name!r}: the NumPy data path has the byte vocabulary only "
        f"(not {m.group(3)!r}); use the seqio path (train.batch_iterator) for it."
    )
  return m.group(1), m.group(2)


def read_text(corpus: str, split: str, source: str | None = None, root=None) -> bytes:
  """The text of ``split``: from ``source`` (``"builtin"``, a text file or a corpus name),
  else the prepared ``corpus`` (``CorpusNotPreparedError`` says how to prepare it)."""
  if source == BUILTIN:
    return builtin_text(split).encode("utf-8")
  if source is not None and os.path.isfile(source):
    with open(source, "rb") as f:
      return f.read()
  name = source or corpus
  if name == "offline":
    raise ValueError(
        "The NumPy data path reads one corpus, not the 'offline' mixture; use one "
        "of " + ", ".join(corpora.BUILTIN_CORPORA) + " or the seqio path."
    )
  with open(corpora.split_path(name, split, root), "rb") as f:
    return f.read()


# ------------------------------------------------------------------------- batches


class NumpyBatchIterator(Iterator[dict]):
  """Batches ``{feature: int32 [batch, length]}`` of one objective; counts its position.

  Attributes:
    position: batches consumed since the start of the stream (``start_batch`` included):
      pass it back as ``start_batch`` to resume.
  """

  def __init__(
      self,
      segments: Sequence[np.ndarray],
      objective: str,
      feature_lengths: Mapping[str, int],
      batch_size: int,
      seed: int,
      start_batch: int,
      shuffle: bool,
      num_epochs: int | None,
      drop_remainder: bool,
  ):
    self.segments, self.objective = list(segments), objective
    self.lengths = dict(feature_lengths)
    self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
    self.num_epochs, self.drop_remainder = num_epochs, drop_remainder
    self.position = start_batch
    self._order_epoch, self._order = None, None

  def _order_of(self, epoch: int) -> np.ndarray:
    if self._order_epoch != epoch:
      n = len(self.segments)
      self._order_epoch = epoch
      self._order = (
          np.random.default_rng([self.seed, 0, epoch]).permutation(n)
          if self.shuffle
          else np.arange(n)
      )
    return self._order

  def example(self, epoch: int, index: int) -> dict:
    """``{"inputs"?, "targets"}`` of example ``index`` of ``epoch`` (EOS included, unpadded)."""
    segment = int(self._order_of(epoch)[index])
    tokens = self.segments[segment]
    if self.objective == "causal_lm":
      return {"targets": tokens}
    rng = np.random.default_rng([self.seed, 1, epoch, segment])
    if self.objective == "span_corruption":
      x = corrupt_spans(tokens, rng)
    else:
      x = split_prefix(tokens, rng, self.lengths["inputs"] - 1, self.lengths["targets"] - 1)
    return {k: np.append(v[: self.lengths[k] - 1], EOS_ID) for k, v in x.items()}

  def __next__(self) -> dict:
    n = len(self.segments)
    first = self.position * self.batch_size
    last = first + self.batch_size
    if self.num_epochs is not None:
      last = min(last, n * self.num_epochs)
    if last <= first or (self.drop_remainder and last - first < self.batch_size):
      raise StopIteration
    examples = [self.example(*divmod(i, n)) for i in range(first, last)]
    self.position += 1
    return to_features(examples, self.lengths)


def to_features(
    examples: Sequence[Mapping[str, np.ndarray]], feature_lengths: Mapping[str, int]
) -> dict:
  """T5X features of unpacked examples, as seqio's ``EncDecFeatureConverter`` (with
  ``inputs``) or ``DecoderFeatureConverter`` give them.

  Example:
    >>> b = to_features([{"targets": np.array([5, 6, 1])}], {"targets": 4})
    >>> {k: v.tolist() for k, v in b.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'decoder_target_tokens': [[5, 6, 1, 0]], 'decoder_input_tokens': [[0, 5, 6, 1]],
     'decoder_loss_weights': [[1, 1, 1, 0]]}
  """

  def pad(key):
    out = np.zeros((len(examples), feature_lengths[key]), np.int32)
    for row, x in zip(out, examples):
      row[: x[key].size] = x[key]
    return out

  targets = pad("targets")
  batch = {"encoder_input_tokens": pad("inputs")} if "inputs" in feature_lengths else {}
  batch["decoder_target_tokens"] = targets
  batch["decoder_input_tokens"] = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
  batch["decoder_loss_weights"] = (targets != PAD_ID).astype(np.int32)
  return batch


def make_segments(texts: Texts, objective: str, feature_lengths: Mapping[str, int]) -> list:
  """The objective's raw segments of ``texts`` (before noise / split points)."""
  if objective == "causal_lm":
    if set(feature_lengths) != {"targets"}:
      raise ValueError(
          f"causal_lm takes feature_lengths {{'targets': L}}, got {dict(feature_lengths)}."
      )
    return split_segments(line_groups(texts, eos_per_line=True), feature_lengths["targets"])
  if "inputs" not in feature_lengths or "targets" not in feature_lengths:
    raise ValueError(
        f"{objective} needs feature_lengths {{'inputs': N, 'targets': M}}, "
        f"got {dict(feature_lengths)}."
    )
  groups = line_groups(texts)
  if objective == "prefix_lm":
    segments = split_segments(groups, feature_lengths["inputs"] + feature_lengths["targets"] - 2)
    return [s for s in segments if s.size >= 2]
  tokens_length, targets_length = random_spans_helper(feature_lengths["inputs"])
  if targets_length > feature_lengths["targets"]:
    raise ValueError(
        f"inputs length {feature_lengths['inputs']} gives span-corruption targets of "
        f"{targets_length} tokens, more than targets length {feature_lengths['targets']}; "
        f"use targets >= {targets_length} (T5: inputs 512 / targets 114)."
    )
  return split_segments(groups, tokens_length)


@gin.configurable(module="numpy_data")
def batches(
    task_name: str,
    split: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    seed: int,
    start_batch: int = 0,
    *,
    source: str | None = None,
    texts: Texts | Mapping[str, Texts] | None = None,
    shuffle: bool | None = None,
    num_epochs: int | None = None,
    root=None,
) -> NumpyBatchIterator:
  """The trainer's ``data_fn`` without TensorFlow: batches of ``ng_{objective}_{corpus}_bytes``.

  Args:
    task_name: ``ng_{span_corruption,prefix_lm,causal_lm}_{corpus}_bytes``; with
      ``source`` or ``texts`` the corpus part only names the run.
    split: ``"train"`` (shuffled, repeated, incomplete batches dropped), ``"validation"``
      (one epoch in order, the last batch may be smaller), ``"test"`` where it exists.
    feature_lengths: ``{"inputs": N, "targets": M}`` (``{"targets": M}`` for causal LM).
    batch_size: examples per batch.
    seed: seeds the shuffle, span noise and prefix split points.
    start_batch: the resume position: the batches from this one on.
    source: ``"builtin"`` (:func:`builtin_text`), a text file (every split) or a prepared
      corpus name, instead of the task's corpus.
    texts: the text itself (a string, bytes or a list of lines), for every split, or
      ``{split: text}``; wins over ``source``.
    shuffle: default True for ``"train"``.
    num_epochs: None repeats forever (default for ``"train"``, others: 1).
    root: the corpora's cache directory (default ``$NORMGROWTH_DATA``).

  Returns:
    A :class:`NumpyBatchIterator` (``.position`` = batches consumed).
  """
  if batch_size < 1 or start_batch < 0:
    raise ValueError(f"Need batch_size >= 1 and start_batch >= 0, got {batch_size}, {start_batch}.")
  objective, corpus = parse_task(task_name)
  if isinstance(texts, Mapping):
    texts = texts[split]
  if texts is None:
    texts = read_text(corpus, split, source, root)
  is_train = split == "train"
  if num_epochs is None and not is_train:
    num_epochs = 1
  segments = make_segments(texts, objective, feature_lengths)
  if not segments:
    raise corpora.EmptyCorpusError(f"Split {split!r} of {task_name!r} has no text.")
  return NumpyBatchIterator(
      segments,
      objective,
      feature_lengths,
      batch_size,
      seed,
      start_batch,
      shuffle=is_train if shuffle is None else shuffle,
      num_epochs=num_epochs,
      drop_remainder=is_train or num_epochs is None,
  )
