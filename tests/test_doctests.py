"""Runs the docstring examples of every module, so that they stay runnable.

The T5X-only modules (`normgrowth_jax.t5x.metrics`, `.optimizer`) import T5X at module level and
are skipped without it.
"""

import doctest
import importlib
import pkgutil

import pytest

import normgrowth_jax

T5X_ONLY = {"normgrowth_jax.t5x.metrics", "normgrowth_jax.t5x.optimizer"}


def _modules():
  names = [normgrowth_jax.__name__]
  for info in pkgutil.walk_packages(normgrowth_jax.__path__, prefix="normgrowth_jax."):
    if not info.name.endswith("__main__"):
      names.append(info.name)
  return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
  if name in T5X_ONLY:
    pytest.importorskip("t5x")
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
