"""Session-wide test setup: the data cache is test-only, never the user's ``~/.cache``; tests
marked ``cpu_only`` are skipped when JAX's default backend is an accelerator."""

import os

import pytest

from backend_helpers import ACCELERATOR
from data_helpers import data_root_for_tests


def pytest_collection_modifyitems(config, items):
  """Skips ``cpu_only`` tests on an accelerator (they need XLA host devices or CPU numerics)."""
  del config
  if not ACCELERATOR:
    return
  skip = pytest.mark.skip(
      reason="cpu_only: needs the CPU backend (XLA host devices or CPU "
      "numerics); the default backend here is an accelerator"
  )
  for item in items:
    if "cpu_only" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def normgrowth_test_data(request, tmp_path_factory):
  """Points ``$NORMGROWTH_DATA`` at the test-only data root for the whole session.

  Every test, including ones that prepare or look up a corpus without naming a root,
  then reads and writes only there (tests that need an empty cache still override it
  with ``monkeypatch.setenv``).
  """
  root = data_root_for_tests(request.config, tmp_path_factory)
  old = os.environ.get("NORMGROWTH_DATA")
  os.environ["NORMGROWTH_DATA"] = str(root)
  yield root
  if old is None:
    os.environ.pop("NORMGROWTH_DATA", None)
  else:
    os.environ["NORMGROWTH_DATA"] = old
