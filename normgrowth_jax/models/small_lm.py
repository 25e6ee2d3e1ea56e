"""The paper's small causal language model (Merrill et al. 2021, Sec. 3-4), in Flax linen.

Three block variants (`SmallLMConfig.norm`):

* ``"prenorm_paper"``: x + LN(F(x)), the paper's "pre-norm" (LN before the residual add);
  approximately 1-homogeneous in the parameters.
* ``"postnorm"``: LN(x + F(x)), the original Transformer.
* ``"preln"``: x + F(LN(x)), the standard pre-LN Transformer (with a final LayerNorm).

`use_bias=False` removes every bias: attention, MLP, LayerNorm beta and the classifier.

Attention masks (`SmallLMConfig.attention_mask`):

* ``"causal"`` (default): future scores are set to -inf and padding keys are masked: query t
  sees exactly the real tokens 0..t.
* ``"original_leaky"``: the original code's mask (viking-sudo-rm/norm-growth, SiSelfAttention
  with ``masked=True``), kept to measure what it changed: the scores are MULTIPLIED by the 0/1
  causal matrix, so every future score becomes 0 (not -inf) and still takes part in the
  softmax; padding keys are not masked. A query whose visible scores are all negative therefore
  puts most of its weight on the future and padding positions (in the saturated limit: all of
  it, uniformly), and the future tokens leak into the prediction. The `mask` argument then only
  marks real tokens for losses and statistics. See `leaky_attention_scores`.
* ``"none"``: no mask at all (every key, future and padding included, takes part), as the
  original's Fig. 6 script ran PyTorch's ``nn.TransformerEncoder`` without ``src_mask``.

The axis attention runs along (`SmallLMConfig.attend_across`):

* ``"sequence"`` (default): each sentence's positions attend to each other.
* ``"batch"``: the original's Fig. 6 script fed its [batch, len, d] embeddings to PyTorch's
  encoder, which reads [len, batch, d] (``batch_first=False``): dimension 0 (our batch) was
  taken for the sequence and dimension 1 (our positions) for the batch. So for each position
  t, the batch's sentences attend to each other at t; nothing mixes positions. The output keeps
  the input's shape and was read as [batch, len] again, so only the attention changes (every
  other operation is per token). The mask then applies along the batch: "causal" lets sentence
  i see sentences j <= i whose token at t is real, "original_leaky" multiplies the scores by
  [j <= i]. Attention weights are [len, heads, batch, batch].

Each layer's attention scores (the softmax's input, [batch, heads, len, len]; after the leaky
mask's product) are sown into the ``intermediates`` collection as
``encoder/layers_{i}/attention/scores``: ``model.apply(..., mutable=["intermediates"])`` returns
them (finite parameters only); see `normgrowth_jax.attention_logits`.

Dropout sites: `dropout` on each sublayer's output (PyTorch's ``dropout1`` / ``dropout2``),
`attention_dropout` on the attention weights (inside ``nn.MultiheadAttention``) and
`activation_dropout` on the MLP's hidden layer (the layer's ``dropout``); PyTorch's
``nn.TransformerEncoderLayer`` uses one rate (0.1 by default) at all of them.

Example:
    >>> import jax, jax.numpy as jnp
    >>> cfg = SmallLMConfig(vocab_size=50, num_layers=2, d_model=16, d_ff=32, num_heads=4,
    ...                     max_len=8)
    >>> model = SmallLM(cfg)
    >>> tokens = jnp.array([[5, 6, 7, 0]])
    >>> params = model.init(jax.random.PRNGKey(0), tokens)["params"]
    >>> out = model.apply({"params": params}, tokens)
    >>> out.logits.shape, len(out.hidden_states), out.attention_weights[0].shape
    ((1, 4, 50), 3, (1, 4, 4, 4))
"""

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from normgrowth_jax import asymptotic as asy
from normgrowth_jax.models.outputs import ModelOutput

NORMS = ("prenorm_paper", "postnorm", "preln")
ACTIVATIONS = ("relu", "gelu")
ATTENTION_MASKS = ("causal", "original_leaky", "none")
ATTEND_ACROSS = ("sequence", "batch")


@dataclasses.dataclass(frozen=True)
class SmallLMConfig:
  """Hyperparameters of `SmallLM`; defaults are the paper's (12 layers, 768, FF 512, 12 heads).

  Attributes:
      vocab_size: number of token ids (the classifier's output size).
      num_layers: number of transformer blocks.
      d_model: width of the residual stream.
      d_ff: hidden width of the MLP.
      num_heads: attention heads; must divide d_model.
      max_len: number of learned positions (longest sequence the model accepts).
      norm: "prenorm_paper" (x + LN(F(x))), "postnorm" (LN(x + F(x))) or "preln"
          (x + F(LN(x)), plus a final LayerNorm).
      use_bias: False removes every bias (attention, MLP, LayerNorm beta, classifier).
      dropout: dropout rate on each sublayer's output (active only with deterministic=False).
      attention_dropout: dropout rate on the attention weights (after the softmax).
      activation_dropout: dropout rate on the MLP's hidden layer (after the activation).
      activation: "relu" (the paper's) or "gelu".
      pad_id: token id treated as padding when no mask is passed.
      attention_mask: "causal" (-inf on future and padding keys) or "original_leaky" (the
          original code's: future scores multiplied by 0, padding visible; see the module doc)
          or "none" (every key visible).
      attend_across: "sequence" (each sentence's positions) or "batch" (for each position,
          the batch's sentences: the original Fig. 6 script's axis swap; see the module doc).
      layer_norm_eps: LayerNorm epsilon (dropped in the saturated limit).
      dtype: computation dtype (parameters stay float32 unless param_dtype says otherwise).
      param_dtype: parameter dtype.
  """

  vocab_size: int
  num_layers: int = 12
  d_model: int = 768
  d_ff: int = 512
  num_heads: int = 12
  max_len: int = 512
  norm: str = "prenorm_paper"
  use_bias: bool = True
  dropout: float = 0.0
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  activation: str = "relu"
  pad_id: int = 0
  attention_mask: str = "causal"
  attend_across: str = "sequence"
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if self.norm not in NORMS:
      raise ValueError(f"SmallLMConfig.norm={self.norm!r}: choose one of {NORMS}.")
    if self.attention_mask not in ATTENTION_MASKS:
      raise ValueError(
          f"SmallLMConfig.attention_mask={self.attention_mask!r}: choose one "
          f"of {ATTENTION_MASKS}."
      )
    if self.attend_across not in ATTEND_ACROSS:
      raise ValueError(
          f"SmallLMConfig.attend_across={self.attend_across!r}: choose one " f"of {ATTEND_ACROSS}."
      )
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"SmallLMConfig.activation={self.activation!r}: choose one of {ACTIVATIONS}."
      )
    if self.d_model % self.num_heads:
      raise ValueError(
          f"d_model={self.d_model} is not divisible by "
          f"num_heads={self.num_heads}; pick sizes where it is."
      )

  @property
  def has_dropout(self) -> bool:
    """Whether any dropout rate is nonzero (training then needs a "dropout" rng)."""
    return any((self.dropout, self.attention_dropout, self.activation_dropout))


def _torch_linear_init(fan_in: int) -> Callable:
  """PyTorch nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in the paper."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Dense(nn.Module):
  """x @ kernel (+ bias) over the last axis, PyTorch-style init; params `kernel`, `bias`."""

  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # x: [..., d_in] -> [..., features]
    d_in = x.shape[-1]
    init = _torch_linear_init(d_in)
    kernel = self.param("kernel", init, (d_in, self.features), self.param_dtype)
    y = asy.dense(x, kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", init, (self.features,), self.param_dtype)
      y = asy.add(y, asy.param(bias.astype(self.dtype), y))
    return y


class LayerNorm(nn.Module):
  """LayerNorm with gain `scale` (init 1) and, if use_bias, offset `bias` (init 0)."""

  use_bias: bool = True
  eps: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # x: [..., d] -> [..., d]
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
    # Statistics in float32 at least (bf16 loses the mean and variance).
    f32 = jnp.promote_types(self.dtype, jnp.float32)
    y = asy.layer_norm(
        x.astype(f32), scale.astype(f32), None if bias is None else bias.astype(f32), self.eps
    )
    return y.astype(self.dtype)


class Embed(nn.Module):
  """Learned lookup table `embedding` [num_embeddings, features], N(0, 1) init as in torch."""

  num_embeddings: int
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):  # ids: [...] int -> [..., features]
    table = self.param(
        "embedding",
        nn.initializers.normal(1.0),
        (self.num_embeddings, self.features),
        self.param_dtype,
    )
    return jnp.take(table, ids, axis=0).astype(self.dtype)


def _dropout(rate, y, deterministic):
  """nn.Dropout(rate) on y in the calling module (identity when rate is 0 or deterministic)."""
  if rate == 0.0 or deterministic:
    return y
  if asy.is_asymptotic(y):
    raise ValueError(
        "Dropout has no saturated limit: call with deterministic=True " "when saturated=True."
    )
  return nn.Dropout(rate)(y, deterministic=False)


class SelfAttention(nn.Module):
  """Multi-head self-attention, scores scaled by 1/sqrt(d_head); params query/key/value/out."""

  config: SmallLMConfig

  @nn.compact
  def __call__(self, x, attend, deterministic=True):
    # x: [b, l, d]; attend: [b, 1, l, l] bool (True = query may attend to key), or with
    # attend_across="batch" [l, 1, b, b] (query sentence i may attend to sentence j at l).
    cfg = self.config
    b, l, d = x.shape
    h = cfg.num_heads
    dh = d // h
    dense = lambda name: Dense(d, cfg.use_bias, cfg.dtype, cfg.param_dtype, name=name)
    q = dense("query")(x).reshape(b, l, h, dh)
    k = dense("key")(x).reshape(b, l, h, dh)
    v = dense("value")(x).reshape(b, l, h, dh)
    # Scores and softmax in float32 (at least): bf16 rounding flips near-tied argmaxes.
    f32 = jnp.promote_types(cfg.dtype, jnp.float32)
    q = asy.mul(q.astype(f32), 1.0 / math.sqrt(dh))
    # Along the sequence: scores [b, h, l_q, l_k]; across the batch: [l, h, b_q, b_k].
    if cfg.attend_across == "batch":
      score_eq, context_eq = "qlhd,klhd->lhqk", "lhqk,klhd->qlhd"
    else:
      score_eq, context_eq = "bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd"
    scores = asy.einsum(score_eq, q, k.astype(f32))
    if cfg.attention_mask == "original_leaky":
      scores = leaky_attention_scores(scores)  # padding visible
      weights = asy.softmax(scores, axis=-1)
    elif cfg.attention_mask == "none":
      weights = asy.softmax(scores, axis=-1)
    else:
      weights = asy.softmax(scores, mask=attend, axis=-1)
    if not asy.is_asymptotic(scores):  # with mutable=["intermediates"]: the softmax's input
      self.sow("intermediates", "scores", scores)
    dropped = _dropout(cfg.attention_dropout, weights, deterministic)
    context = asy.einsum(context_eq, dropped.astype(cfg.dtype), v)
    context = context.reshape(b, l, d)
    return dense("out")(context), weights


class MLP(nn.Module):
  """wo(act(wi(x))); params wi [d_model, d_ff], wo [d_ff, d_model]."""

  config: SmallLMConfig

  @nn.compact
  def __call__(self, x, deterministic=True):  # x: [b, l, d] -> [b, l, d]
    cfg = self.config
    hidden = Dense(cfg.d_ff, cfg.use_bias, cfg.dtype, cfg.param_dtype, name="wi")(x)
    hidden = asy.relu(hidden) if cfg.activation == "relu" else asy.gelu(hidden)
    hidden = _dropout(cfg.activation_dropout, hidden, deterministic)
    return Dense(x.shape[-1], cfg.use_bias, cfg.dtype, cfg.param_dtype, name="wo")(hidden)


class Block(nn.Module):
  """One transformer layer: attention then MLP, each wrapped by the configured norm."""

  config: SmallLMConfig

  def _sublayer(self, x, fn, norm_name, deterministic):
    cfg = self.config
    norm = LayerNorm(cfg.use_bias, cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype, name=norm_name)
    if cfg.norm == "prenorm_paper":  # x + LN(F(x))
      y, aux = fn(x)
      return asy.add(x, norm(_dropout(cfg.dropout, y, deterministic))), aux
    if cfg.norm == "postnorm":  # LN(x + F(x))
      y, aux = fn(x)
      return norm(asy.add(x, _dropout(cfg.dropout, y, deterministic))), aux
    y, aux = fn(norm(x))  # preln: x + F(LN(x))
    return asy.add(x, _dropout(cfg.dropout, y, deterministic)), aux

  @nn.compact
  def __call__(self, x, attend, deterministic=True):
    # x: [b, l, d] -> ([b, l, d], attention weights [b, h, l, l] or [l, h, b, b])
    attention = SelfAttention(self.config, name="attention")
    mlp = MLP(self.config, name="mlp")
    x, weights = self._sublayer(
        x, lambda z: attention(z, attend, deterministic), "attention_norm", deterministic
    )
    x, _ = self._sublayer(x, lambda z: (mlp(z, deterministic), None), "mlp_norm", deterministic)
    return x, weights


class Encoder(nn.Module):
  """The stack of blocks `layers_{i}` (+ `final_norm` for "preln")."""

  config: SmallLMConfig

  @nn.compact
  def __call__(self, x, attend, deterministic=True):
    cfg = self.config
    hidden_states, attention_weights = [x], []
    for i in range(cfg.num_layers):
      x, weights = Block(cfg, name=f"layers_{i}")(x, attend, deterministic)
      hidden_states.append(x)
      attention_weights.append(weights)
    if cfg.norm == "preln":
      x = LayerNorm(
          cfg.use_bias, cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype, name="final_norm"
      )(x)
    return x, hidden_states, attention_weights


def causal_attention_mask(mask):
  """[batch, len] bool (True = real token) -> [batch, 1, len, len] bool, query-major.

  Query t may attend to key s iff s <= t and s is a real token.
  """
  length = mask.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  return causal[None, None] & mask[:, None, None, :]


def leaky_attention_scores(scores):
  """The original code's "causal" masking: scores [..., q, k] times the 0/1 matrix [k <= q].

  Future scores become exactly 0 and stay in the softmax (no -inf, no padding mask):
  ``softmax(scores * tril)``, as ``SiSelfAttention`` did with ``masked=True``. Works on plain
  arrays and, term by term (the product with a constant 0/1 matrix is linear), on the
  `asymptotic` series of the saturated limit, where a row whose visible leading scores are
  all negative attends uniformly to its zero-scored future positions.

  Example:
      >>> import jax, jax.numpy as jnp
      >>> s = jnp.array([[1.0, 2.0], [-1.0, -3.0]])
      >>> leaky_attention_scores(s).tolist()
      [[1.0, 0.0], [-1.0, -3.0]]
  """
  length_q, length_k = scores.shape[-2], scores.shape[-1]
  keep = jnp.tril(jnp.ones((length_q, length_k), bool))  # [q, k]: k <= q
  if asy.is_asymptotic(scores):
    return scores.map_terms(lambda c: jnp.where(keep, c, jnp.zeros((), c.dtype)))
  return jnp.where(keep, scores, jnp.zeros((), scores.dtype))


class SmallLM(nn.Module):
  """Causal LM: token + learned position embeddings, `encoder`, `classifier`.

  Parameter paths: embed/embedding, pos_embed/embedding,
  encoder/layers_{i}/attention/{query,key,value,out}/{kernel,bias},
  encoder/layers_{i}/mlp/{wi,wo}/{kernel,bias},
  encoder/layers_{i}/{attention_norm,mlp_norm}/{scale,bias},
  encoder/final_norm/{scale,bias} ("preln" only), classifier/{kernel,bias}.
  """

  config: SmallLMConfig

  @nn.compact
  def __call__(self, tokens, mask=None, positions=None, *, saturated=False, deterministic=True):
    """Runs the model.

    Args:
        tokens: [batch, len] int token ids.
        mask: optional [batch, len] bool, True at real tokens (default tokens != pad_id);
            with attention_mask="original_leaky" or "none" it does not enter the
            attention; with attend_across="batch" it masks sentences (see the module doc).
        positions: optional [batch, len] or [len] int positions (default 0..len-1).
        saturated: if True, run the exact rho -> inf limit and return leading
            coefficients (hidden states, logits) and hard attention weights.
        deterministic: False enables dropout (not allowed with saturated=True).

    Returns:
        ModelOutput with logits [batch, len, vocab_size], hidden_states (num_layers + 1
        arrays [batch, len, d_model]), attention_weights (num_layers arrays
        [batch, heads, len, len], or [len, heads, batch, batch] with
        attend_across="batch") and mask [batch, len].
    """
    cfg = self.config
    length = tokens.shape[-1]
    if length > cfg.max_len:
      raise ValueError(
          f"Sequence length {length} exceeds max_len={cfg.max_len}; "
          "raise SmallLMConfig.max_len or truncate the input."
      )
    if mask is None:
      mask = tokens != cfg.pad_id
    mask = jnp.asarray(mask, bool)
    if positions is None:
      positions = jnp.arange(length)[None, :]
    x = Embed(cfg.vocab_size, cfg.d_model, cfg.dtype, cfg.param_dtype, name="embed")(tokens)
    x = x + Embed(cfg.max_len, cfg.d_model, cfg.dtype, cfg.param_dtype, name="pos_embed")(
        positions
    )  # [b, l, d]
    if saturated:
      x = asy.lift(x, 1.0)  # embeddings are parameters: power 1 in rho
    # The mask along the attended axis: per sentence, or per position across sentences.
    attend = causal_attention_mask(mask.T if cfg.attend_across == "batch" else mask)
    x, hidden_states, attention_weights = Encoder(cfg, name="encoder")(x, attend, deterministic)
    logits = Dense(cfg.vocab_size, cfg.use_bias, cfg.dtype, cfg.param_dtype, name="classifier")(x)
    return ModelOutput(
        logits=asy.leading(logits),
        hidden_states=tuple(asy.leading(h) for h in hidden_states),
        attention_weights=tuple(asy.leading(w) for w in attention_weights),
        mask=mask,
    )


def lm_loss(logits, tokens, mask=None):
  """Mean next-token cross-entropy over real tokens (float32 whatever the logits dtype).

  Position t predicts tokens[t + 1]; a pair counts when both tokens are real.

  Args:
      logits: [batch, len, vocab].
      tokens: [batch, len] int.
      mask: optional [batch, len] bool (default: all real).

  Returns:
      Scalar loss.

  Example:
      >>> import jax.numpy as jnp
      >>> round(float(lm_loss(jnp.zeros((1, 3, 4)), jnp.array([[1, 2, 3]]))), 4)  # log(4)
      1.3863
  """
  if mask is None:
    mask = jnp.ones(tokens.shape, bool)
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # [b, l-1]
  weights = (mask[:, 1:] & mask[:, :-1]).astype(jnp.float32)
  return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)
