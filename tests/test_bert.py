"""Tests for normgrowth_jax.models.bert: real MiniLM weights, HF loaders, saturation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from safetensors.numpy import save_file

from normgrowth_jax import saturation
from normgrowth_jax.models import bert

# Real English sentences (opening lines of public-domain novels and plain news-style prose).
SENTENCES = [
    "It is a truth universally acknowledged, that a single man in possession of a good "
    "fortune, must be in want of a wife.",
    "Call me Ishmael.",
    "It was the best of times, it was the worst of times.",
    "Happy families are all alike; every unhappy family is unhappy in its own way.",
    "The sun shone, having no alternative, on the nothing new.",
    "All this happened, more or less.",
    "The train was late again this morning because of a signal failure near the station.",
    "She opened the letter slowly and read it twice before she put it down.",
    "The committee will publish its final report on the new budget next week.",
    "Heavy rain is expected across the north of the country over the weekend.",
    "He bought a loaf of bread, a pint of milk and a newspaper at the corner shop.",
    "The company said profits had risen by ten percent in the last quarter.",
    "Children were playing football in the park until it got dark.",
    "The old bridge over the river was closed for repairs last summer.",
    "Scientists have discovered a new species of frog in the rain forest.",
    "My grandmother grew tomatoes and beans in her small garden behind the house.",
    "The museum is open every day except Monday, and entry is free.",
    "After a long discussion, the jury returned a verdict of not guilty.",
    "The ship sailed out of the harbour as the fog began to lift.",
    "Please close the window before you leave the room.",
]


@pytest.fixture(scope="module")
def minilm():
  return bert.load_minilm()


@pytest.fixture(scope="module")
def minilm_apply(minilm):
  """A jitted MiniLM forward (compiled once per input shape)."""
  model, params, _ = minilm
  return jax.jit(lambda *batch: model.apply({"params": params}, *batch))


def _tiny_model():
  cfg = bert.BertConfig(
      vocab_size=300,
      hidden_size=64,
      num_hidden_layers=1,
      num_attention_heads=4,
      intermediate_size=128,
      max_position_embeddings=16,
  )
  return bert.BertEncoder(cfg)


# ------------------------------------------------------------------------------------------
# Real pretrained weights


def test_minilm_weights_found_in_installed_package():
  d = bert.minilm_dir()
  assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
  cfg = bert.BertConfig.from_json(d / "config.json")
  assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 384, 12)


PAIR = ["A man is eating food.", "A man is eating a piece of bread."]


def test_wordpiece_vocab_fallback_matches_tokenizer_json(tmp_path, minilm):
  import shutil

  for name in ("vocab.txt", "tokenizer_config.json"):
    shutil.copy(bert.minilm_dir() / name, tmp_path / name)
  wordpiece = bert.load_tokenizer(tmp_path)
  got = bert.encode(wordpiece, SENTENCES, max_len=24)
  want = bert.encode(minilm[2], SENTENCES, max_len=24)
  assert got.input_ids.shape == (20, 24)  # the longest sentence is truncated
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  assert bert.encode(wordpiece, ["Call me Ishmael."]).input_ids.tolist() == [
      [101, 2655, 2033, 2003, 22444, 2884, 1012, 102]
  ]  # call me is ##hma ##el .
  with pytest.raises(FileNotFoundError, match="vocab.txt"):
    bert.load_tokenizer(tmp_path / "missing")


def test_minilm_reference_sentence_similarity(minilm, minilm_apply):
  # sentence-transformers' documented value for all-MiniLM-L6-v2 is 0.7553.
  _, _, tok = minilm
  b = bert.encode(tok, PAIR, max_len=16, pad_to_max=True)
  assert b.input_ids[0, 0] == 101 and b.input_ids.dtype == np.int32  # [CLS]
  out = minilm_apply(*b)
  emb = np.asarray(bert.mean_pool(out.hidden_states[-1], out.mask))
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
  assert abs(float(emb[0] @ emb[1]) - 0.755) < 0.01
  assert len(out.hidden_states) == 7 and out.attention_weights[0].shape == (2, 12, 16, 16)
  assert out.logits is None


def test_padding_does_not_change_real_tokens(minilm, minilm_apply):
  model, params, tok = minilm
  short = bert.encode(tok, PAIR[:1])  # [1, 8]: no padding at all
  padded = bert.encode(tok, PAIR, max_len=16, pad_to_max=True)
  n = short.input_ids.shape[1]
  assert padded.attention_mask[0, n:].sum() == 0 and padded.attention_mask[0, :n].all()
  a = model.apply({"params": params}, *short)
  b = minilm_apply(*padded)
  for ha, hb in zip(a.hidden_states, b.hidden_states):
    np.testing.assert_allclose(np.asarray(hb)[:1, :n], np.asarray(ha), atol=2e-5)
  # No weight lands on padding keys.
  assert float(jnp.abs(b.attention_weights[-1][0, ..., n:]).max()) == 0.0


def test_dropout_is_active_only_when_not_deterministic():
  model = _tiny_model()
  params = bert.init_like(model, jax.random.PRNGKey(0))
  ids = jnp.array([[2, 7, 9, 11]])
  det = model.apply({"params": params}, ids).hidden_states[-1]
  run = jax.jit(
      lambda seed: model.apply(
          {"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(seed)}
      ).hidden_states[-1]
  )
  assert float(jnp.abs(run(0) - det).max()) > 1e-3
  np.testing.assert_array_equal(run(0), run(0))


# ------------------------------------------------------------------------------------------
# HF checkpoint directories, against an independent float64 NumPy forward


def _random_hf_checkpoint(path, model_type, rng):
  """Writes config.json + model.safetensors with HF names; returns the tensors."""
  cfg = dict(
      model_type=model_type,
      vocab_size=40,
      hidden_size=16,
      num_hidden_layers=2,
      num_attention_heads=4,
      intermediate_size=24,
      max_position_embeddings=20,
      type_vocab_size=2 if model_type == "bert" else 1,
      layer_norm_eps=1e-5,
      hidden_act="gelu",
      pad_token_id=0 if model_type == "bert" else 1,
      position_embedding_type="absolute",
      architectures=["X"],
  )
  d, f = cfg["hidden_size"], cfg["intermediate_size"]
  pre = "bert." if model_type == "bert" else "roberta."
  t = {}
  normal = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)
  t[pre + "embeddings.word_embeddings.weight"] = normal(cfg["vocab_size"], d)
  t[pre + "embeddings.position_embeddings.weight"] = normal(cfg["max_position_embeddings"], d)
  t[pre + "embeddings.token_type_embeddings.weight"] = normal(cfg["type_vocab_size"], d)
  t[pre + "embeddings.LayerNorm.weight"] = 1 + normal(d)
  t[pre + "embeddings.LayerNorm.bias"] = normal(d)
  t[pre + "embeddings.position_ids"] = np.arange(20, dtype=np.int64)[None]
  for i in range(cfg["num_hidden_layers"]):
    p = f"{pre}encoder.layer.{i}."
    for name in (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ):
      t[p + name + ".weight"], t[p + name + ".bias"] = normal(d, d), normal(d)
    t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = normal(f, d), normal(f)
    t[p + "output.dense.weight"], t[p + "output.dense.bias"] = normal(d, f), normal(d)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
      t[p + ln + ".weight"], t[p + ln + ".bias"] = 1 + normal(d), normal(d)
  t[pre + "pooler.dense.weight"], t[pre + "pooler.dense.bias"] = normal(d, d), normal(d)
  t["cls.predictions.bias" if model_type == "bert" else "lm_head.bias"] = normal(40)
  save_file(t, str(path / "model.safetensors"))
  (path / "config.json").write_text(json.dumps(cfg))
  return cfg, {k[len(pre) :]: v.astype(np.float64) for k, v in t.items() if k.startswith(pre)}


def _numpy_forward(cfg, w, ids, mask, types):
  """Float64 BERT/RoBERTa forward from HF-named torch-layout tensors."""

  def ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg["layer_norm_eps"]) * w[p + ".weight"] + w[p + ".bias"]

  def lin(x, p):
    return x @ w[p + ".weight"].T + w[p + ".bias"]

  if cfg["model_type"] == "roberta":
    real = (ids != cfg["pad_token_id"]).astype(int)
    pos = np.cumsum(real, 1) * real + cfg["pad_token_id"]
  else:
    pos = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
  x = (
      w["embeddings.word_embeddings.weight"][ids]
      + w["embeddings.position_embeddings.weight"][pos]
      + w["embeddings.token_type_embeddings.weight"][types]
  )
  x = ln(x, "embeddings.LayerNorm")
  hs = [x]
  b, n, d = x.shape
  h, dh = cfg["num_attention_heads"], d // cfg["num_attention_heads"]
  for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q, k, v = (
        lin(x, p + "attention.self." + s).reshape(b, n, h, dh).transpose(0, 2, 1, 3)
        for s in ("query", "key", "value")
    )
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    s = np.where(mask[:, None, None, :] > 0, s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    ff = lin(x, p + "intermediate.dense")
    ff = 0.5 * ff * (1 + scipy.special.erf(ff / np.sqrt(2)))
    x = ln(x + lin(ff, p + "output.dense"), p + "output.LayerNorm")
    hs.append(x)
  return hs


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_hf_checkpoint_roundtrip_matches_numpy_float64(tmp_path, model_type):
  cfg, w = _random_hf_checkpoint(tmp_path, model_type, np.random.default_rng(0))
  pad = cfg["pad_token_id"]
  ids = np.array([[3, 9, 17, 25, 4, 8], [3, 11, 4, pad, pad, pad]], np.int32)
  mask = (ids != pad).astype(np.int32)
  types = np.zeros_like(ids)
  if model_type == "bert":
    types[0, 3:] = 1
  with jax.enable_x64(True):
    model, params = bert.load_hf_bert(tmp_path, dtype=jnp.float64)
    assert model.config.model_type == model_type
    kernel = params["encoder"]["layer_1"]["attention"]["query"]["kernel"]
    np.testing.assert_array_equal(kernel, w["encoder.layer.1.attention.self.query.weight"].T)
    out = model.apply({"params": params}, ids, mask, types)
    ref = _numpy_forward(cfg, w, ids, mask, types)
    assert len(out.hidden_states) == len(ref) == 3
    for got, want in zip(out.hidden_states, ref):
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(np.asarray(got)[mask > 0], want[mask > 0], atol=1e-10)


def test_hf_loader_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    bert.load_hf_bert(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="safetensors"):
    bert.load_hf_bert(tmp_path)
  (tmp_path / "config.json").write_text(
      json.dumps({"model_type": "bert", "position_embedding_type": "relative_key"})
  )
  with pytest.raises(ValueError, match="position_embedding_type"):
    bert.load_hf_bert(tmp_path)


def test_hf_loader_rejects_unknown_tensors_and_wrong_shapes(tmp_path):
  _random_hf_checkpoint(tmp_path, "bert", np.random.default_rng(1))
  cfg = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, intermediate_size=32)))
  with pytest.raises(ValueError, match="shape mismatches"):
    bert.load_hf_bert(tmp_path)
  tensors = {
      "bert.embeddings.word_embeddings.weight": np.zeros((40, 16), np.float32),
      "bert.encoder.layer.0.attention.self.rel_bias.weight": np.zeros(2, np.float32),
  }
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(KeyError, match="rel_bias"):
    bert.load_hf_bert(tmp_path)


def test_too_long_input_is_rejected():
  model = _tiny_model()
  params = bert.init_like(model, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="truncate"):
    model.apply({"params": params}, jnp.ones((1, 17), jnp.int32))
  roberta = bert.BertConfig(model_type="roberta", pad_token_id=1, max_position_embeddings=514)
  assert roberta.max_length == 512


def test_init_like_uses_bert_init():
  model = _tiny_model()
  p = bert.init_like(model, jax.random.PRNGKey(0))
  k = np.asarray(p["encoder"]["layer_0"]["intermediate"]["kernel"])
  assert k.shape == (64, 128) and abs(k.std() - 0.02) < 0.002
  assert np.all(np.asarray(p["embeddings"]["word_embeddings"])[model.config.pad_token_id] == 0)
  ln = p["encoder"]["layer_0"]["output_LayerNorm"]
  assert np.all(np.asarray(ln["scale"]) == 1) and np.all(np.asarray(ln["bias"]) == 0)


# ------------------------------------------------------------------------------------------
# Saturation


def _cosine(a, b, mask):
  """Mean per-token cosine over real tokens (float64 NumPy)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
  return float(cos[np.asarray(mask, bool)].mean())


@pytest.mark.slow
def test_saturated_limit_is_approached_by_finite_rho_float64(minilm):
  model, params32, tok = minilm
  b = bert.encode(tok, ["Call me Ishmael.", "It was the best of times."])
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params32)
    lim = model.apply({"params": params}, *b, saturated=True)
    real = np.asarray(b.attention_mask, bool)
    for a in lim.attention_weights:  # hard attention: rows sum to 1, pads never chosen
      a = np.asarray(a)
      np.testing.assert_allclose(a.sum(-1).transpose(0, 2, 1)[real], 1.0)
      assert np.all(a[..., ~real[1]][1] == 0)
    fwd = jax.jit(lambda p: model.apply({"params": p}, *b).hidden_states)
    curve = []
    for rho in (1e1, 1e2, 1e4, 1e6):
      fin = fwd(saturation.scale_params(params, rho))
      curve.append([_cosine(f, l, real) for f, l in zip(fin, lim.hidden_states)])
  curve = np.array(curve)  # [rho, layer]
  print("finite-rho vs limit, per layer:\n", np.round(curve, 6))
  assert np.all(curve[-1] > 0.9999)
  assert np.all(np.diff(curve.min(axis=1)) > -1e-9)  # worst layer improves with rho
  assert curve[0].min() < curve[-1].min()


@pytest.mark.slow
def test_pretrained_minilm_is_more_saturated_than_random_init(minilm):
  """The paper's Fig. 2 on MiniLM: per-layer similarity at rho = 1000, 20 real sentences."""
  model, params, tok = minilm
  b = bert.encode(tok, SENTENCES, max_len=64)
  random_params = bert.init_like(model, jax.random.PRNGKey(0))

  mask = jnp.asarray(b.attention_mask, bool)
  fn = lambda q: model.apply({"params": q}, *b).hidden_states
  fn_limit = lambda q: model.apply({"params": q}, *b, saturated=True).hidden_states
  pre = np.asarray(saturation.saturation_similarity(fn, params, rho=1000.0, mask=mask))
  rnd = np.asarray(saturation.saturation_similarity(fn, random_params, rho=1000.0, mask=mask))
  pre_lim = np.asarray(saturation.limit_similarity(fn, fn_limit, params, mask=mask))
  print("\nlayer  pretrained(rho=1e3, exact limit)  random(rho=1e3)")
  for i in range(len(pre)):
    print(f"{i:5d}  {pre[i]:8.4f} {pre_lim[i]:8.4f}  {rnd[i]:8.4f}")
  assert pre.shape == (7,)
  np.testing.assert_allclose(pre[0], 1.0, atol=1e-5)  # LayerNorm'd embeddings: homogeneous
  # rho = 1000 is already at the exact limit (to float32 accuracy of the comparison).
  np.testing.assert_allclose(pre, pre_lim, atol=0.01)
  # Fig. 2's ordering, on average over layers. MiniLM is only weakly saturated (about 0.06-0.1
  # per layer; its last layer is no higher than random init's).
  assert pre[1:].mean() > rnd[1:].mean() + 0.02
