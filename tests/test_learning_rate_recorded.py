"""The hook's ``learning_rate`` column: the rate of the very update each row records.

Plain SGD (delta_t = -lr_t g_t) ties a row to the rate that produced its update; the trainer
runs check it through the real checkpointer across a resume; ``run_reader.read_learning_rate``
prefers the column and falls back to the NumPy schedule or the logged rate without it.
"""

import json
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from data_helpers import TINY_T5_BINDINGS, TINY_T5_GIN
from normgrowth_jax import gin_utils, optimizers, sinks, tracking, train
from normgrowth_jax.analysis import run_reader, trajectory

TINY = TINY_T5_GIN
BASE = [*TINY_T5_BINDINGS]


def _params():
  r = np.random.default_rng(0)
  return {
      "encoder": {
          "layers_0": {"w": jnp.asarray(r.normal(size=(4, 3)), jnp.float32)},
          "layers_1": {"w": jnp.asarray(r.normal(size=(3, 3)), jnp.float32)},
      }
  }


def _sgd_rows(schedule, steps: int, every: int = 1):
  """make_optimizer(optax.sgd, schedule) on all-ones gradients: ``(rows, -delta_t per update)``;
  the SGD update is delta_t = -lr_t * 1, so -delta_t is exactly the rate applied."""
  tx = optimizers.make_optimizer(
      optax.sgd, schedule, param_filter="all", groups="layers", track_every=every
  )
  params = _params()
  state, step = tx.init(params), jax.jit(tx.update)
  applied = []
  for _ in range(steps):
    updates, state = step(jax.tree.map(jnp.ones_like, params), state, params)
    applied.append(-np.asarray(updates["encoder"]["layers_0"]["w"])[0, 0])
    params = optax.apply_updates(params, updates)
  return tracking.read_trace(state), np.asarray(applied, np.float32)


@pytest.mark.parametrize("every", [1, 3])
def test_row_rate_is_the_rate_of_its_update(every):
  schedule = optimizers.rsqrt_schedule(warmup_steps=2)
  rows, applied = _sgd_rows(schedule, 9, every)
  assert rows["step"].tolist() == list(range(every, 10, every))
  assert rows["learning_rate"].dtype == np.float32
  # row of step s = update t = s - 1: bit for bit the rate that update applied
  np.testing.assert_array_equal(rows["learning_rate"], applied[rows["step"] - 1])
  np.testing.assert_allclose(
      rows["learning_rate"], 1 / np.sqrt(np.maximum(rows["step"] - 1, 2)), rtol=1e-6
  )


def test_constant_and_traced_rates():
  rows, applied = _sgd_rows(0.25, 3)
  np.testing.assert_array_equal(rows["learning_rate"], [0.25] * 3)
  np.testing.assert_array_equal(applied, [0.25] * 3)
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)

  def cell(lr):  # as grid.GridTrainer builds a cell: the rate is traced
    tx = optimizers.make_optimizer(optax.sgd, lr, param_filter="all", groups=None)
    return tx.update(grads, tx.init(params), params)[1]

  state = jax.vmap(cell)(jnp.array([0.5, 2.0]))
  np.testing.assert_array_equal(
      tracking.find_traces(state)[0][1].history["learning_rate"][:, 0], [0.5, 2.0]
  )


def test_without_learning_rate_nothing_changes():
  """No ``learning_rate``: the state and rows of before; with it: one more column, the rest
  bit for bit the same."""
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  kw = dict(param_filter="paper", groups="layers", history_size=4)
  plain = optax.chain(optax.sgd(0.1), tracking.track_norms(**kw))
  rated = optax.chain(optax.sgd(0.1), tracking.track_norms(**kw, learning_rate=0.1))
  s_plain, s_rated = plain.init(params), rated.init(params)
  hist = s_plain[1].history
  assert "learning_rate" not in hist and set(s_rated[1].history) == set(hist) | {"learning_rate"}
  for _ in range(2):
    s_plain = jax.jit(plain.update)(grads, s_plain, params)[1]
    s_rated = jax.jit(rated.update)(grads, s_rated, params)[1]
  a, b = tracking.read_trace(s_plain), tracking.read_trace(s_rated)
  assert set(b) == set(a) | {"learning_rate"}
  for k in a:
    assert a[k].tobytes() == b[k].tobytes(), k
  with pytest.raises(
      ValueError,
      match=r"groups \[encoder/layers_0, encoder/layers_1\] but "
      r"this hook is configured with .*\], learning_rate column; ",
  ):
    tracking.check_resumable(s_plain, s_rated)


def test_sinks_stream_the_rate(tmp_path):
  path = str(tmp_path / "norms.jsonl")
  sink = sinks.JsonlSink(path)
  schedule = optax.linear_schedule(1.0, 0.0, 8)
  opt = optax.chain(
      optax.sgd(schedule),
      tracking.track_norms(sink=sink, history_size=4, stream_every_rows=2, learning_rate=schedule),
  )
  params = _params()
  state = opt.init(params)
  for _ in range(5):
    _, state = opt.update(params, state, params)
  sink.close(state)  # the 5th row is the start of an unfinished block: written from the state
  rows = sinks.read_jsonl(path)
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
  assert [r["learning_rate"] for r in rows] == [1.0, 0.875, 0.75, 0.625, 0.5]


# ----------------------------------------------------------------------------- run_reader


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")


def test_read_learning_rate_prefers_the_recorded_column(tmp_path):
  steps = np.array([1.0, 2.0, 3.0, 4.0])
  _write_jsonl(tmp_path / "metrics.jsonl", [{"step": s, "learning_rate": 0.5} for s in (2, 4)])
  recorded = {"step": np.array([1, 2, 4]), "learning_rate": np.array([0.3, 0.2, 0.1])}
  got = run_reader.read_learning_rate(tmp_path, steps, recorded, rsqrt_warmup_steps=2)
  np.testing.assert_array_equal(got[[0, 1, 3]], [0.3, 0.2, 0.1])  # exact at recorded steps
  assert 0.1 < got[2] < 0.2
  # runs recorded before the column: the NumPy rsqrt schedule, else the logged rate
  old = {"step": np.array([1, 2, 4])}
  np.testing.assert_array_equal(
      run_reader.read_learning_rate(tmp_path, steps, old, rsqrt_warmup_steps=2),
      run_reader.rsqrt_learning_rate(steps, 2),
  )
  np.testing.assert_allclose(run_reader.read_learning_rate(tmp_path, steps, old), 0.5, rtol=1e-12)
  # rows not given: read from the run (norms.jsonl)
  _write_jsonl(
      tmp_path / "norms.jsonl",
      [
          {"step": 1, "param_norm": 1.0, "learning_rate": 0.7},
          {"step": 2, "param_norm": 1.0, "learning_rate": 0.6},
      ],
  )
  np.testing.assert_array_equal(
      run_reader.read_learning_rate(tmp_path, np.array([1.0, 2.0])), [0.7, 0.6]
  )


# ----------------------------------------------------------------------------- the trainer


def _train(model_dir, steps, *extra):
  gin.clear_config()
  try:
    gin_utils.parse_gin([TINY], [f"MODEL_DIR='{model_dir}'", *BASE, f"TRAIN_STEPS={steps}", *extra])
    return train.train(progress=False)
  finally:
    gin.clear_config()


@pytest.mark.slow  # two real train() compiles
@pytest.mark.usefixtures("data_cache")
def test_trainer_rows_carry_the_applied_rate_across_a_resume(tmp_path):
  """TRAIN_STEPS=3 (checkpoint 3 on disk), then resumed to 6: every row's rate is the one
  the metrics logged for that update, T5's rsqrt 1/sqrt(max(step - 1, 2)) of the schedule."""
  d = str(tmp_path / "run")
  assert _train(d, 3)["resumed_from"] is None
  assert _train(d, 6)["resumed_from"] == 3
  norms_rows = sinks.read_jsonl(os.path.join(d, "norms.jsonl"))
  metrics = {
      r["step"]: r["learning_rate"] for r in sinks.read_jsonl(os.path.join(d, "metrics.jsonl"))
  }
  assert [r["step"] for r in norms_rows] == list(range(1, 7))
  assert [r["learning_rate"] for r in norms_rows] == [metrics[s] for s in range(1, 7)]
  want = run_reader.rsqrt_learning_rate(np.arange(1, 7), 2)
  np.testing.assert_allclose([r["learning_rate"] for r in norms_rows], want, rtol=1e-6)
  trace = trajectory.read_checkpoint_trace(d)  # the trace in checkpoint 6 (restored from 3)
  np.testing.assert_array_equal(
      trace["learning_rate"], np.float32([r["learning_rate"] for r in norms_rows])
  )
  tr = run_reader.load(d, warmup_steps=2, exact_rsqrt=True)
  np.testing.assert_array_equal(tr.learning_rate, [r["learning_rate"] for r in norms_rows])


@pytest.mark.slow  # three real train() compiles
@pytest.mark.usefixtures("data_cache")
def test_a_run_recorded_without_the_column_resumes_with_record_learning_rate_false(tmp_path):
  """A run started before the column existed (its trace has none) is refused by default with
  the fix in the message, and resumes, with rows still without a rate, when told."""
  d = str(tmp_path / "old")
  off = "make_optimizer.record_learning_rate=False"
  assert _train(d, 3, off)["resumed_from"] is None
  config = os.path.join(d, "config.gin")  # as written before the parameter existed
  with open(config) as f:
    lines = [line for line in f if "record_learning_rate" not in line]
  with open(config, "w") as f:
    f.writelines(lines)
  with pytest.raises(ValueError, match="make_optimizer.record_learning_rate=False"):
    _train(d, 6)
  assert _train(d, 6, off)["resumed_from"] == 3
  rows = sinks.read_jsonl(os.path.join(d, "norms.jsonl"))
  assert [r["step"] for r in rows] == list(range(1, 7))
  assert all("learning_rate" not in r for r in rows)
