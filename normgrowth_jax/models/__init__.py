"""Flax models that return per-layer hidden states and attention weights (`ModelOutput`)."""

from normgrowth_jax.models.outputs import ModelOutput
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig, lm_loss
from normgrowth_jax.models.bert import (
    BertConfig,
    BertEncoder,
    encode,
    init_like,
    load_hf_bert,
    load_minilm,
    mean_pool,
)
from normgrowth_jax.models.t5 import (
    T5Config,
    T5Output,
    Transformer,
    cross_entropy_with_z_loss,
    get_config,
    make_loss_fn,
)
from normgrowth_jax.models.hf_t5 import hf_t5_config, load_hf_t5, t5x_to_hf
