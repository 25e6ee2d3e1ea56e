"""The hook refuses a restored trace recorded with other settings (a real trainer checkpoint).

Tiny T5.1.1 on botchan span corruption (the test-only data cache), 3 steps with one
``history_size`` and groups, then a resume with another: refused with the hook's one-line
message before anything in MODEL_DIR changes.
"""

import os

import gin
import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from data_helpers import TINY_T5_BINDINGS, TINY_T5_GIN
from normgrowth_jax import gin_utils, train

TINY = TINY_T5_GIN
BASE = [*TINY_T5_BINDINGS, "TRAIN_STEPS=3"]


def _run(model_dir, *bindings):
  gin.clear_config()
  try:
    gin_utils.parse_gin([TINY], [f"MODEL_DIR='{model_dir}'", *BASE, *bindings])
    return train.train(progress=False)
  finally:
    gin.clear_config()


def _files(root):
  """{relative path: bytes} of every file under ``root``."""
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      with open(os.path.join(d, n), "rb") as f:
        out[os.path.relpath(os.path.join(d, n), root)] = f.read()
  return out


@pytest.mark.usefixtures("data_cache")
def test_resume_with_other_history_size_or_groups_is_refused(tmp_path):
  model_dir = str(tmp_path / "run")
  _run(model_dir, "optimizers.make_optimizer.history_size=16")
  before = _files(model_dir)
  assert any(p.startswith("checkpoints") for p in before)
  for change, configured in [
      (
          ["optimizers.make_optimizer.history_size=8"],
          "configured with history_size=8, groups [encoder/layers_0, " "encoder/layers_1]",
      ),
      (
          ["optimizers.make_optimizer.groups=None", "optimizers.make_optimizer.history_size=16"],
          "configured with history_size=16, groups [none]",
      ),
  ]:
    with pytest.raises(ValueError) as err:
      _run(model_dir, *change, "train.allow_config_change=True")
    msg, *context = str(err.value).split("\n")  # gin appends "In call to configurable ..."
    assert all("In call to configurable" in line for line in context), err.value
    assert "recorded with history_size=16, groups [encoder/layers_0, encoder/layers_1]" in msg, msg
    assert configured in msg and "resume with the run's own track_norms settings" in msg, msg
    assert _files(model_dir) == before
