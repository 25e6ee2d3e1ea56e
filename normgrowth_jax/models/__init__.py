"""Flax models that return per-layer hidden states and attention weights (`ModelOutput`)."""

from normgrowth_jax.models.outputs import ModelOutput
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig, lm_loss
