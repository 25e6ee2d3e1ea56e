"""normgrowth_jax: parameter norm growth and saturation in transformers.

A JAX/Flax reproduction of Merrill et al., "Effects of Parameter Norm Growth
During Transformer Training" (EMNLP 2021).
"""

__version__ = "0.1.0"
