"""The analysis readers on files real T5X wrote (tests/fixtures/t5x_tiny_{legacy,orbax}).

``make_t5x_fixtures.sh`` ran ``python -m t5x.train`` with ``t5x_tiny.gin`` (T5.1.1 2+2 layers of
width 8, T5X's Adafactor, ``gin_configs/t5x/norm_tracking.gin``, 4 steps on botchan, a
checkpoint every 2 steps), once with T5X's legacy checkpoints and once with its orbax ones, and
kept the checkpoints of steps 2 and 4 and the ``train/`` TensorBoard events; then
``t5x_expected.py`` recorded what T5X's own reader (orbax's for the orbax format) sees in every
checkpoint (``expected.json``). Only data is committed; these tests need no T5X.
"""

import json
import os

import numpy as np
import pytest

from normgrowth_jax.analysis import checkpoints as ac
from normgrowth_jax.analysis import trajectory as at

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FORMATS = [("legacy", "t5x"), ("orbax", "t5x_orbax")]


def _dir(fmt):
  return os.path.join(FIXTURES, f"t5x_tiny_{fmt}")


def _expected(fmt):
  with open(os.path.join(_dir(fmt), "expected.json")) as f:
    return json.load(f)


def _paper(path):
  segs = path.split("/")
  return "encoder" in segs and not any("embed" in s for s in segs)


@pytest.mark.parametrize("fmt, layout", FORMATS)
def test_checkpoints_read_as_t5x_reads_them(fmt, layout):
  refs = ac.list_checkpoints(_dir(fmt))
  assert [(r.step, r.layout) for r in refs] == [(2, layout), (4, layout)]
  expected = _expected(fmt)
  for ref in refs:
    want = expected[f"checkpoint_{ref.step}"]
    assert want["step"] == ref.step
    got = ac.read_params(ref, "all")
    assert sorted(got) == sorted(want["params"])
    for path, w in want["params"].items():
      x = got[path]
      assert list(x.shape) == w["shape"], path
      assert float(x.reshape(-1)[0]) == w["first"], path
      np.testing.assert_allclose(
          np.sum(np.asarray(x, np.float64) ** 2), w["sum_sq"], rtol=1e-12, err_msg=path
      )
    paper = ac.read_params(ref, "paper")
    assert sorted(paper) == sorted(
        p for p in want["params"] if _paper(p) and len(want["params"][p]["shape"]) >= 1
    )


@pytest.mark.parametrize("fmt", [f for f, _ in FORMATS])
def test_trajectories_match_what_t5x_logged(fmt):
  d = _dir(fmt)
  expected = _expected(fmt)
  logged = at.read_tensorboard(d)  # MODEL_DIR/train: the norms/* metrics T5X wrote
  assert logged["step"].tolist() == [1, 2, 3, 4]
  assert {
      "param_norm",
      "update_norm",
      "direction_cos",
      "param_norm/encoder/layers_0",
      "param_norm/encoder/layers_1",
  } <= set(logged)
  # The trace saved in the optimizer state of checkpoint 4 is the same rows.
  trace = at.read_checkpoint_trace(d)
  assert trace["step"].tolist() == [1, 2, 3, 4]
  for col in ("param_norm", "update_norm", "direction_cos", "param_norm/encoder/layers_1"):
    np.testing.assert_allclose(trace[col], logged[col], rtol=1e-6, err_msg=col)
  # Post-hoc from the checkpoints: the norms T5X logged at steps 2 and 4, and the norms of
  # the parameters T5X's own reader loaded.
  traj = ac.checkpoint_trajectory(d)
  assert traj["step"].tolist() == [2, 4]
  at_steps = np.searchsorted(logged["step"], [2, 4])
  for col in ("param_norm", "param_norm/encoder/layers_0", "param_norm/encoder/layers_1"):
    np.testing.assert_allclose(traj[col], logged[col][at_steps], rtol=1e-6, err_msg=col)
  for i, step in enumerate((2, 4)):
    want = expected[f"checkpoint_{step}"]["params"]
    sq = sum(w["sum_sq"] for p, w in want.items() if _paper(p) and len(w["shape"]) >= 1)
    np.testing.assert_allclose(traj["param_norm"][i], np.sqrt(sq), rtol=1e-12)
  assert traj["pair_step"].tolist() == [2] and traj["pair_next_step"].tolist() == [4]
  assert 0 < traj["update_norm"][0] <= logged["update_norm"][2:].sum()  # steps 3 and 4
