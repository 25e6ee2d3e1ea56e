"""T5.1.1 encoder-decoder in Flax linen, with T5X's parameter names and shapes.

Written from the T5 papers (Raffel et al. 2020; the T5.1.1 changes: gated-GELU MLP, no
dropout-free pretraining default, no parameter sharing between embedding and classifier) so
that a checkpoint of T5X's `t5x/examples/t5/network.Transformer` loads unchanged:

    token_embedder/embedding                        [vocab, emb]
    encoder/relpos_bias/rel_embedding               [heads, 32]
    encoder/layers_{i}/pre_attention_layer_norm/scale            [emb]
    encoder/layers_{i}/attention/{query,key,value}/kernel        [emb, heads*head_dim]
    encoder/layers_{i}/attention/out/kernel                      [heads*head_dim, emb]
    encoder/layers_{i}/pre_mlp_layer_norm/scale                  [emb]
    encoder/layers_{i}/mlp/{wi_0,wi_1}/kernel                    [emb, mlp]
    encoder/layers_{i}/mlp/wo/kernel                             [mlp, emb]
    encoder/encoder_norm/scale                                   [emb]
    decoder/relpos_bias/rel_embedding               [heads, 32]
    decoder/layers_{i}/{pre_self_attention_layer_norm, self_attention,
                        pre_cross_attention_layer_norm, encoder_decoder_attention,
                        pre_mlp_layer_norm, mlp}/...
    decoder/decoder_norm/scale                                   [emb]
    decoder/logits_dense/kernel                     [emb, vocab]  (absent if logits_via_embedding)

With `scan_layers=True` each stack's `layers_{i}` subtrees become one `layers` subtree whose
leaves have a leading layer axis (`encoder/layers/attention/query/kernel` [n, emb, heads*head_dim]);
`t5_scan.scan_params` / `unscan_params` convert between the two.

Facts about T5 / T5X that this module follows (and that matter for norm growth):

* No 1/sqrt(head_dim) in attention: as in T5 (Mesh TF) and T5X, the scaling is folded into the
  query kernel's initialiser (variance_scaling(1, fan_in, normal) / sqrt(head_dim)).
* Embeddings are NOT multiplied by sqrt(emb_dim) (T5 never did); the embedding is initialised
  N(0, 1) (T5X `Embed` with `normal(stddev=1.0)`).
* RMS norm ("T5 layer norm"): x * rsqrt(mean(x^2) + 1e-6) * scale, no centring, no bias,
  statistics in float32.
* Pre-norm residual blocks x + F(norm(x)), a final norm per stack, dropout after the embedding,
  inside attention (on the weights, broadcast over queries), after the MLP's activation, after
  every sub-block and after the final norm (rates all `dropout_rate`, broadcast over length as
  T5X).
* Relative position bias: 32 buckets, max distance 128, half the buckets exact and half
  logarithmic; bidirectional (16 buckets per direction) in the encoder, causal in the decoder.
  One table per stack (`relpos_bias`), shared by all its layers, added to the logits of every
  layer's self-attention (the cross-attention has none).
* Attention masks as T5X: encoder keys/queries masked where `encoder_input_tokens == 0`; decoder
  self-attention is causal and masks `decoder_target_tokens == 0` (all decoder positions are
  treated as real if no targets are given); cross-attention pairs real decoder positions with real
  encoder tokens. Packed examples are supported with `*_segment_ids` (positions are not needed:
  relative attention only uses within-segment index differences, which equal position
  differences).
* Logits: `logits_dense` computed in float32; with `logits_via_embedding` the embedding is used
  and the logits are divided by sqrt(emb_dim) (as T5X).

Differences from T5X's module: `encode`/`decode` return records (`T5EncoderOutput`,
`T5DecoderOutput`) with hidden states and attention weights rather than bare arrays, there is no
autoregressive cache (`decode=True`), and fully masked attention rows (padding queries) give zero
weights instead of T5X's uniform weights (real tokens are unaffected).

Hidden states follow Hugging Face's T5 convention (used by the paper's Fig. 2): index 0 is the
embedding output, index i (1 <= i < n) the output of layer i-1, and the last index the final
norm's output (the "encoded" array for the encoder), so there are num_layers + 1 entries.

Exact saturated limit: `saturated=True` lifts the embedding output to an asymptotic series of
power 1 (`asymptotic.lift(x, 1.0)`) and every op dispatches on it, so the same code computes the
rho -> inf limit of f(x; rho * theta). Attention logits grow like rho^4 and the relative position
bias like rho, so the bias only breaks ties of the leading logits (lexicographic softmax).

Example:
    >>> import jax, jax.numpy as jnp
    >>> cfg = get_config("tiny", vocab_size=64)
    >>> model = Transformer(cfg)
    >>> enc = jnp.array([[5, 6, 7, 1, 0]]); dec_in = jnp.array([[0, 8, 9]])
    >>> dec_tgt = jnp.array([[8, 9, 1]])
    >>> params = model.init(jax.random.PRNGKey(0), enc, dec_in, dec_tgt)["params"]
    >>> out = model.apply({"params": params}, enc, dec_in, dec_tgt)
    >>> out.logits.shape, len(out.encoder_hidden_states), out.encoder_attention_weights[0].shape
    ((1, 3, 64), 3, (1, 4, 5, 5))
"""

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import asymptotic as asy

Array = Any  # jax.Array or asymptotic.Asymptotic

NUM_BUCKETS = 32
MAX_DISTANCE = 128
LAYER_NORM_EPSILON = 1e-6


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of `Transformer`, with the field names of T5X's `network.T5Config`.

  Attributes:
      vocab_size: number of token ids (T5's SentencePiece vocabulary: 32128).
      dtype: activation dtype ("float32", "bfloat16", "float64", or a numpy dtype). Parameters
          are stored in float32; logits, softmax and norm statistics are always float32 or wider.
      emb_dim: width of the residual stream (d_model).
      num_heads: attention heads.
      num_encoder_layers: encoder blocks.
      num_decoder_layers: decoder blocks.
      head_dim: per-head query/key/value width (d_kv).
      mlp_dim: MLP hidden width (d_ff).
      mlp_activations: one activation per input projection; ("gelu", "linear") is T5.1.1's
          gated GELU (wi_0, wi_1), ("relu",) is T5.1.0 (a single `wi`).
      dropout_rate: dropout everywhere (T5.1.1 pretraining used 0.0, fine-tuning 0.1).
      logits_via_embedding: reuse the token embedding for the logits (T5.1.0) instead of
          `decoder/logits_dense`.
      float32_attention_logits: compute q.k in float32 even when `dtype` is bfloat16 (the
          softmax itself is always float32 here).
      scan_layers: run each stack's layers under `nn.scan` (T5X's name): one compiled layer
          whatever the depth, parameters stacked on a leading layer axis under
          `encoder/layers/...` and `decoder/layers/...` (`t5_scan.scan_params` /
          `unscan_params` convert from / to the `layers_{i}` tree). Outputs are the same.
      remat_policy: rematerialise each layer in the backward pass: "none", "full" (save
          nothing), "minimal" (T5X's: save matmuls without batch dimensions) or
          "dots_saveable" (save every matmul).
      attention_impl: "xla" (the einsums here; attention weights are returned) or
          "dot_product_attention" (`jax.nn.dot_product_attention` with the position bias as
          `bias` and scale 1; equal to "xla" to float32 rounding on real tokens, but the
          `*attention_weights` outputs are empty tuples, attention dropout is not available
          and fully masked (padding) query rows average all values instead of giving 0).
          The saturated limit always uses "xla".
  """

  vocab_size: int
  dtype: Any = "float32"
  emb_dim: int = 512
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  head_dim: int = 64
  mlp_dim: int = 2048
  mlp_activations: Sequence[str] = ("gelu", "linear")
  dropout_rate: float = 0.1
  logits_via_embedding: bool = False
  float32_attention_logits: bool = False
  scan_layers: bool = False
  remat_policy: str = "none"
  attention_impl: str = "xla"

  def __post_init__(self):
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    for act in self.mlp_activations:
      if act not in _ACTIVATIONS:
        raise ValueError(
            f"T5Config.mlp_activations has unknown activation {act!r}; "
            f"use one of {sorted(_ACTIVATIONS)}."
        )
    try:
      jnp.dtype(self.dtype)
    except TypeError as e:
      raise ValueError(
          f"T5Config.dtype {self.dtype!r} is not a dtype; use e.g. " "'float32' or 'bfloat16'."
      ) from e
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
          f"T5Config.remat_policy {self.remat_policy!r} is unknown; use one "
          f"of {sorted(REMAT_POLICIES)}."
      )
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
          f"T5Config.attention_impl {self.attention_impl!r} is unknown; use "
          f"one of {list(ATTENTION_IMPLS)}."
      )


# What each `remat_policy` saves for the backward pass (None: nothing; "none" is no remat).
REMAT_POLICIES: Mapping[str, Optional[Callable]] = {
    "none": None,
    "full": None,
    "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}
ATTENTION_IMPLS = ("xla", "dot_product_attention")


# T5.1.1 sizes (T5X t5_1_1/*.gin); "mini" is the trainer benchmark's 9.6M-parameter model.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "tiny": dict(
        vocab_size=32128,
        emb_dim=8,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        head_dim=3,
        mlp_dim=16,
    ),
    "mini": dict(
        vocab_size=384,
        emb_dim=256,
        num_heads=4,
        num_encoder_layers=4,
        num_decoder_layers=4,
        head_dim=64,
        mlp_dim=1024,
    ),
    "small": dict(
        vocab_size=32128,
        emb_dim=512,
        num_heads=6,
        num_encoder_layers=8,
        num_decoder_layers=8,
        head_dim=64,
        mlp_dim=1024,
    ),
    "base": dict(
        vocab_size=32128,
        emb_dim=768,
        num_heads=12,
        num_encoder_layers=12,
        num_decoder_layers=12,
        head_dim=64,
        mlp_dim=2048,
    ),
    "large": dict(
        vocab_size=32128,
        emb_dim=1024,
        num_heads=16,
        num_encoder_layers=24,
        num_decoder_layers=24,
        head_dim=64,
        mlp_dim=2816,
    ),
}


def get_config(name: str, **overrides) -> T5Config:
  """A T5.1.1 size preset ("tiny", "mini", "small", "base", "large") with overrides.

  Example:
      >>> get_config("base", dropout_rate=0.0).emb_dim
      768
  """
  if name not in PRESETS:
    raise ValueError(f"Unknown T5 size {name!r}; choose one of {sorted(PRESETS)}.")
  fields = dict(PRESETS[name])
  fields.update(overrides)
  return T5Config(**fields)


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


@flax.struct.dataclass
class T5EncoderOutput:
  """What `Transformer.encode` returns.

  Attributes:
      encoded: [batch, enc_len, emb] output of `encoder_norm` (= hidden_states[-1]).
      hidden_states: num_encoder_layers + 1 arrays [batch, enc_len, emb] (see module doc).
      attention_weights: per layer [batch, heads, enc_len, enc_len].
      mask: [batch, enc_len] bool, True at real tokens.
  """

  encoded: jax.Array
  hidden_states: Tuple[jax.Array, ...]
  attention_weights: Tuple[jax.Array, ...]
  mask: jax.Array


@flax.struct.dataclass
class T5DecoderOutput:
  """What `Transformer.decode` returns.

  Attributes:
      logits: [batch, dec_len, vocab] float32.
      hidden_states: num_decoder_layers + 1 arrays [batch, dec_len, emb].
      attention_weights: per layer self-attention [batch, heads, dec_len, dec_len].
      cross_attention_weights: per layer [batch, heads, dec_len, enc_len].
      mask: [batch, dec_len] bool, True at real target positions.
  """

  logits: jax.Array
  hidden_states: Tuple[jax.Array, ...]
  attention_weights: Tuple[jax.Array, ...]
  cross_attention_weights: Tuple[jax.Array, ...]
  mask: jax.Array


@flax.struct.dataclass
class T5Output:
  """What `Transformer.__call__` returns (a pytree).

  With `saturated=True`, logits and hidden states hold the leading coefficients of the exact
  rho -> inf limit and the attention weights are hard attention.

  Attributes:
      logits: [batch, dec_len, vocab] float32.
      encoder_hidden_states: num_encoder_layers + 1 arrays [batch, enc_len, emb]; index 0 is
          the embedding output, the last is the encoder_norm output.
      encoder_attention_weights: per layer [batch, heads, enc_len, enc_len].
      decoder_hidden_states: num_decoder_layers + 1 arrays [batch, dec_len, emb].
      decoder_attention_weights: per layer [batch, heads, dec_len, dec_len] (self-attention).
      cross_attention_weights: per layer [batch, heads, dec_len, enc_len].
      mask: [batch, enc_len] bool, True at real encoder tokens.
      decoder_mask: [batch, dec_len] bool, True at real target positions.
  """

  logits: jax.Array
  encoder_hidden_states: Tuple[jax.Array, ...]
  encoder_attention_weights: Tuple[jax.Array, ...]
  decoder_hidden_states: Tuple[jax.Array, ...]
  decoder_attention_weights: Tuple[jax.Array, ...]
  cross_attention_weights: Tuple[jax.Array, ...]
  mask: jax.Array
  decoder_mask: jax.Array


# ----------------------------------------------------------------------------------------------
# Relative position buckets
# ----------------------------------------------------------------------------------------------


def relative_position_bucket(
    relative_position: np.ndarray,
    bidirectional: bool = True,
    num_buckets: int = NUM_BUCKETS,
    max_distance: int = MAX_DISTANCE,
) -> np.ndarray:
  """T5's bucket of each relative position (memory index - query index), in NumPy.

  Half of a direction's buckets hold the exact distances 0..max_exact-1; the other half cover
  max_exact..max_distance logarithmically, and every distance >= max_distance shares the last
  bucket. Bidirectional: 16 buckets for keys at or before the query, 16 (offset by 16) for keys
  after it. Causal: all 32 buckets for keys at or before the query; keys after it fall in
  bucket 0 (they are masked anyway).

  Example:
      >>> relative_position_bucket(np.array([-1, 0, 1, 200]), bidirectional=True).tolist()
      [1, 0, 17, 31]
  """
  distance = -np.asarray(relative_position, dtype=np.int64)  # > 0: key before the query
  bucket = np.zeros_like(distance)
  if bidirectional:
    num_buckets //= 2
    bucket += (distance < 0) * num_buckets
    distance = np.abs(distance)
  else:
    distance = np.maximum(distance, 0)
  max_exact = num_buckets // 2
  # Float32 with an epsilon, as T5, so that exact powers land in the higher bucket.
  ratio = distance.astype(np.float32) / max_exact + np.finfo(np.float32).eps
  log_bucket = max_exact + (
      np.log(ratio) / np.log(max_distance / max_exact) * (num_buckets - max_exact)
  ).astype(np.int64)
  log_bucket = np.minimum(log_bucket, num_buckets - 1)
  return bucket + np.where(distance < max_exact, distance, log_bucket)


class RelativePositionBiases(nn.Module):
  """The per-stack relative position bias table `rel_embedding` [heads, num_buckets]."""

  num_heads: int
  bidirectional: bool
  num_buckets: int = NUM_BUCKETS
  max_distance: int = MAX_DISTANCE

  @nn.compact
  def __call__(self, q_len: int, k_len: int, saturated: bool = False) -> jax.Array:
    """Returns the bias [heads, q_len, k_len] (float32, parameter-linear).

    Plain mode contracts the table with a constant one-hot of the buckets, so that the
    gradient is a matmul rather than a scatter (the scatter cost ~0.13 s/step on t5-mini,
    XLA CPU); saturated mode keeps the gather.
    """
    table = self.param(
        "rel_embedding",
        nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
        (self.num_heads, self.num_buckets),
        jnp.float32,
    )
    relative = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]  # [q, k]
    buckets = relative_position_bucket(
        relative, self.bidirectional, self.num_buckets, self.max_distance
    )
    if saturated:
      return jnp.take(table, jnp.asarray(buckets, jnp.int32), axis=1)  # [heads, q, k]
    return _one_hot_lookup(table, buckets)


def _one_hot_lookup(table: jax.Array, buckets: np.ndarray) -> jax.Array:
  """table [heads, n] at buckets [q, k] (NumPy ints) -> [heads, q, k], as a matmul."""
  one_hot = np.eye(table.shape[1], dtype=np.float32)[buckets]  # [q, k, n]
  return jnp.einsum("hn,qkn->hqk", table, one_hot, precision=jax.lax.Precision.HIGHEST)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

_ACTIVATIONS: Mapping[str, Callable[[Array], Array]] = {
    "gelu": lambda x: asy.gelu(x, approximate=True),  # flax/T5X default: tanh form (gelu_new)
    "relu": lambda x: asy.relu(x),
    "linear": lambda x: x,
}


def _cast(x: Array, dtype) -> Array:
  """x.astype(dtype) for arrays and for every coefficient of an asymptotic series."""
  return jax.tree_util.tree_map(lambda a: a.astype(dtype), x)


class Dense(nn.Module):
  """A biasless linear map over the last axis with a 2-D `kernel` [in, out] (T5X layout)."""

  features: int
  dtype: Any
  kernel_init: Callable = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    return asy.dense(x, kernel.astype(self.dtype))


class RMSNorm(nn.Module):
  """T5's layer norm: x / sqrt(mean(x^2) + eps) * scale, statistics in float32."""

  dtype: Any
  epsilon: float = LAYER_NORM_EPSILON

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    wide = jnp.promote_types(self.dtype, jnp.float32)
    y = asy.rms_norm(_cast(x, wide), scale.astype(wide), self.epsilon)
    return _cast(y, self.dtype)


@jax.custom_vjp
def _add_position_bias(logits: jax.Array, bias: jax.Array) -> jax.Array:
  """logits [b, heads, q, k] + bias [heads, q, k] (broadcast over the batch).

  The bias gradient sums the logits gradient over the batch. XLA CPU lowers that reduction
  over the leading axis to a slow library reduce (~6x slower than the memory traffic needs,
  measured on t5-mini); summing the batch slices one by one fuses into a single loop.
  """
  return logits + bias[None]


def _add_position_bias_fwd(logits, bias):
  return _add_position_bias(logits, bias), None


def _add_position_bias_bwd(_, dlogits):
  dbias = dlogits[0]
  for i in range(1, dlogits.shape[0]):
    dbias = dbias + dlogits[i]
  return dlogits, dbias  # [b, heads, q, k], [heads, q, k]


_add_position_bias.defvjp(_add_position_bias_fwd, _add_position_bias_bwd)


class MultiHeadDotProductAttention(nn.Module):
  """Biasless multi-head attention without 1/sqrt(d) (folded into the query init)."""

  num_heads: int
  head_dim: int
  dtype: Any
  dropout_rate: float = 0.0
  float32_logits: bool = False
  impl: str = "xla"

  @nn.compact
  def __call__(
      self,
      inputs_q: Array,
      inputs_kv: Array,
      mask: Optional[jax.Array],
      bias: Optional[jax.Array],
      deterministic: bool,
  ) -> Tuple[Array, Array]:
    """Attends from inputs_q [b, q, emb] to inputs_kv [b, k, emb].

    Args:
        mask: bool, broadcastable to [b, heads, q, k]; True = may attend.
        bias: [heads, q, k] additive logit bias (a parameter-linear quantity) or None.

    Returns:
        (output [b, q, emb], attention weights [b, heads, q, k]); the weights are None
        with `impl="dot_product_attention"` (outside the saturated limit).
    """
    kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    depth_scaling = math.sqrt(self.head_dim)

    def query_init(*args):
      return kernel_init(*args) / depth_scaling

    features = self.num_heads * self.head_dim
    query = Dense(features, self.dtype, query_init, name="query")(inputs_q)
    key = Dense(features, self.dtype, kernel_init, name="key")(inputs_kv)
    value = Dense(features, self.dtype, kernel_init, name="value")(inputs_kv)
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, self.head_dim))
    query, key, value = split(query), split(key), split(value)  # [b, len, heads, d]

    logits_dtype = jnp.float32 if self.float32_logits else self.dtype
    logits_dtype = jnp.promote_types(logits_dtype, self.dtype)
    softmax_dtype = jnp.promote_types(logits_dtype, jnp.float32)
    if self.impl == "dot_product_attention" and not asy.is_asymptotic(query):
      if not deterministic and self.dropout_rate > 0.0:
        raise ValueError(
            "attention_impl='dot_product_attention' has no attention "
            "dropout; use attention_impl='xla' or dropout_rate=0."
        )
      x = jax.nn.dot_product_attention(
          query.astype(logits_dtype),
          key.astype(logits_dtype),
          value.astype(logits_dtype),
          bias=None if bias is None else bias[None].astype(softmax_dtype),
          mask=mask,
          scale=1.0,
      ).astype(
          self.dtype
      )  # logits and softmax in float32 or wider
      weights = None
    else:
      x, weights = self._attend(
          query, key, value, mask, bias, deterministic, logits_dtype, softmax_dtype
      )
    x = x.reshape(x.shape[:-2] + (features,))
    out = Dense(inputs_q.shape[-1], self.dtype, kernel_init, name="out")(x)
    return out, weights

  def _attend(self, query, key, value, mask, bias, deterministic, logits_dtype, softmax_dtype):
    """The einsum path: -> (x [b, q, heads, d], weights [b, heads, q, k])."""
    logits = asy.einsum(
        "bqhd,bkhd->bhqk", _cast(query, logits_dtype), _cast(key, logits_dtype)
    )  # [b, heads, q, k]
    logits = _cast(logits, softmax_dtype)
    if bias is not None and not asy.is_asymptotic(logits):
      logits = _add_position_bias(logits, bias.astype(softmax_dtype))
    elif bias is not None:
      logits = asy.add(logits, asy.param(bias[None].astype(softmax_dtype), logits))
    weights = asy.softmax(logits, mask=mask)  # [b, heads, q, k], float32+
    weights = _cast(weights, self.dtype)

    if not deterministic and self.dropout_rate > 0.0:
      keep_prob = 1.0 - self.dropout_rate
      shape = list(weights.shape)
      shape[-2] = 1  # one mask per key, shared by all queries (T5X)
      keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
      weights_used = weights * (keep.astype(self.dtype) / keep_prob)
    else:
      weights_used = weights
    return asy.einsum("bhqk,bkhd->bqhd", weights_used, value), weights  # [b, q, heads, d]


class MlpBlock(nn.Module):
  """T5's feed-forward block: (act_0(x W_0) * act_1(x W_1) * ...) W_o (gated GELU)."""

  intermediate_dim: int
  activations: Sequence[str]
  dtype: Any
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    hidden = None
    for idx, act in enumerate(self.activations):
      name = "wi" if len(self.activations) == 1 else f"wi_{idx}"
      h = _ACTIVATIONS[act](Dense(self.intermediate_dim, self.dtype, name=name)(x))
      hidden = h if hidden is None else asy.mul(hidden, h)
    hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic)
    return Dense(x.shape[-1], self.dtype, name="wo")(hidden)


def _dropout(rate: float, x: Array, deterministic: bool) -> Array:
  """T5X's dropout (one mask per feature, broadcast over the length axis)."""
  return nn.Dropout(rate, broadcast_dims=(-2,))(x, deterministic)


class EncoderLayer(nn.Module):
  """x + Attn(norm(x)); x + MLP(norm(x))."""

  config: T5Config

  @nn.compact
  def __call__(
      self, x: Array, mask: jax.Array, bias: jax.Array, deterministic: bool
  ) -> Tuple[Array, Tuple[Array, Array]]:
    """-> (x, (x, attention weights)): a scan body's (carry, per-layer outputs)."""
    cfg = self.config
    h = RMSNorm(cfg.dtype, name="pre_attention_layer_norm")(x)
    h, weights = MultiHeadDotProductAttention(
        cfg.num_heads,
        cfg.head_dim,
        cfg.dtype,
        cfg.dropout_rate,
        cfg.float32_attention_logits,
        cfg.attention_impl,
        name="attention",
    )(h, h, mask, bias, deterministic)
    x = asy.add(x, _dropout(cfg.dropout_rate, h, deterministic))
    h = RMSNorm(cfg.dtype, name="pre_mlp_layer_norm")(x)
    h = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dtype, cfg.dropout_rate, name="mlp")(
        h, deterministic
    )
    x = asy.add(x, _dropout(cfg.dropout_rate, h, deterministic))
    return x, (x, weights)


class DecoderLayer(nn.Module):
  """x + SelfAttn(norm(x)); x + CrossAttn(norm(x), encoded); x + MLP(norm(x))."""

  config: T5Config

  @nn.compact
  def __call__(
      self,
      x: Array,
      encoded: Array,
      self_mask: jax.Array,
      cross_mask: jax.Array,
      bias: jax.Array,
      deterministic: bool,
  ) -> Tuple[Array, Tuple[Array, ...]]:
    """-> (x, (x, self-attention weights, cross-attention weights))."""
    cfg = self.config
    attention = lambda name: MultiHeadDotProductAttention(
        cfg.num_heads,
        cfg.head_dim,
        cfg.dtype,
        cfg.dropout_rate,
        cfg.float32_attention_logits,
        cfg.attention_impl,
        name=name,
    )
    h = RMSNorm(cfg.dtype, name="pre_self_attention_layer_norm")(x)
    h, self_weights = attention("self_attention")(h, h, self_mask, bias, deterministic)
    x = asy.add(x, _dropout(cfg.dropout_rate, h, deterministic))
    h = RMSNorm(cfg.dtype, name="pre_cross_attention_layer_norm")(x)
    h, cross_weights = attention("encoder_decoder_attention")(
        h, encoded, cross_mask, None, deterministic
    )
    x = asy.add(x, _dropout(cfg.dropout_rate, h, deterministic))
    h = RMSNorm(cfg.dtype, name="pre_mlp_layer_norm")(x)
    h = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dtype, cfg.dropout_rate, name="mlp")(
        h, deterministic
    )
    x = asy.add(x, _dropout(cfg.dropout_rate, h, deterministic))
    return x, (x, self_weights, cross_weights)


def _run_layers(
    module: nn.Module, layer: type, num_layers: int, x: Array, args: tuple, saturated: bool
) -> Tuple[Array, Tuple[tuple, ...]]:
  """Runs `num_layers` layers of `layer` as children `layers_{i}` or a scanned `layers`.

  Called from `module`'s compact method. Each layer maps (x, *args) -> (x, outputs), with
  `args` (ending with `deterministic`) shared by all layers. Returns the last x and, per
  kind of output, a tuple over layers (an empty tuple for outputs that are None).

  With `scan_layers`, the saturated limit runs the layers one by one on slices of the
  stacked parameters: the powers of rho of the residual stream change from layer to layer,
  so the limit cannot be a scan carry.
  """
  cfg = module.config
  if cfg.remat_policy != "none":
    layer = nn.remat(
        layer,
        policy=REMAT_POLICIES[cfg.remat_policy],
        prevent_cse=not cfg.scan_layers,
        static_argnums=(len(args) + 1,),
    )
  if not cfg.scan_layers:
    per_layer = []
    for i in range(num_layers):
      x, out = layer(cfg, name=f"layers_{i}")(x, *args)
      per_layer.append(out)
    return x, _by_kind(per_layer)
  if saturated:
    if module.is_initializing():
      raise ValueError("Initialise a scan_layers model with saturated=False.")
    stacked = module.variables["params"]["layers"]
    per_layer = []
    for i in range(num_layers):
      params_i = jax.tree_util.tree_map(lambda a: a[i], stacked)
      x, out = layer(cfg, parent=None).apply({"params": params_i}, x, *args)
      per_layer.append(out)
    return x, _by_kind(per_layer)
  scanned = nn.scan(
      layer,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=(nn.broadcast,) * len(args),
      length=num_layers,
  )
  x, outs = scanned(cfg, name="layers")(x, *args)
  return x, tuple(() if o is None else tuple(o[i] for i in range(num_layers)) for o in outs)


def _by_kind(per_layer: list) -> Tuple[tuple, ...]:
  """[(a_0, b_0), (a_1, b_1), ...] -> ((a_0, a_1, ...), (b_0, ...)), dropping Nones."""
  return tuple(tuple(o for o in kind if o is not None) for kind in zip(*per_layer))


def _plain(x: Array) -> jax.Array:
  """The array itself, or the leading coefficient of an asymptotic series."""
  return asy.leading(x) if asy.is_asymptotic(x) else x


class Encoder(nn.Module):
  """Embedding -> dropout -> layers -> encoder_norm -> dropout."""

  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(
      self, tokens: jax.Array, mask: jax.Array, saturated: bool, deterministic: bool
  ) -> Tuple[Array, tuple, tuple]:
    """tokens [b, len] int, mask [b, 1, len, len] bool -> (encoded, hiddens, weights)."""
    cfg = self.config
    x = _cast(self.shared_embedding(tokens), cfg.dtype)  # [b, len, emb]
    if saturated:
      x = asy.lift(x, 1.0)
    x = x0 = _dropout(cfg.dropout_rate, x, deterministic)
    bias = RelativePositionBiases(cfg.num_heads, bidirectional=True, name="relpos_bias")(
        tokens.shape[-1], tokens.shape[-1], saturated
    )
    x, (hiddens, weights) = _run_layers(
        self, EncoderLayer, cfg.num_encoder_layers, x, (mask, bias, deterministic), saturated
    )
    x = RMSNorm(cfg.dtype, name="encoder_norm")(x)
    hiddens = (x0,) + hiddens[:-1] + (x,)
    return _dropout(cfg.dropout_rate, x, deterministic), hiddens, weights


class Decoder(nn.Module):
  """Embedding -> dropout -> layers -> decoder_norm -> dropout -> logits."""

  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(
      self,
      encoded: Array,
      tokens: jax.Array,
      self_mask: jax.Array,
      cross_mask: jax.Array,
      saturated: bool,
      deterministic: bool,
  ) -> Tuple[Array, tuple, tuple, tuple]:
    """-> (logits [b, len, vocab], hiddens, self weights, cross weights)."""
    cfg = self.config
    y = _cast(self.shared_embedding(tokens), cfg.dtype)  # [b, len, emb]
    if saturated:
      y = asy.lift(y, 1.0)
    y = y0 = _dropout(cfg.dropout_rate, y, deterministic)
    length = tokens.shape[-1]
    bias = RelativePositionBiases(cfg.num_heads, bidirectional=False, name="relpos_bias")(
        length, length, saturated
    )
    y, (hiddens, self_weights, cross_weights) = _run_layers(
        self,
        DecoderLayer,
        cfg.num_decoder_layers,
        y,
        (encoded, self_mask, cross_mask, bias, deterministic),
        saturated,
    )
    y = RMSNorm(cfg.dtype, name="decoder_norm")(y)
    hiddens = (y0,) + hiddens[:-1] + (y,)
    y = _cast(_dropout(cfg.dropout_rate, y, deterministic), jnp.float32)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(y)
      logits = asy.mul(logits, jnp.float32(1.0 / math.sqrt(cfg.emb_dim)))
    else:
      logits = Dense(cfg.vocab_size, jnp.float32, name="logits_dense")(y)
    return logits, hiddens, self_weights, cross_weights


class Embed(nn.Module):
  """The shared token embedding `embedding` [vocab, emb], initialised N(0, 1)."""

  num_embeddings: int
  features: int

  def setup(self):
    self.embedding = self.param(
        "embedding",
        nn.initializers.normal(stddev=1.0),
        (self.num_embeddings, self.features),
        jnp.float32,
    )

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """[b, len] int -> [b, len, emb] float32."""
    return jnp.take(self.embedding, tokens.astype(jnp.int32), axis=0)

  def attend(self, y: Array) -> Array:
    """[b, len, emb] -> [b, len, vocab] float32 scores y . embedding^T."""
    return asy.dense(y, self.embedding.T)


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------


def _pair_mask(query_ok: jax.Array, key_ok: jax.Array) -> jax.Array:
  """[b, q] and [b, k] bool -> [b, 1, q, k] bool."""
  return query_ok[:, None, :, None] & key_ok[:, None, None, :]


def _segment_mask(query_seg: Optional[jax.Array], key_seg: Optional[jax.Array]):
  if query_seg is None:
    return None
  return query_seg[:, None, :, None] == key_seg[:, None, None, :]


def _and(a: jax.Array, b: Optional[jax.Array]) -> jax.Array:
  return a if b is None else a & b


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class Transformer(nn.Module):
  """T5.1.1 encoder-decoder (T5X's `network.Transformer` parameter tree)."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim)
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def _check_saturated(self, saturated: bool, enable_dropout: bool):
    if saturated and enable_dropout:
      raise ValueError(
          "saturated=True computes the deterministic rho -> inf limit; call "
          "it with enable_dropout=False."
      )

  def _encode(self, encoder_input_tokens, encoder_segment_ids, enable_dropout, saturated):
    self._check_saturated(saturated, enable_dropout)
    real = encoder_input_tokens > 0
    mask = _and(_pair_mask(real, real), _segment_mask(encoder_segment_ids, encoder_segment_ids))
    encoded, hiddens, weights = self.encoder(
        encoder_input_tokens, mask, saturated, not enable_dropout
    )
    return encoded, hiddens, weights, real

  def encode(
      self,
      encoder_input_tokens: jax.Array,
      encoder_segment_ids: Optional[jax.Array] = None,
      *,
      enable_dropout: bool = False,
      saturated: bool = False,
  ) -> T5EncoderOutput:
    """Runs the encoder on [batch, enc_len] int tokens (0 = padding).

    With `saturated=True` the returned arrays are leading coefficients of the limit; pass
    `encoded` to `decode(..., saturated=True)` (the encoder_norm output has power exactly 1).
    """
    encoded, hiddens, weights, real = self._encode(
        encoder_input_tokens, encoder_segment_ids, enable_dropout, saturated
    )
    return T5EncoderOutput(
        encoded=_plain(encoded),
        hidden_states=tuple(_plain(h) for h in hiddens),
        attention_weights=tuple(_plain(w) for w in weights),
        mask=real,
    )

  def _decode(
      self,
      encoded,
      encoder_input_tokens,
      decoder_input_tokens,
      decoder_target_tokens,
      encoder_segment_ids,
      decoder_segment_ids,
      enable_dropout,
      saturated,
  ):
    self._check_saturated(saturated, enable_dropout)
    if decoder_target_tokens is None:
      dec_real = jnp.ones(decoder_input_tokens.shape, bool)
    else:
      dec_real = decoder_target_tokens > 0
    enc_real = encoder_input_tokens > 0
    length = decoder_input_tokens.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    self_mask = _and(
        _pair_mask(dec_real, dec_real) & causal,
        _segment_mask(decoder_segment_ids, decoder_segment_ids),
    )
    cross_mask = _and(
        _pair_mask(dec_real, enc_real), _segment_mask(decoder_segment_ids, encoder_segment_ids)
    )
    logits, hiddens, self_w, cross_w = self.decoder(
        encoded, decoder_input_tokens, self_mask, cross_mask, saturated, not enable_dropout
    )
    return logits, hiddens, self_w, cross_w, dec_real

  def decode(
      self,
      encoded: jax.Array,
      encoder_input_tokens: jax.Array,
      decoder_input_tokens: jax.Array,
      decoder_target_tokens: Optional[jax.Array] = None,
      encoder_segment_ids: Optional[jax.Array] = None,
      decoder_segment_ids: Optional[jax.Array] = None,
      *,
      enable_dropout: bool = False,
      saturated: bool = False,
  ) -> T5DecoderOutput:
    """Runs the decoder (teacher forcing) on `encoded` [batch, enc_len, emb].

    `encoder_input_tokens` only provides the cross-attention padding mask. With
    `saturated=True`, `encoded` must be the leading coefficient from `encode(...,
    saturated=True)`.
    """
    if saturated:
      encoded = asy.lift(encoded, 1.0)
    logits, hiddens, self_w, cross_w, dec_real = self._decode(
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids,
        decoder_segment_ids,
        enable_dropout,
        saturated,
    )
    return T5DecoderOutput(
        logits=_plain(logits),
        hidden_states=tuple(_plain(h) for h in hiddens),
        attention_weights=tuple(_plain(w) for w in self_w),
        cross_attention_weights=tuple(_plain(w) for w in cross_w),
        mask=dec_real,
    )

  def __call__(
      self,
      encoder_input_tokens: jax.Array,
      decoder_input_tokens: jax.Array,
      decoder_target_tokens: Optional[jax.Array] = None,
      encoder_segment_ids: Optional[jax.Array] = None,
      decoder_segment_ids: Optional[jax.Array] = None,
      *,
      enable_dropout: bool = False,
      saturated: bool = False,
  ) -> T5Output:
    """Teacher-forced forward pass.

    Args:
        encoder_input_tokens: [batch, enc_len] int, 0 = padding.
        decoder_input_tokens: [batch, dec_len] int (targets shifted right, starting at 0).
        decoder_target_tokens: [batch, dec_len] int, 0 = padding; only used for masks.
        encoder_segment_ids, decoder_segment_ids: [batch, len] int for packed examples.
        enable_dropout: apply dropout (needs a "dropout" rng).
        saturated: compute the exact rho -> inf limit (leading coefficients, hard attention).
    """
    encoded, enc_hiddens, enc_weights, enc_real = self._encode(
        encoder_input_tokens, encoder_segment_ids, enable_dropout, saturated
    )
    logits, dec_hiddens, self_w, cross_w, dec_real = self._decode(
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids,
        decoder_segment_ids,
        enable_dropout,
        saturated,
    )
    return T5Output(
        logits=_plain(logits),
        encoder_hidden_states=tuple(_plain(h) for h in enc_hiddens),
        encoder_attention_weights=tuple(_plain(w) for w in enc_weights),
        decoder_hidden_states=tuple(_plain(h) for h in dec_hiddens),
        decoder_attention_weights=tuple(_plain(w) for w in self_w),
        cross_attention_weights=tuple(_plain(w) for w in cross_w),
        mask=enc_real,
        decoder_mask=dec_real,
    )


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def cross_entropy_with_z_loss(
    logits: jax.Array,
    targets: jax.Array,
    weights: Optional[jax.Array] = None,
    z_loss: float = 1e-4,
    loss_normalizing_factor: Optional[float] = None,
):
  """T5X's weighted cross-entropy plus z-loss z_loss * log(Z)^2, summed over tokens.

  Per token: -log softmax(logits)[target] + z_loss * logsumexp(logits)^2, computed in float32
  (or wider). Summed with `weights` (default: targets > 0) and divided by
  `loss_normalizing_factor` when given (T5X's default None: the plain sum).

  Args:
      logits: [..., vocab].
      targets: [...] int.
      weights: [...] (loss weights; `decoder_loss_weights` in T5X batches).
      z_loss: coefficient of the z-loss (T5.1.1: 1e-4).
      loss_normalizing_factor: None or a positive number.

  Returns:
      (loss, z_loss_part, accuracy, weight_sum): the (normalised) total loss including the
      z-loss, the (normalised) z-loss part alone, the weighted fraction of argmax-correct
      tokens, and the sum of weights.

  Example:
      >>> logits = jnp.zeros((1, 2, 4)); targets = jnp.array([[1, 0]])
      >>> loss, zl, acc, n = cross_entropy_with_z_loss(logits, targets)
      >>> round(float(loss), 4), float(n)   # log(4) + 1e-4 * log(4)^2 on one real token
      (1.3865, 1.0)
  """
  wide = jnp.promote_types(logits.dtype, jnp.float32)
  logits = logits.astype(wide)
  if weights is None:
    weights = targets > 0
  weights = weights.astype(wide)
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [...]
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  z_part = z_loss * jnp.square(log_z)
  token_loss = log_z - target_logit + z_part
  total = jnp.sum(token_loss * weights)
  total_z = jnp.sum(z_part * weights)
  if loss_normalizing_factor is not None:
    total = total / loss_normalizing_factor
    total_z = total_z / loss_normalizing_factor
  weight_sum = jnp.sum(weights)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(wide)
  accuracy = jnp.sum(correct * weights) / jnp.maximum(weight_sum, 1e-8)
  return total, total_z, accuracy, weight_sum


def make_loss_fn(
    model: Transformer,
    z_loss: float = 1e-4,
    loss_normalizing_factor: Optional[float] = None,
    enable_dropout: bool = True,
):
  """A `loss_fn(params, batch, rng) -> (loss, metrics)` for `jax.value_and_grad(has_aux=True)`.

  `batch` uses T5X's feature names: `encoder_input_tokens`, `decoder_input_tokens`,
  `decoder_target_tokens`, optional `decoder_loss_weights` and `*_segment_ids`.
  `metrics` holds `loss`, `z_loss`, `accuracy` and `weight_sum`. `rng` feeds dropout; a key
  made with `jax.random.key(seed, impl="rbg")` compiles ~5x faster on CPU than the default
  threefry key (measured on t5 tiny with dropout 0.1: 5 s vs 23 s of compile CPU time), since
  every dropout site otherwise inlines a threefry hash.

  Example:
      >>> cfg = get_config("tiny", vocab_size=32, dropout_rate=0.0)
      >>> model = Transformer(cfg)
      >>> batch = {"encoder_input_tokens": jnp.array([[3, 4, 1]]),
      ...          "decoder_input_tokens": jnp.array([[0, 5]]),
      ...          "decoder_target_tokens": jnp.array([[5, 1]])}
      >>> params = model.init(jax.random.PRNGKey(0), batch["encoder_input_tokens"],
      ...                     batch["decoder_input_tokens"])["params"]
      >>> loss, metrics = make_loss_fn(model)(params, batch, jax.random.PRNGKey(1))
      >>> float(metrics["weight_sum"])
      2.0
  """

  def loss_fn(params, batch, rng):
    out = model.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        batch["decoder_target_tokens"],
        batch.get("encoder_segment_ids"),
        batch.get("decoder_segment_ids"),
        enable_dropout=enable_dropout,
        rngs={"dropout": rng},
    )
    loss, z_part, accuracy, weight_sum = cross_entropy_with_z_loss(
        out.logits,
        batch["decoder_target_tokens"],
        batch.get("decoder_loss_weights"),
        z_loss,
        loss_normalizing_factor,
    )
    return loss, {"loss": loss, "z_loss": z_part, "accuracy": accuracy, "weight_sum": weight_sum}

  return loss_fn
