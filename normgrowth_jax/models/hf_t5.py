"""Loads Hugging Face T5 checkpoints (T5 v1.0 and T5.1.1) into `t5.Transformer`, without torch.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``). HF's T5 computes exactly the function of our T5X-named model:
no 1/sqrt(d_kv) on attention logits (both fold it into the query init), RMS norms with eps 1e-6,
one relative position table per stack (HF keeps it in block 0's self-attention). The output
layer is `lm_head.weight` whenever the checkpoint holds one distinct from `shared.weight` (HF
uses it whatever `tie_word_embeddings` says), else the shared embedding; the decoder output is
scaled by d_model**-0.5 first when `scale_decoder_outputs` (written by transformers >= 5; older
configs: `tie_word_embeddings`) is true. `t5.Transformer` computes the two pairings T5 uses:
scaled + shared embedding (T5 v1.0, `logits_via_embedding`) and unscaled + `lm_head` (T5.1.1);
the other two are refused. config.json keys we neither read nor know to leave the forward pass
unchanged are refused by name. Only the hidden states at padding positions differ: HF lets
padding queries attend, ours gives them zero attention (real tokens are unaffected).

Name map (HF torch Linear weights are [out, in]; T5X kernels are [in, out], heads fused)::

    shared.weight                                            token_embedder/embedding
    {enc,dec}.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, heads]
                                                             {stack}/relpos_bias/rel_embedding^T
    encoder.block.{i}.layer.0.layer_norm / SelfAttention.{q,k,v,o}
                                 -> layers_{i}/pre_attention_layer_norm / attention/{query,..,out}
    encoder.block.{i}.layer.1.layer_norm / DenseReluDense.{wi | wi_0,wi_1, wo}
                                 -> layers_{i}/pre_mlp_layer_norm / mlp/{wi | wi_0,wi_1, wo}
    decoder.block.{i}.layer.{0,1,2}: SelfAttention, EncDecAttention, DenseReluDense
                                 -> self_attention, encoder_decoder_attention, mlp
    {encoder,decoder}.final_layer_norm.weight                {encoder_norm,decoder_norm}/scale
    lm_head.weight (if distinct from shared.weight)          decoder/logits_dense/kernel

Example:
    >>> import json, pathlib, tempfile
    >>> from safetensors.numpy import save_file
    >>> hf_config = {"model_type": "t5", "vocab_size": 32, "d_model": 8, "d_kv": 2, "d_ff": 16,
    ...              "num_layers": 1, "num_heads": 4, "feed_forward_proj": "gated-gelu",
    ...              "tie_word_embeddings": False}
    >>> cfg = hf_t5_config(hf_config)
    >>> tokens = jnp.array([[5, 6, 1]])
    >>> params = t5.Transformer(cfg).init(jax.random.PRNGKey(0), tokens, tokens)["params"]
    >>> tmp = tempfile.TemporaryDirectory(); d = pathlib.Path(tmp.name)
    >>> _ = (d / "config.json").write_text(json.dumps(hf_config))
    >>> save_file(t5x_to_hf(params, cfg), str(d / "model.safetensors"))
    >>> model, loaded = load_hf_t5(d)
    >>> model.config.mlp_activations, model.apply({"params": loaded}, tokens, tokens).logits.shape
    (('gelu', 'linear'), (1, 3, 32))
    >>> tmp.cleanup()
"""

import json
import pathlib
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from normgrowth_jax.models import t5
from normgrowth_jax.models.bert import _check_shapes, _read_safetensors

SUPPORTED_MODEL_TYPES = ("t5", "mt5")
# HF's feed_forward_proj -> our mlp_activations. HF's plain "gelu" is the exact (erf) GELU,
# which T5Config cannot express; "gated-gelu" uses gelu_new (tanh), as T5X.
_FEED_FORWARD = {
    "relu": ("relu",),
    "gated-gelu": ("gelu", "linear"),
    "gated-relu": ("relu", "linear"),
}
# HF T5Config defaults, for keys that old config.json files omit.
_HF_DEFAULTS = dict(
    vocab_size=32128,
    d_model=512,
    d_kv=64,
    d_ff=2048,
    num_layers=6,
    num_heads=8,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
)
# HF's dense_act_fn / is_gated_act, derived from feed_forward_proj (a saved value overrides it).
_DERIVED_ACT = {
    "relu": ("relu", False),
    "gated-gelu": ("gelu_new", True),
    "gated-relu": ("relu", True),
}
# config.json keys that do not change the forward pass: token ids, generation, export and
# training settings, metadata. Any key neither read nor listed here is refused.
_INERT_KEYS = frozenset(
    (
        "_name_or_path",
        "architectures",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "initializer_factor",
        "is_encoder_decoder",
        "use_cache",
        "output_past",
        "n_positions",
        "classifier_dropout",
        "gradient_checkpointing",
        "task_specific_params",
        "tokenizer_class",
        "pad_token_id",
        "eos_token_id",
        "bos_token_id",
        "decoder_start_token_id",
        "sep_token_id",
        "max_length",
        "min_length",
        "num_beams",
        "early_stopping",
        "no_repeat_ngram_size",
        "length_penalty",
        "prefix",
        "id2label",
        "label2id",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "torchscript",
        "use_bfloat16",
        "problem_type",
    )
)
# Keys `hf_t5_config` reads (besides _HF_DEFAULTS).
_READ_KEYS = (
    "model_type",
    "num_decoder_layers",
    "scale_decoder_outputs",
    "dense_act_fn",
    "is_gated_act",
    "is_decoder",
)
# (norm, HF module, our module) of each sub-layer, in HF's layer.{j} order.
_SUBLAYERS = {
    "encoder": (
        ("pre_attention_layer_norm", "SelfAttention", "attention"),
        ("pre_mlp_layer_norm", "DenseReluDense", "mlp"),
    ),
    "decoder": (
        ("pre_self_attention_layer_norm", "SelfAttention", "self_attention"),
        ("pre_cross_attention_layer_norm", "EncDecAttention", "encoder_decoder_attention"),
        ("pre_mlp_layer_norm", "DenseReluDense", "mlp"),
    ),
}
_ATTENTION = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
# Tensors HF itself ties to `shared` or drops on load (an unused table of old checkpoints).
_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_IGNORED = _ALIASES + ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def _load_config_json(config_json: Union[Mapping[str, Any], str, pathlib.Path]) -> Dict:
  if isinstance(config_json, Mapping):
    return dict(config_json)
  return json.loads(pathlib.Path(config_json).read_text())


def hf_t5_config(
    config_json: Union[Mapping[str, Any], str, pathlib.Path],
    dtype: Any = "float32",
    separate_head: Optional[bool] = None,
) -> t5.T5Config:
  """Translates an HF T5 ``config.json`` (a dict or a path) into a `t5.T5Config`.

  Args:
      config_json: HF's config (keys d_model, d_kv, d_ff, num_layers, num_decoder_layers,
          num_heads, feed_forward_proj, tie_word_embeddings, scale_decoder_outputs, ...;
          missing keys take HF's defaults).
      dtype: the model's activation dtype.
      separate_head: whether the checkpoint holds an `lm_head.weight` distinct from
          `shared.weight` (`load_hf_t5` reads it off the tensors); None: the head that goes
          with `scale_decoder_outputs` (default `tie_word_embeddings`), i.e. shared if scaled.

  Raises:
      ValueError: if model_type is not T5; for settings `t5.Transformer` cannot express
          (exact-GELU or other activations, bucket counts / distances other than 32 / 128,
          layer_norm_epsilon other than 1e-6, a decoder-only config, scaled outputs with a
          separate head or unscaled ones with the shared embedding); for keys it does not
          know, naming them.

  Example:
      >>> cfg = hf_t5_config({"model_type": "t5", "d_ff": 1024, "num_heads": 6,
      ...                     "num_layers": 8, "feed_forward_proj": "gated-gelu",
      ...                     "tie_word_embeddings": False})   # google/t5-v1_1-small
      >>> cfg == t5.get_config("small")
      True
      >>> hf_t5_config({"model_type": "t5", "feed_forward_proj": "gated-gelu",
      ...               "tie_word_embeddings": True, "scale_decoder_outputs": False},
      ...              separate_head=True).logits_via_embedding   # transformers >= 5 save
      False
  """
  d = _load_config_json(config_json)
  model_type = d.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
        f"config.json has model_type={model_type!r}; only "
        f"{SUPPORTED_MODEL_TYPES} checkpoints can be loaded into t5.Transformer."
    )
  unknown = sorted(set(d) - set(_HF_DEFAULTS) - set(_READ_KEYS) - _INERT_KEYS)
  if unknown:
    raise ValueError(
        f"config.json has settings hf_t5 does not interpret: {unknown}. If they "
        "leave the forward pass unchanged, add them to hf_t5._INERT_KEYS; "
        "otherwise the checkpoint is not a T5 that t5.Transformer computes."
    )
  d = {**_HF_DEFAULTS, **d}
  if d["feed_forward_proj"] not in _FEED_FORWARD:
    raise ValueError(
        f"feed_forward_proj={d['feed_forward_proj']!r} is not supported; use one "
        f"of {sorted(_FEED_FORWARD)}."
    )
  act_fn, gated = _DERIVED_ACT[d["feed_forward_proj"]]
  for key, want in (
      ("relative_attention_num_buckets", t5.NUM_BUCKETS),
      ("relative_attention_max_distance", t5.MAX_DISTANCE),
      ("layer_norm_epsilon", t5.LAYER_NORM_EPSILON),
      ("dense_act_fn", act_fn),
      ("is_gated_act", gated),
      ("is_decoder", False),
  ):
    if d.get(key, want) != want:
      raise ValueError(
          f"config.json has {key}={d[key]!r}; t5.Transformer fixes it to "
          f"{want!r} (with feed_forward_proj={d['feed_forward_proj']!r})."
      )
  scaled = bool(d.get("scale_decoder_outputs", d["tie_word_embeddings"]))
  separate = not scaled if separate_head is None else separate_head
  if scaled == separate:
    raise ValueError(
        f"config.json has scale_decoder_outputs={scaled} (tie_word_embeddings="
        f"{d['tie_word_embeddings']}) and the checkpoint "
        f"{'has an lm_head.weight distinct from' if separate else 'has no lm_head.weight but'}"
        " shared.weight: t5.Transformer scales the decoder output by d_model**-0.5 exactly "
        "when the output layer is the shared embedding (T5 v1.0), not with lm_head (T5.1.1)."
    )
  return t5.T5Config(
      vocab_size=d["vocab_size"],
      dtype=dtype,
      emb_dim=d["d_model"],
      num_heads=d["num_heads"],
      num_encoder_layers=d["num_layers"],
      num_decoder_layers=d.get("num_decoder_layers") or d["num_layers"],
      head_dim=d["d_kv"],
      mlp_dim=d["d_ff"],
      mlp_activations=_FEED_FORWARD[d["feed_forward_proj"]],
      dropout_rate=d["dropout_rate"],
      logits_via_embedding=not separate,
  )


def _with_shared(tensors: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """`tensors` with `shared.weight` filled from an alias when only an alias is stored."""
  tensors = dict(tensors)
  alias = [k for k in _ALIASES if k in tensors]
  if "shared.weight" not in tensors and alias:  # some exports keep only an alias
    tensors["shared.weight"] = tensors[alias[0]]
  return tensors


def has_separate_head(tensors: Mapping[str, np.ndarray]) -> bool:
  """Whether HF tensors hold an `lm_head.weight` that is not a copy of `shared.weight`.

  Example:
      >>> w = np.ones((4, 2), np.float32)
      >>> has_separate_head({"shared.weight": w}), has_separate_head(
      ...     {"shared.weight": w, "lm_head.weight": w}), has_separate_head(
      ...     {"shared.weight": w, "lm_head.weight": 2 * w})
      (False, False, True)
  """
  tensors = _with_shared(tensors)
  head, shared = tensors.get("lm_head.weight"), tensors.get("shared.weight")
  return head is not None and not (shared is not None and np.array_equal(head, shared))


def _name_map(config: t5.T5Config) -> Dict[str, Tuple[str, bool]]:
  """HF tensor name -> (our "a/b/c" parameter path, whether to transpose)."""
  acts = config.mlp_activations
  mlp = ("wi",) if len(acts) == 1 else tuple(f"wi_{k}" for k in range(len(acts)))
  names = {"shared.weight": ("token_embedder/embedding", False)}
  for stack, n in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
    names[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        f"{stack}/relpos_bias/rel_embedding",
        True,
    )
    names[f"{stack}.final_layer_norm.weight"] = (f"{stack}/{stack}_norm/scale", False)
    for i in range(n):
      for j, (norm, hf_module, module) in enumerate(_SUBLAYERS[stack]):
        hf, ours = f"{stack}.block.{i}.layer.{j}.", f"{stack}/layers_{i}/"
        names[hf + "layer_norm.weight"] = (f"{ours}{norm}/scale", False)
        leaves = _ATTENTION if module != "mlp" else [(w, w) for w in mlp + ("wo",)]
        for a, b in leaves:
          names[f"{hf}{hf_module}.{a}.weight"] = (f"{ours}{module}/{b}/kernel", True)
  if not config.logits_via_embedding:
    names["lm_head.weight"] = ("decoder/logits_dense/kernel", True)
  return names


def hf_to_t5x(tensors: Mapping[str, np.ndarray], config: t5.T5Config) -> Dict[str, Any]:
  """Maps HF T5 tensor names to `t5.Transformer`'s parameter tree (see the module doc).

  Transposes Linear weights [out, in] to kernels [in, out] and the relative attention bias
  [buckets, heads] to [heads, buckets]. With tied embeddings an `lm_head.weight` equal to
  `shared.weight` is ignored; `encoder/decoder.embed_tokens.weight` are HF's aliases of
  `shared`.

  Raises:
      KeyError: naming the missing and the unexpected tensors (e.g. `wi` in a gated-GELU
          config, a relative bias outside block 0, an encoder-only checkpoint, an
          `lm_head.weight` distinct from `shared.weight` with tied embeddings).
  """
  names = _name_map(config)
  tensors = _with_shared(tensors)
  ignored = _IGNORED + (
      ("lm_head.weight",) if config.logits_via_embedding and not has_separate_head(tensors) else ()
  )
  unexpected = sorted(k for k in tensors if k not in names and k not in ignored)
  missing = sorted(k for k in names if k not in tensors)
  if missing or unexpected:
    raise KeyError(
        f"HF T5 tensors do not match config.json (feed_forward_proj -> {config.mlp_activations}"
        f", logits_via_embedding={config.logits_via_embedding}, {config.num_encoder_layers}+"
        f"{config.num_decoder_layers} layers): missing {missing[:8]}, unexpected "
        f"{unexpected[:8]}."
    )
  return unflatten_dict(
      {
          tuple(path.split("/")): np.asarray(tensors[hf]).T
          if transpose
          else np.asarray(tensors[hf])
          for hf, (path, transpose) in names.items()
      }
  )


def t5x_to_hf(params: Mapping[str, Any], config: t5.T5Config) -> Dict[str, np.ndarray]:
  """The inverse of `hf_to_t5x`: HF T5 tensors (float32 NumPy, contiguous) from our params.

  `safetensors.numpy.save_file` of the result plus a matching config.json is an HF T5
  checkpoint (with tied embeddings only `shared.weight` is written, as HF does).
  """
  flat = flatten_dict(params, sep="/")
  return {
      hf: np.ascontiguousarray(
          np.asarray(flat[path], np.float32).T if transpose else np.asarray(flat[path], np.float32)
      )
      for hf, (path, transpose) in _name_map(config).items()
  }


def load_hf_t5(checkpoint_dir, dtype: Any = jnp.float32) -> Tuple[t5.Transformer, Dict]:
  """Loads a Hugging Face T5 checkpoint directory (T5 v1.0, T5.1.1, mT5), without torch.

  Args:
      checkpoint_dir: holds config.json and model.safetensors (or sharded
          model-0000x-of-0000y.safetensors with model.safetensors.index.json).
      dtype: the model's activation dtype; parameters are cast to float32, or to float64 when
          dtype is float64 (enable jax x64 first).

  Returns:
      (model, params): a `t5.Transformer` and its "params" tree of jax arrays. Dropout
      (config.json's dropout_rate) only applies with `enable_dropout=True`.

  Raises:
      FileNotFoundError: no config.json, or no safetensors (pytorch_model.bin is not read).
      ValueError: not a T5 config, an unsupported or unknown setting (see `hf_t5_config`),
          or tensor shapes that do not match.
      KeyError: missing or unexpected tensor names.
  """
  d = pathlib.Path(checkpoint_dir)
  if not (d / "config.json").is_file():
    raise FileNotFoundError(f"No config.json in {d}: pass a Hugging Face T5 model directory.")
  config_json = _load_config_json(d / "config.json")
  hf_t5_config(config_json)  # refuse a bad config before reading any tensor
  has_safetensors = (d / "model.safetensors").is_file() or (
      d / "model.safetensors.index.json"
  ).is_file()
  if not has_safetensors and (d / "pytorch_model.bin").is_file():
    raise FileNotFoundError(
        f"{d} has pytorch_model.bin but no model.safetensors: torch pickles are not supported "
        "(we do not depend on torch). Convert once where torch is installed: transformers."
        "T5ForConditionalGeneration.from_pretrained(dir).save_pretrained(dir, "
        "safe_serialization=True)."
    )
  tensors = _read_safetensors(d)
  config = hf_t5_config(
      config_json, dtype=jnp.dtype(dtype).name, separate_head=has_separate_head(tensors)
  )
  model = t5.Transformer(config)
  params = hf_to_t5x(tensors, config)
  tokens = jnp.ones((1, 1), jnp.int32)
  _check_shapes(params, jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens)["params"])
  param_dtype = jnp.promote_types(dtype, jnp.float32)
  return model, jax.tree_util.tree_map(lambda a: jnp.asarray(a, param_dtype), params)
