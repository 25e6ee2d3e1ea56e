"""Tests for normgrowth_jax.models.hf_t5 against the float64 NumPy reference (tiny configs, CPU).

Each test writes a small random checkpoint in Hugging Face's T5 format (HF's config.json keys and
tensor names, saved with safetensors), so no download is needed.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from safetensors.numpy import save_file

from normgrowth_jax.models import t5
from normgrowth_jax.models.hf_t5 import hf_t5_config, hf_to_t5x, load_hf_t5, t5x_to_hf
from t5_reference import relative_buckets, t5_forward

HF_KEYS = dict(
    model_type="t5",
    architectures=["T5ForConditionalGeneration"],
    vocab_size=40,
    d_model=16,
    d_kv=4,
    d_ff=24,
    num_layers=2,
    num_heads=3,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    initializer_factor=1.0,
    is_encoder_decoder=True,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
GATED = dict(
    HF_KEYS, feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_decoder_layers=3
)  # T5.1.1
RELU = dict(
    HF_KEYS, feed_forward_proj="relu", tie_word_embeddings=True, num_decoder_layers=2
)  # T5 v1.0

# Lengths 20 / 18 reach the logarithmic buckets (encoder distance >= 8, decoder >= 16).
RNG = np.random.default_rng(0)
ENC = RNG.integers(2, 40, size=(2, 20))
ENC[1, 13:] = 0
DEC_IN = np.concatenate([np.zeros((2, 1), int), RNG.integers(2, 40, size=(2, 17))], axis=1)
DEC_TGT = np.concatenate([DEC_IN[:, 1:], np.ones((2, 1), int)], axis=1)
DEC_TGT[1, 11:] = 0


def random_hf_tensors(cfg, seed=0, legacy_extras=False):
  """HF-named float32 tensors for `cfg`; torch Linear weights are [out, in]."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape, std=1.0: (std * rng.normal(size=shape)).astype(np.float32)
  d, inner, ff, heads = (
      cfg["d_model"],
      cfg["num_heads"] * cfg["d_kv"],
      cfg["d_ff"],
      cfg["num_heads"],
  )
  wi = ["wi"] if cfg["feed_forward_proj"] == "relu" else ["wi_0", "wi_1"]
  t = {"shared.weight": normal(cfg["vocab_size"], d)}
  for stack, n, attns in (
      ("encoder", cfg["num_layers"], ["SelfAttention"]),
      ("decoder", cfg["num_decoder_layers"], ["SelfAttention", "EncDecAttention"]),
  ):
    t[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = normal(
        cfg["relative_attention_num_buckets"], heads
    )
    t[f"{stack}.final_layer_norm.weight"] = 1 + 0.3 * normal(d)
    for i in range(n):
      for j, module in enumerate(attns + ["DenseReluDense"]):
        p = f"{stack}.block.{i}.layer.{j}."
        t[p + "layer_norm.weight"] = 1 + 0.3 * normal(d)
        if module == "DenseReluDense":
          t.update({f"{p}{module}.{w}.weight": normal(ff, d, std=d**-0.5) for w in wi})
          t[f"{p}{module}.wo.weight"] = normal(d, ff, std=ff**-0.5)
          continue
        t.update({f"{p}{module}.{a}.weight": normal(inner, d, std=d**-0.5) for a in "qkv"})
        t[f"{p}{module}.o.weight"] = normal(d, inner, std=inner**-0.5)
  if not cfg["tie_word_embeddings"]:
    t["lm_head.weight"] = normal(cfg["vocab_size"], d, std=d**-0.5)
  elif legacy_extras:  # what older checkpoints also store (HF ties / drops them on load)
    for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
      t[k] = t["shared.weight"]
    t["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = normal(32, heads)
  return t


def write_checkpoint(path, cfg, tensors, shards=1):
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps(cfg))
  if shards == 1:
    save_file(tensors, str(path / "model.safetensors"))
    return path
  names = sorted(tensors)
  weight_map = {}
  for s in range(shards):
    fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    part = {k: tensors[k] for k in names[s::shards]}
    save_file(part, str(path / fname))
    weight_map.update({k: fname for k in part})
  total = sum(v.nbytes for v in tensors.values())
  (path / "model.safetensors.index.json").write_text(
      json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
  )
  return path


def assert_matches_reference(out, ref, rtol, logits_rtol=None):
  """Real positions only: HF (and the reference) let padding queries attend, we do not."""
  enc_ok, dec_ok = ENC > 0, DEC_TGT > 0
  pairs = [
      (g, w, enc_ok) for g, w in zip(out.encoder_hidden_states, ref["encoder_hidden_states"])
  ] + [(g, w, dec_ok) for g, w in zip(out.decoder_hidden_states, ref["decoder_hidden_states"])]
  assert len(out.encoder_hidden_states) == len(ref["encoder_hidden_states"])
  assert len(out.decoder_hidden_states) == len(ref["decoder_hidden_states"])
  for got, want, ok in pairs:
    got, want = np.asarray(got, np.float64)[ok], want[ok]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
  logits_rtol = logits_rtol or rtol
  np.testing.assert_allclose(
      np.asarray(out.logits)[dec_ok],
      ref["logits"][dec_ok],
      rtol=logits_rtol,
      atol=logits_rtol * np.abs(ref["logits"]).max(),
  )


def fast_compile(fn, *args):
  """jit(fn) compiled for args with LLVM optimisation off: halves compile time here."""
  return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})


_APPLY = {}  # config -> compiled apply, shared by the tests


def run(model, params):
  """model.apply compiled at float32 matmul precision (the references' products, not TF32)."""
  args = ({"params": params}, ENC, DEC_IN, DEC_TGT)
  if model.config not in _APPLY:
    with jax.default_matmul_precision("float32"):
      _APPLY[model.config] = fast_compile(model.apply, *args)
  return _APPLY[model.config](*args)


@pytest.mark.parametrize("cfg,shards", [(GATED, 1), (RELU, 2)], ids=["t5.1.1", "t5v1.0-sharded"])
def test_loaded_checkpoint_matches_float64_reference(tmp_path, cfg, shards):
  tensors = random_hf_tensors(cfg, legacy_extras=True)
  model, params = load_hf_t5(write_checkpoint(tmp_path, cfg, tensors, shards))
  assert model.config.logits_via_embedding == cfg["tie_word_embeddings"]
  ref = t5_forward(tensors, cfg, ENC, DEC_IN, dec_mask=DEC_TGT > 0)
  assert_matches_reference(run(model, params), ref, rtol=1e-4)


# What transformers >= 5 writes for T5.1.1 (e.g. google/t5-v1_1-base re-saved): the tie flag is
# true, the scaling flag says what the old tie flag meant, and lm_head.weight is its own tensor.
TRANSFORMERS5_T5_1_1 = dict(
    GATED,
    tie_word_embeddings=True,
    scale_decoder_outputs=False,
    dense_act_fn="gelu_new",
    is_gated_act=True,
    dtype="float32",
    transformers_version="5.0.0",
)


def test_transformers5_t5_1_1_directory_matches_reference(tmp_path):
  tensors = random_hf_tensors(GATED, seed=2)  # with a separate lm_head.weight
  model, params = load_hf_t5(write_checkpoint(tmp_path, TRANSFORMERS5_T5_1_1, tensors))
  assert not model.config.logits_via_embedding
  np.testing.assert_array_equal(
      params["decoder"]["logits_dense"]["kernel"], tensors["lm_head.weight"].T
  )
  ref = t5_forward(tensors, TRANSFORMERS5_T5_1_1, ENC, DEC_IN, dec_mask=DEC_TGT > 0)
  assert_matches_reference(run(model, params), ref, rtol=1e-4)


def test_scaled_outputs_with_a_separate_head_are_refused(tmp_path):
  """A pairing t5.Transformer does not compute (HF would scale, then apply lm_head)."""
  path = write_checkpoint(
      tmp_path, dict(TRANSFORMERS5_T5_1_1, scale_decoder_outputs=True), random_hf_tensors(GATED)
  )
  with pytest.raises(ValueError, match="scale_decoder_outputs=True.*lm_head.weight distinct"):
    load_hf_t5(path)


def test_loaded_checkpoint_in_float64_is_exact(tmp_path):
  tensors = random_hf_tensors(GATED, seed=1)
  path = write_checkpoint(tmp_path, GATED, tensors)
  with jax.enable_x64(True):
    model, params = load_hf_t5(path, dtype=jnp.float64)
    assert params["token_embedder"]["embedding"].dtype == jnp.float64
    out = run(model, params)
  # Logits are always computed in float32 by t5.Transformer (as T5X).
  assert_matches_reference(
      out, t5_forward(tensors, GATED, ENC, DEC_IN, DEC_TGT > 0), 1e-10, logits_rtol=1e-5
  )


def test_flax_model_from_init_matches_reference():
  """Our model with T5X's initialisation, exported to HF names, against the reference."""
  cfg = RELU  # the smaller config: init compiles slowly (one RNG stream per parameter)
  config = hf_t5_config(cfg)
  model = t5.Transformer(config)
  init_args = (jax.random.PRNGKey(1), ENC[:, :1], DEC_IN[:, :1])
  params = fast_compile(model.init, *init_args)(*init_args)["params"]
  tensors = t5x_to_hf(params, config)
  assert_matches_reference(
      run(model, params), t5_forward(tensors, cfg, ENC, DEC_IN, DEC_TGT > 0), rtol=1e-4
  )
  back = flatten_dict(hf_to_t5x(tensors, config))
  assert back.keys() == flatten_dict(params).keys()
  for k, v in flatten_dict(params).items():
    np.testing.assert_array_equal(back[k], v)


def test_reference_buckets_landmarks():
  """The reference's own buckets, from the paper (key position - query position)."""
  rel = (
      lambda r, bi: int(relative_buckets(1, r + 1, bi, 32, 128)[0, r])
      if r >= 0
      else int(relative_buckets(-r + 1, 1, bi, 32, 128)[-r, 0])
  )
  assert [rel(-r, True) for r in (0, 1, 7, 8, 15, 16, 127, 128, 500)] == [
      0,
      1,
      7,
      8,
      9,
      10,
      15,
      15,
      15,
  ]
  assert [rel(r, True) for r in (1, 7, 8, 16, 500)] == [17, 23, 24, 26, 31]
  assert [rel(-r, False) for r in (0, 15, 16, 127, 128)] == [0, 15, 16, 31, 31]
  assert rel(3, False) == 0


# ------------------------------------------------------------------ configs
def test_real_hf_configs_translate():
  t5_v1_1_base = {
      "architectures": ["T5ForConditionalGeneration"],
      "d_ff": 2048,
      "d_kv": 64,
      "d_model": 768,
      "decoder_start_token_id": 0,
      "dropout_rate": 0.1,
      "eos_token_id": 1,
      "feed_forward_proj": "gated-gelu",
      "initializer_factor": 1.0,
      "is_encoder_decoder": True,
      "layer_norm_epsilon": 1e-06,
      "model_type": "t5",
      "num_decoder_layers": 12,
      "num_heads": 12,
      "num_layers": 12,
      "output_past": True,
      "pad_token_id": 0,
      "relative_attention_num_buckets": 32,
      "tie_word_embeddings": False,
      "vocab_size": 32128,
  }
  assert hf_t5_config(t5_v1_1_base) == t5.get_config("base")
  t5_small = {
      "architectures": ["T5WithLMHeadModel"],
      "d_ff": 2048,
      "d_kv": 64,
      "d_model": 512,
      "dropout_rate": 0.1,
      "layer_norm_epsilon": 1e-06,
      "model_type": "t5",
      "n_positions": 512,
      "num_heads": 8,
      "num_layers": 6,
      "relative_attention_num_buckets": 32,
      "vocab_size": 32128,
  }
  cfg = hf_t5_config(t5_small)  # v1.0: relu and tied embeddings are HF's defaults
  assert (cfg.mlp_activations, cfg.logits_via_embedding, cfg.num_decoder_layers) == (
      ("relu",),
      True,
      6,
  )


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(model_type="bert"), "model_type"),
        (dict(feed_forward_proj="gelu"), "feed_forward_proj"),
        (dict(relative_attention_max_distance=64), "relative_attention_max_distance"),
        (dict(layer_norm_epsilon=1e-5), "layer_norm_epsilon"),
        (dict(dense_act_fn="gelu"), "dense_act_fn='gelu'.*'gelu_new'"),
        (dict(is_gated_act=False), "is_gated_act"),
        (dict(is_decoder=True), "is_decoder"),
        (
            dict(rope_theta=1e4, use_gated_attention=True),
            r"does not interpret: \['rope_theta', 'use_gated_attention'\]",
        ),
    ],
)
def test_unsupported_configs_are_rejected(change, match):
  with pytest.raises(ValueError, match=match):
    hf_t5_config(dict(GATED, **change))


# ------------------------------------------------------------------ errors
def test_not_a_checkpoint_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="No config.json"):
    load_hf_t5(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(GATED))
  with pytest.raises(FileNotFoundError, match="No model.safetensors"):
    load_hf_t5(tmp_path)
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="pytorch_model.bin.*safe_serialization=True"):
    load_hf_t5(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(dict(GATED, model_type="bert")))
  with pytest.raises(ValueError, match="model_type='bert'"):
    load_hf_t5(tmp_path)


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path):
  tensors = random_hf_tensors(GATED)
  missing = "decoder.block.2.layer.1.EncDecAttention.k.weight"
  bad = {k: v for k, v in tensors.items() if k != missing}
  bad["encoder.block.0.layer.1.DenseReluDense.wi.weight"] = tensors[
      "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
  ]
  with pytest.raises(
      KeyError,
      match=r"missing \['decoder.block.2.layer.1.EncDecAttention.k."
      r"weight'\], unexpected \['encoder.block.0.layer.1."
      r"DenseReluDense.wi.weight'\]",
  ):
    load_hf_t5(write_checkpoint(tmp_path / "a", GATED, bad))
  with pytest.raises(ValueError, match=r"shape mismatches.*self_attention/query/kernel"):
    load_hf_t5(write_checkpoint(tmp_path / "b", dict(GATED, d_kv=2), tensors))
