"""The embedded trainer: real text end to end, gin errors, non-finite stop, kill-and-resume."""

import os
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from normgrowth_jax import checkpoints, gin_utils, sinks, train
from normgrowth_jax.data import corpora

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "gin_configs/local/t5_tiny_bbc_adafactor.gin"
# A small real-text config: T5.1.1 tiny on botchan span corruption (the test-only data
# cache of data_helpers: one small novel, fetched once).
TASK = "MIXTURE_OR_TASK_NAME='ng_span_corruption_botchan_bytes'"
SMALL = [TASK, "BATCH_SIZE=8", "TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", "LOG_EVERY=1"]


@pytest.fixture(autouse=True)
def _fresh_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _run(tmp_path, *bindings, gin_file=TINY):
  gin_utils.parse_gin([gin_file], [f"MODEL_DIR='{tmp_path}'", *SMALL, *bindings])
  return train.train(progress=False)


def _steps(path):
  return [r["step"] for r in sinks.read_jsonl(path)]


@pytest.mark.slow  # measured 44 s CPU (40 steps of a real compile)
def test_tiny_t5_loss_falls_on_real_text(tmp_path, data_cache):  # noqa: F811
  summary = _run(tmp_path, "TRAIN_STEPS=40", "CHECKPOINT_PERIOD=20")
  rows = sinks.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(1, 41))
  loss = np.array([r["loss"] for r in rows])
  assert np.all(np.isfinite(loss))
  # Uniform over 384 ids is log(384) = 5.95; byte statistics are learned within 40 steps.
  assert loss[:5].mean() > 5.0
  assert loss[-5:].mean() < loss[:5].mean() - 0.5
  # The learning rate actually applied: rsqrt with WARMUP_STEPS = 1000 -> 1/sqrt(1000).
  np.testing.assert_allclose([r["learning_rate"] for r in rows], 1 / np.sqrt(1000), rtol=1e-6)
  assert all(r["tokens_per_s"] > 0 for r in rows)
  norms_rows = sinks.read_jsonl(tmp_path / "norms.jsonl")
  assert [r["step"] for r in norms_rows] == list(range(1, 41))
  assert {"param_norm/encoder/layers_0", "param_norm/encoder/layers_1"} <= set(norms_rows[-1])
  assert summary["step"] == 40 and summary["param_norm"] == pytest.approx(
      norms_rows[-1]["param_norm"], rel=1e-6
  )
  assert checkpoints.Checkpointer(tmp_path / "checkpoints").all_steps() == [20, 40]


def test_unknown_parameter_names_it_and_lists_valid_ones(tmp_path):
  with pytest.raises(gin_utils.GinConfigError) as err:
    gin_utils.parse_gin([TINY], ["train.bach_size=3"])
  msg = str(err.value)
  assert "bach_size" in msg and "Did you mean: batch_size" in msg
  assert "Valid parameters:" in msg and "train_steps" in msg


def test_unknown_configurable_suggests_close_names():
  with pytest.raises(gin_utils.GinConfigError) as err:
    gin_utils.parse_gin([TINY], ["make_optimzer.track_every=2"])
  msg = str(err.value)
  assert "make_optimzer" in msg and "Did you mean: make_optimizer" in msg


def test_missing_required_macro_and_missing_file(tmp_path):
  with pytest.raises(gin_utils.GinConfigError, match="not found"):
    gin_utils.parse_gin(["gin_configs/local/no_such.gin"], [])
  gin_utils.parse_gin([TINY], [])  # MODEL_DIR is required and unset
  with pytest.raises(gin_utils.GinConfigError) as err:
    gin_utils.run_from_gin()
  assert "MODEL_DIR" in str(err.value)


def test_cli_outside_the_repository_root_finds_configs_quietly(tmp_path):
  """Issue 17: from another directory, gin logged 'Path not found' twice per gin file and
  include before finding it under the repository root."""
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "normgrowth_jax.train",
          f"--gin_file={TINY}",
          "--gin.train.bach_size=3",
      ],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 2, proc.stderr
  # the files and their includes were parsed: the binding after them is what failed
  assert (
      "normgrowth-train: error: Configurable 'train' doesn't have a parameter named " "'bach_size'"
  ) in proc.stderr, proc.stderr
  assert "Path not found" not in proc.stderr


def test_missing_corpus_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("NORMGROWTH_DATA", str(tmp_path / "empty_cache"))
  with pytest.raises(corpora.CorpusNotPreparedError) as err:
    _run(
        tmp_path / "run",
        "TRAIN_STEPS=2",
        "MIXTURE_OR_TASK_NAME='ng_span_corruption_shakespeare_bytes'",
    )
  assert "prepare --corpus shakespeare" in str(err.value)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_cache):  # noqa: F811
  # lr 1e-3 for updates 0..3, then 1e30: the update from state 4 blows the parameters up.
  with pytest.raises(train.NonFiniteLossError) as err:
    _run(
        tmp_path,
        "TRAIN_STEPS=20",
        "CHECKPOINT_PERIOD=1",
        "OPTIMIZER=@optax.sgd",
        "LEARNING_RATE=@optax.piecewise_constant_schedule()",
        "optax.piecewise_constant_schedule.init_value=1e-3",
        "optax.piecewise_constant_schedule.boundaries_and_scales={4: 1e33}",
    )
  # Update 4 (lr 1e30) is finite but gives parameters ~1e29 whose loss is NaN: state 5's
  # loss is the one of metrics step 6, so the run stops there and never saves state 5.
  assert err.value.step == 6
  assert "step 6" in str(err.value) and "last good checkpoint is step 4" in str(err.value)
  assert checkpoints.Checkpointer(tmp_path / "checkpoints").latest_step() == 4
  metrics = sinks.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5]
  assert np.isfinite([r["loss"] for r in metrics]).all()
  assert metrics[-1]["learning_rate"] == pytest.approx(1e30, rel=1e-6)


def _cli(model_dir, steps, period):
  return [
      sys.executable,
      "-m",
      "normgrowth_jax.train",
      f"--gin_file={TINY}",
      f"--gin.MODEL_DIR={model_dir}",
      f"--gin.TRAIN_STEPS={steps}",
      f"--gin.CHECKPOINT_PERIOD={period}",
      f"--gin.{TASK}",
      "--gin.BATCH_SIZE=8",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
      "--gin.LOG_EVERY=1",
  ]


def _final_params(model_dir, step):
  import orbax.checkpoint as ocp

  mngr = ocp.CheckpointManager(os.path.join(model_dir, "checkpoints"), item_names=("state",))
  assert mngr.latest_step() == step
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return state["params"], state["opt_state"]


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path, data_cache):  # noqa: F811
  steps, period = 120, 10
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  subprocess.run(_cli(ref, steps, period), cwd=REPO, env=env, check=True, capture_output=True)

  proc = subprocess.Popen(
      _cli(cut, steps, period),
      cwd=REPO,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  ckpt_dir = cut / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    done = [d for d in os.listdir(ckpt_dir)] if ckpt_dir.exists() else []
    if any(d.isdigit() and int(d) >= 2 * period for d in done):
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed; raise `steps`"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = checkpoints.Checkpointer(ckpt_dir).latest_step()
  assert killed_at is not None and killed_at < steps
  subprocess.run(_cli(cut, steps, period), cwd=REPO, env=env, check=True, capture_output=True)

  a, b = _final_params(ref, steps), _final_params(cut, steps)
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (path, x), (_, y) in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
  for name in ("norms.jsonl", "metrics.jsonl"):
    rows_a, rows_b = sinks.read_jsonl(ref / name), sinks.read_jsonl(cut / name)
    assert [r["step"] for r in rows_b] == list(range(1, steps + 1)), name
    keys = [k for k in rows_a[0] if k != "tokens_per_s"]
    assert [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]
