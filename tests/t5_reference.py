"""An independent float64 NumPy T5 forward pass on Hugging Face-named tensors (test oracle).

Written from the T5 papers (Raffel et al. 2020, Sec. 2.1 and App.; T5.1.1: gated-GELU MLP, no
dropout, untied output layer), not from `normgrowth_jax.models.t5`:

* RMS norm: x / sqrt(mean(x^2) + eps) * w (no mean subtraction, no bias).
* Attention: softmax(q k^T + position bias) v with no 1/sqrt(d_kv) scaling; keys at padding are
  masked (queries are not, as in HF), the decoder self-attention is also causal.
* Relative position buckets: half exact, half logarithmic up to max_distance; the encoder's are
  bidirectional (half of the buckets per direction), the decoder's causal. One table per stack
  (block 0's `relative_attention_bias`), added in every layer's self-attention only.
* MLP: relu(x Wi) Wo, or gated gelu_new(x Wi_0) * (x Wi_1) Wo (GELU's tanh approximation).
* Pre-norm residual blocks, a final norm per stack; logits from `lm_head` when the tensors hold
  one, else from `shared` (as transformers, whatever tie_word_embeddings says), after scaling
  the decoder output by d_model**-0.5 when `scale_decoder_outputs` (default:
  `tie_word_embeddings`).

Hidden states follow HF: [embedding output, layer 1 output, ..., final norm output].
"""

import math

import numpy as np


def rms_norm(x, w, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu_new(x):
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def relative_buckets(q_len, k_len, bidirectional, num_buckets, max_distance):
  """[q_len, k_len] bucket of (key position - query position)."""
  back = np.arange(q_len)[:, None] - np.arange(k_len)[None, :]  # > 0: key before the query
  offset = np.zeros_like(back)
  if bidirectional:
    num_buckets //= 2
    offset = np.where(back < 0, num_buckets, 0)
    distance = np.abs(back)
  else:
    distance = np.maximum(back, 0)
  exact = num_buckets // 2
  # Log-spaced buckets for exact..max_distance; +1e-9 puts exact powers in the upper bucket.
  frac = np.log(np.maximum(distance, 1) / exact) / math.log(max_distance / exact)
  log_bucket = exact + np.floor(frac * (num_buckets - exact) + 1e-9).astype(np.int64)
  return offset + np.where(distance < exact, distance, np.minimum(log_bucket, num_buckets - 1))


def attention(w, prefix, x, kv, heads, d_kv, key_ok, bias=None, causal=False):
  """x [b, q, d], kv [b, k, d], key_ok [b, k] bool, bias [heads, q, k] or None."""
  split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d_kv)
  q = split(x @ w[prefix + "q.weight"].T)
  k = split(kv @ w[prefix + "k.weight"].T)
  v = split(kv @ w[prefix + "v.weight"].T)
  scores = np.einsum("bqhd,bkhd->bhqk", q, k)
  if bias is not None:
    scores = scores + bias[None]
  allowed = np.broadcast_to(key_ok[:, None, None, :], scores.shape)
  if causal:
    allowed = allowed & np.tril(np.ones(scores.shape[-2:], bool))
  scores = np.where(allowed, scores, -np.inf)
  p = np.exp(scores - scores.max(-1, keepdims=True))
  p = p / p.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(x.shape[0], x.shape[1], heads * d_kv)
  return out @ w[prefix + "o.weight"].T


def mlp(w, prefix, x, feed_forward_proj):
  if feed_forward_proj == "relu":
    h = np.maximum(x @ w[prefix + "wi.weight"].T, 0.0)
  elif feed_forward_proj == "gated-gelu":
    h = gelu_new(x @ w[prefix + "wi_0.weight"].T) * (x @ w[prefix + "wi_1.weight"].T)
  else:
    raise ValueError(feed_forward_proj)
  return h @ w[prefix + "wo.weight"].T


def position_bias(w, stack, cfg, length, bidirectional):
  table = w[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
  buckets = relative_buckets(
      length,
      length,
      bidirectional,
      cfg["relative_attention_num_buckets"],
      cfg["relative_attention_max_distance"],
  )
  return np.transpose(table[buckets], (2, 0, 1))  # [heads, q, k]


def t5_forward(tensors, cfg, enc_ids, dec_ids, dec_mask=None):
  """T5 on HF tensors `tensors` and HF config dict `cfg`, all in float64.

  Args:
      enc_ids: [b, n] int, 0 = padding. dec_ids: [b, m] int decoder inputs.
      dec_mask: [b, m] bool, real decoder positions (default: all).

  Returns:
      dict with encoder_hidden_states / decoder_hidden_states (lists of [b, len, d_model])
      and logits [b, m, vocab].
  """
  w = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
  heads, d_kv, eps = cfg["num_heads"], cfg["d_kv"], cfg["layer_norm_epsilon"]
  ffp = cfg["feed_forward_proj"]
  enc_ok = np.asarray(enc_ids) > 0
  dec_ok = np.ones(np.shape(dec_ids), bool) if dec_mask is None else np.asarray(dec_mask)

  x = w["shared.weight"][np.asarray(enc_ids)]
  bias = position_bias(w, "encoder", cfg, x.shape[1], bidirectional=True)
  enc_hidden = [x]
  for i in range(cfg["num_layers"]):
    p = f"encoder.block.{i}.layer."
    h = rms_norm(x, w[p + "0.layer_norm.weight"], eps)
    x = x + attention(w, p + "0.SelfAttention.", h, h, heads, d_kv, enc_ok, bias)
    x = x + mlp(w, p + "1.DenseReluDense.", rms_norm(x, w[p + "1.layer_norm.weight"], eps), ffp)
    enc_hidden.append(x)
  encoded = rms_norm(x, w["encoder.final_layer_norm.weight"], eps)
  enc_hidden[-1] = encoded

  y = w["shared.weight"][np.asarray(dec_ids)]
  bias = position_bias(w, "decoder", cfg, y.shape[1], bidirectional=False)
  dec_hidden = [y]
  for i in range(cfg.get("num_decoder_layers") or cfg["num_layers"]):
    p = f"decoder.block.{i}.layer."
    h = rms_norm(y, w[p + "0.layer_norm.weight"], eps)
    y = y + attention(w, p + "0.SelfAttention.", h, h, heads, d_kv, dec_ok, bias, causal=True)
    h = rms_norm(y, w[p + "1.layer_norm.weight"], eps)
    y = y + attention(w, p + "1.EncDecAttention.", h, encoded, heads, d_kv, enc_ok)
    y = y + mlp(w, p + "2.DenseReluDense.", rms_norm(y, w[p + "2.layer_norm.weight"], eps), ffp)
    dec_hidden.append(y)
  y = rms_norm(y, w["decoder.final_layer_norm.weight"], eps)
  dec_hidden[-1] = y
  if cfg.get("scale_decoder_outputs", cfg["tie_word_embeddings"]):
    y = y * cfg["d_model"] ** -0.5
  logits = y @ w.get("lm_head.weight", w["shared.weight"]).T
  return dict(encoder_hidden_states=enc_hidden, decoder_hidden_states=dec_hidden, logits=logits)
