"""Word-level sentence LM data, PTB style: the paper's small-LM task (Sec. 3-4, Fig. 3, Fig. 6).

A prepared corpus (``corpora.prepare``, ``prepare_ptb``, ``prepare_wikitext2``, ``prepare_text``)
becomes one padded row per sentence:

* sentences: PTB (``ptb``) has one per line; WikiText-2 (``wikitext2``) is already tokenized
  and is cut after every standalone ``.``/``?``/``!`` token (heading lines ``= ... =`` dropped,
  as the original code did); raw text (the offline corpora) is cut after ``.``/``?``/``!``
  followed by a space and a capital letter, digit or quote, common abbreviations excepted;
* tokens: lowercased whitespace tokens. Tokenized corpora are only lowercased (PTB's number
  token ``N`` kept). Raw text is
  normalised the way Mikolov's PTB is: clitics split off (``do n't``, ``company 's``), every
  token holding a digit becomes ``N``, other punctuation dropped (``$``, ``&``, inner hyphens,
  periods and apostrophes kept: ``high-speed``, ``u.s.``);
* vocabulary: ids ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, then the ``vocab_words`` (10,000)
  most frequent words of the TRAIN split (ties alphabetical); other words become ``<unk>``;
  the model's vocabulary size is ``num_ids(vocab_words) = vocab_words + 3`` whatever the
  corpus holds;
* rows: ``[w_1 .. w_n, <eos>]`` padded with 0 to ``max_len`` (83, PTB's longest sentence of 82
  words plus its end); longer or empty sentences are dropped (counted in ``stats``). The model
  predicts ``w_2 .. w_n, <eos>`` from their prefixes, a pair counting when both tokens are real
  (padding masked: ``tokens != 0``); the first word has no context, as in the original.

The arrays are built once and cached next to the corpus
(``<root>/corpora/<corpus>/word_lm/v<vocab_words>_l<max_len>.npz``), keyed by the corpus
manifest's checksums, so a re-prepared corpus is rebuilt.

Training batches (:func:`batch_iterator`, the trainer's ``data_fn`` for tasks named
``ng_word_lm_<corpus>``) follow the paper's epochs: each epoch is a fresh permutation of the
training sentences (``numpy.random.default_rng([seed, epoch])``), cut into
``len // batch_size`` full batches (the remainder is dropped, as the original's loop did).
Position ``k`` (batches consumed) fixes the epoch and offset, so resuming is exact and free.

For vmapped sweeps (e.g. Fig. 6) use the arrays directly: ``load(corpus).split("train")`` and
``epoch_batches(tokens, batch_size, seed, epoch)`` ([steps, batch, len]).

Example:
  >>> " ".join(ptb_like_tokens("Time Warner's profits jumped 76% to $1.13bn; it didn't say why."))
  "time warner 's profits jumped N to $ N it did n't say why"
  >>> split_raw_sentences("Mr. Smith left. Profits rose 2% in the U.S. He said so.")
  ['Mr. Smith left.', 'Profits rose 2% in the U.S.', 'He said so.']
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import gin
import numpy as np

from normgrowth_jax.data import corpora

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SPECIALS = ("<pad>", "<eos>", "<unk>")
DEFAULT_VOCAB_WORDS = 10_000
DEFAULT_MAX_LEN = 83  # PTB: longest training sentence 82 words, + <eos>
TASK_PREFIX = "ng_word_lm_"
FORMAT_VERSION = 1
TOKENIZED_CORPORA = {"ptb": "lines", "wikitext2": "tokens"}  # sentence rule of each

_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "prof",
    "gen",
    "gov",
    "sen",
    "rep",
    "jr",
    "sr",
    "co",
    "corp",
    "inc",
    "ltd",
    "no",
    "vs",
    "etc",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "mt",
    "ft",
    "lt",
    "col",
    "capt",
    "sgt",
    "rev",
    "fig",
    "approx",
}
_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")
_CLITIC = re.compile(r"(?<=[a-z])(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\$|&|[a-z0-9]+(?:[-.&'/][a-z0-9]+)*\.?")


# ----------------------------------------------------------------------------- text -> words


def split_raw_sentences(text: str) -> list[str]:
  """Sentences of raw English text: cut after . ! ? + space + capital/digit/quote.

  A period right after a known abbreviation ("Mr.", "Jan.") or a single letter ("J. Smith")
  does not end a sentence; an acronym ("the U.S. He said") does.
  """
  out, start = [], 0
  for m in _SENTENCE_END.finditer(text):
    before = text[start : m.start()].split()
    last = before[-1].lower().strip("\"'([") if before else ""
    if m.group(1).startswith(".") and (last in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last)):
      continue
    out.append(text[start : m.end(1)].strip())
    start = m.end()
  tail = text[start:].strip()
  if tail:
    out.append(tail)
  return [s for s in out if s]


def ptb_like_tokens(sentence: str) -> list[str]:
  """Lowercased PTB-style words of one raw sentence (see the module doc).

  Example:
    >>> ptb_like_tokens("High-speed Net use can't slow, says S&P (2004).")
    ['high-speed', 'net', 'use', 'ca', "n't", 'slow', 'says', 's&p', 'N']
  """
  s = sentence.lower().replace("\u2019", "'").replace("\u2018", "'")
  s = _CLITIC.sub(r" \1", s)
  words = []
  for raw in s.split():
    for m in _TOKEN.finditer(raw):
      w = m.group()
      if w.endswith(".") and not re.fullmatch(r"(?:[a-z]\.)+", w):
        w = w[:-1]  # a trailing period is punctuation, except in acronyms like "u.s."
      if any(ch.isdigit() for ch in w):
        w = "N"
      if w:
        words.append(w)
  return words


def _lower_words(line: str) -> list[str]:
  """Whitespace tokens, lowercased except PTB's number token ``N``."""
  return [w if w == "N" else w.lower() for w in line.split()]


def corpus_sentences(corpus: str, lines: Iterable[str]) -> Iterator[list[str]]:
  """Word lists of the sentences in ``lines`` of ``corpus`` (its rule, see the module doc)."""
  rule = TOKENIZED_CORPORA.get(corpus, "raw")
  for line in lines:
    line = line.strip()
    if not line:
      continue
    if rule == "lines":
      yield _lower_words(line)
    elif rule == "tokens":
      if line.startswith("="):
        continue
      sentence = []
      for w in _lower_words(line):
        sentence.append(w)
        if w in (".", "?", "!"):
          yield sentence
          sentence = []
      if sentence:
        yield sentence
    else:
      for s in split_raw_sentences(line):
        words = ptb_like_tokens(s)
        if words:
          yield words


# ----------------------------------------------------------------------------- the dataset


def num_ids(vocab_words: int = DEFAULT_VOCAB_WORDS) -> int:
  """The model's vocabulary size for ``vocab_words`` words: the 3 specials + the words."""
  return vocab_words + len(SPECIALS)


gin.external_configurable(num_ids, module="word_lm")


@dataclasses.dataclass
class WordLMData:
  """One corpus as padded sentence rows.

  Attributes:
    corpus: the corpus name.
    vocab: id -> word (``vocab[0:3]`` are the specials); ``len(vocab) <= num_ids``.
    max_len: the padded length of every row.
    vocab_words: the requested number of words (the model's vocabulary is ``num_ids``).
    splits: ``{split: int32 [n_sentences, max_len]}``, padding 0.
    stats: per split: sentences kept, dropped as too long, tokens, ``<unk>`` rate.
  """

  corpus: str
  vocab: tuple
  max_len: int
  vocab_words: int
  splits: dict
  stats: dict

  @property
  def num_ids(self) -> int:
    return num_ids(self.vocab_words)

  def split(self, name: str) -> np.ndarray:
    if name not in self.splits:
      raise KeyError(f"{self.corpus!r} has splits {sorted(self.splits)}, not {name!r}.")
    return self.splits[name]

  def decode(self, row: Sequence[int]) -> str:
    """The words of one row, up to (not including) ``<eos>``/padding."""
    out = []
    for i in row:
      if int(i) in (PAD_ID, EOS_ID):
        break
      out.append(self.vocab[int(i)])
    return " ".join(out)

  def encode(self, words: Sequence[str]) -> np.ndarray:
    """A padded row [max_len] for a word list (``<eos>`` appended; raises if too long)."""
    index = {w: i for i, w in enumerate(self.vocab)}
    ids = [index.get(w, UNK_ID) for w in words] + [EOS_ID]
    if len(ids) > self.max_len:
      raise ValueError(f"{len(words)} words + <eos> exceed max_len={self.max_len}.")
    return np.asarray(ids + [PAD_ID] * (self.max_len - len(ids)), np.int32)


def build_vocab(sentences: Iterable[Sequence[str]], vocab_words: int) -> tuple:
  """Specials + the ``vocab_words`` most frequent words (ties alphabetical)."""
  counts = collections.Counter(w for s in sentences for w in s)
  for special in SPECIALS:
    counts.pop(special, None)
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_words]
  return SPECIALS + tuple(w for w, _ in ranked)


def encode_sentences(
    sentences: Iterable[Sequence[str]], vocab: Sequence[str], max_len: int
) -> tuple[np.ndarray, dict]:
  """Padded rows [n, max_len] and the counts of kept/dropped sentences and <unk> tokens."""
  index = {w: i for i, w in enumerate(vocab)}
  index.setdefault("<unk>", UNK_ID)
  rows, dropped_long, tokens, unks = [], 0, 0, 0
  for s in sentences:
    if not s:
      continue
    if len(s) + 1 > max_len:
      dropped_long += 1
      continue
    ids = [index.get(w, UNK_ID) for w in s] + [EOS_ID]
    tokens += len(s)
    unks += sum(i == UNK_ID for i in ids)
    rows.append(ids + [PAD_ID] * (max_len - len(ids)))
  arr = np.asarray(rows, np.int32).reshape(-1, max_len)
  return arr, {
      "sentences": int(arr.shape[0]),
      "dropped_too_long": dropped_long,
      "words": tokens,
      "unk_rate": unks / max(tokens, 1),
      "mean_length": (tokens + arr.shape[0]) / max(arr.shape[0], 1),
  }


def cache_path(corpus: str, vocab_words: int, max_len: int, root=None) -> Path:
  return corpora.corpus_dir(corpus, root) / "word_lm" / f"v{vocab_words}_l{max_len}.npz"


def _corpus_key(corpus: str, root) -> dict:
  manifest = corpora.read_manifest(corpus, root)
  return {s: v.get("sha256") for s, v in sorted(manifest["splits"].items())}


def load(
    corpus: str,
    vocab_words: int = DEFAULT_VOCAB_WORDS,
    max_len: int = DEFAULT_MAX_LEN,
    root=None,
    rebuild: bool = False,
) -> WordLMData:
  """The word-level sentence dataset of a prepared corpus (built once, then cached).

  Args:
    corpus: a prepared corpus ("bbc", "botchan", "ptb", "wikitext2", a ``prepare_text`` name).
    vocab_words: how many words the vocabulary keeps (the paper's PTB: 10,000).
    max_len: the padded length (sentence + <eos>); longer sentences are dropped.
    root: the data cache (default ``$NORMGROWTH_DATA`` or ~/.cache/normgrowth_jax).
    rebuild: ignore the cached arrays.

  Raises:
    corpora.CorpusNotPreparedError: naming the command that prepares the corpus.
  """
  corpora.split_path(corpus, "train", root)  # raises with the prepare command if missing
  key = {
      "format": FORMAT_VERSION,
      "corpus": corpus,
      "vocab_words": vocab_words,
      "max_len": max_len,
      "splits": _corpus_key(corpus, root),
  }
  path = cache_path(corpus, vocab_words, max_len, root)
  if path.is_file() and not rebuild:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(str(z["meta"]))
      if meta["key"] == key:
        return WordLMData(
            corpus,
            tuple(str(w) for w in z["vocab"]),
            max_len,
            vocab_words,
            {s: z[f"split_{s}"] for s in meta["stats"]},
            meta["stats"],
        )
  manifest = corpora.read_manifest(corpus, root)
  split_sentences = {}
  for split in manifest["splits"]:
    with open(corpora.split_path(corpus, split, root), encoding="utf-8") as f:
      split_sentences[split] = list(corpus_sentences(corpus, f))
  vocab = build_vocab(split_sentences["train"], vocab_words)
  splits, stats = {}, {}
  for split, sentences in split_sentences.items():
    splits[split], stats[split] = encode_sentences(sentences, vocab, max_len)
  stats["vocab_words_found"] = len(vocab) - len(SPECIALS)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.stem + ".tmp.npz")
  np.savez(
      tmp,
      vocab=np.asarray(vocab),
      meta=np.asarray(
          json.dumps(
              {
                  "key": key,
                  "stats": {s: stats[s] for s in splits},
                  "vocab_words_found": stats["vocab_words_found"],
              }
          )
      ),
      **{f"split_{s}": a for s, a in splits.items()},
  )
  os.replace(tmp, path)
  return WordLMData(corpus, vocab, max_len, vocab_words, splits, {s: stats[s] for s in splits})


def corpus_of_task(task_name: str) -> str:
  """``"ng_word_lm_bbc"`` -> ``"bbc"``; raises ValueError for other names."""
  if not task_name.startswith(TASK_PREFIX) or len(task_name) == len(TASK_PREFIX):
    raise ValueError(
        f"Task {task_name!r} is not a word-LM task: name it "
        f"'{TASK_PREFIX}<corpus>', e.g. '{TASK_PREFIX}bbc' or '{TASK_PREFIX}ptb'."
    )
  return task_name[len(TASK_PREFIX) :]


def task_name(corpus: str) -> str:
  return TASK_PREFIX + corpus


def unigram_loss(
    data: WordLMData, split: str = "validation", max_sentences: int | None = None
) -> float:
  """Cross-entropy (nats/token) on ``split`` of the train split's unigram distribution.

  Over the predicted tokens (every real token but a sentence's first word) of the first
  ``max_sentences`` sentences (None: all), add-one smoothed over ``num_ids`` ids: the loss a
  model reaches by learning unigram statistics only (the original's post-norm runs stopped
  there).
  """

  def targets(rows):
    t = rows[:, 1:]
    return t[t != PAD_ID]

  counts = np.bincount(targets(data.split("train")), minlength=data.num_ids) + 1.0
  logp = np.log(counts / counts.sum())
  return float(-logp[targets(data.split(split)[:max_sentences])].mean())


# ----------------------------------------------------------------------------- batches


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """The order of the ``n`` training sentences in ``epoch`` (deterministic)."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
  if n < batch_size:
    raise ValueError(f"{n} training sentences cannot fill one batch of {batch_size}.")
  return n // batch_size


def epoch_batches(tokens: np.ndarray, batch_size: int, seed: int, epoch: int) -> np.ndarray:
  """All full batches of one epoch, [steps_per_epoch, batch_size, max_len]."""
  steps = steps_per_epoch(len(tokens), batch_size)
  order = epoch_permutation(len(tokens), seed, epoch)[: steps * batch_size]
  return tokens[order].reshape(steps, batch_size, tokens.shape[1])


class EpochIterator(Iterator[dict]):
  """``{"decoder_target_tokens": [batch, max_len]}`` batches, epoch by epoch.

  Attributes:
    position: batches consumed since the start (pass back as ``start_batch`` to resume).
    steps_per_epoch: full batches per epoch.
  """

  def __init__(self, tokens: np.ndarray, batch_size: int, seed: int, start_batch: int = 0):
    self.tokens, self.batch_size, self.seed = tokens, batch_size, seed
    self.steps_per_epoch = steps_per_epoch(len(tokens), batch_size)
    self.position = start_batch
    self._epoch, self._order = None, None

  def __next__(self) -> dict:
    epoch, i = divmod(self.position, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._order = epoch, epoch_permutation(len(self.tokens), self.seed, epoch)
    idx = self._order[i * self.batch_size : (i + 1) * self.batch_size]
    self.position += 1
    return {"decoder_target_tokens": self.tokens[idx]}


@gin.configurable(module="word_lm")
def batch_iterator(
    task_name: str,
    split: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    seed: int,
    start_batch: int = 0,
    vocab_words: int = DEFAULT_VOCAB_WORDS,
    root=None,
) -> Iterator[dict]:
  """The trainer's ``data_fn`` for ``ng_word_lm_<corpus>``: repeating epochs of ``split``.

  ``feature_lengths["targets"]`` is the padded length (``max_len``).
  """
  if set(feature_lengths) != {"targets"}:
    raise ValueError(
        f"A word-LM task takes TASK_FEATURE_LENGTHS = {{'targets': L}} "
        f"(L = the padded sentence length, 83 for PTB), got {dict(feature_lengths)}."
    )
  data = load(corpus_of_task(task_name), vocab_words, int(feature_lengths["targets"]), root)
  return EpochIterator(data.split(split), batch_size, seed, start_batch)


@gin.configurable(module="word_lm")
def epochs_to_steps(
    task_name: str = gin.REQUIRED,
    epochs: float = 5.0,
    batch_size: int = 16,
    max_len: int = DEFAULT_MAX_LEN,
    vocab_words: int = DEFAULT_VOCAB_WORDS,
    root=None,
) -> int:
  """Training steps of ``epochs`` epochs (``TRAIN_STEPS = @word_lm.epochs_to_steps()``)."""
  data = load(corpus_of_task(task_name), vocab_words, max_len, root)
  return int(round(epochs * steps_per_epoch(len(data.split("train")), batch_size)))
