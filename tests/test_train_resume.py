"""The trainer through ``train.train()`` on real text: resume bit for bit, refusals, periods.

Tiny T5.1.1 on botchan span corruption (the test-only data cache), a few steps. Each
``train()`` call compiles the real train step, so every test keeps its number of calls small.
"""

import json
import os
import shutil
import subprocess
import sys

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from normgrowth_jax import checkpoints, gin_utils, sinks, train
from normgrowth_jax.analysis import checkpoints as ac
from normgrowth_jax.analysis import trajectory
from normgrowth_jax.data import pipeline
from normgrowth_jax.models import t5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "gin_configs/local/t5_tiny_bbc_adafactor.gin"
BASE = [
    "MIXTURE_OR_TASK_NAME='ng_span_corruption_botchan_bytes'",
    "BATCH_SIZE=4",
    "TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}",
    "WARMUP_STEPS=2",
    "CHECKPOINT_PERIOD=3",
    "LOG_EVERY=1",
]
SENTINEL = -12345.0


def _run(model_dir, steps, *bindings):
  gin.clear_config()
  try:
    gin_utils.parse_gin(
        [TINY], [f"MODEL_DIR='{model_dir}'", *BASE, f"TRAIN_STEPS={steps}", *bindings]
    )
    return train.train(progress=False)
  finally:
    gin.clear_config()


def _checkpoint(model_dir, step):
  """The saved training state (params, opt_state, step) of ``step`` as NumPy leaves."""
  mngr = ocp.CheckpointManager(os.path.join(model_dir, "checkpoints"), item_names=("state",))
  try:
    assert step in mngr.all_steps(), (step, mngr.all_steps())
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  finally:
    mngr.close()
  return jax.tree.map(np.asarray, state)


def _assert_bit_identical(a, b):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  assert len(la) > 10
  for (path, x), (_, y) in zip(la, lb):
    assert x.dtype == y.dtype and x.shape == y.shape, path
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


def _jsonl(model_dir, name):
  return [
      {k: v for k, v in r.items() if k != "tokens_per_s"}
      for r in sinks.read_jsonl(os.path.join(model_dir, name))
  ]


def _tb(model_dir, stream):
  out = trajectory.read_tensorboard(
      os.path.join(model_dir, "tb"), prefix=f"{stream}/", subdir=stream
  )
  out.pop("tokens_per_s", None)
  return out


def _assert_same_outputs(ref, other, steps):
  """Same final state, JSONL streams and TensorBoard scalars; one row per step 1..steps."""
  _assert_bit_identical(_checkpoint(ref, steps), _checkpoint(other, steps))
  for name in ("norms.jsonl", "metrics.jsonl"):
    rows = _jsonl(other, name)
    assert [r["step"] for r in rows] == list(range(1, steps + 1)), name
    assert rows == _jsonl(ref, name), name
  for stream in ("train", "norms"):
    a, b = _tb(ref, stream), _tb(other, stream)
    assert list(b["step"]) == list(range(1, steps + 1)), stream
    assert sorted(a) == sorted(b), stream
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"{stream}/{k}")


def _write_stale_tail(model_dir, steps):
  """What a run killed after logging ``steps`` but before their checkpoint leaves behind.

  The rows carry sentinel values (and a step past the resumed run's end), so rows that a
  resume fails to drop are visible in every reader.
  """
  for name, col in (("norms.jsonl", "param_norm"), ("metrics.jsonl", "loss")):
    path = os.path.join(model_dir, name)
    rows = [r for r in sinks.read_jsonl(path) if r["step"] < steps[0]]
    template = dict(rows[-1])
    with open(path, "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
      for s in steps:
        f.write(json.dumps({**template, "step": s, col: SENTINEL}) + "\n")
  from tensorboardX import SummaryWriter

  for stream, col in (("train", "loss"), ("norms", "param_norm")):
    w = SummaryWriter(os.path.join(model_dir, "tb", stream))
    for s in steps:
      w.add_scalar(f"{stream}/{col}", SENTINEL, global_step=s)
    w.close()


def test_resume_after_a_kill_equals_the_straight_run(tmp_path, data_cache):  # noqa: F811
  """Killed after logging steps 4..7 with the newest checkpoint at 3, rerun to 6 == straight 6.

  Not marked slow although it compiles the train step twice (about a minute of CPU on the
  shared 2-core machine): it is the resume check that ``make test-fast`` runs.
  """
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  _run(ref, 6)
  assert checkpoints.Checkpointer(ref / "checkpoints").all_steps() == [3, 6]
  # The interrupted run: its checkpoint 6 was never written, but its logs went further
  # (it was heading for more steps) and hold other values.
  shutil.copytree(ref, cut)
  shutil.rmtree(cut / "checkpoints" / "6")
  _write_stale_tail(cut, [4, 5, 6, 7])
  assert max(_tb(cut, "train")["step"]) == 7  # the stale rows are there to be dropped

  summary = _run(cut, 6)
  assert summary["resumed_from"] == 3 and summary["step"] == 6
  _assert_same_outputs(ref, cut, 6)


@pytest.mark.slow
def test_stop_then_continue_equals_the_straight_run(tmp_path, data_cache):  # noqa: F811
  """TRAIN_STEPS=3, then the same command with TRAIN_STEPS=6 == a straight TRAIN_STEPS=6."""
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  _run(ref, 6)
  first = _run(cut, 3)
  assert first["resumed_from"] is None and first["step"] == 3
  second = _run(cut, 6)
  assert second["resumed_from"] == 3 and second["step"] == 6
  assert second["param_norm"] == _run(cut, 6)["param_norm"]  # a finished run: nothing to do
  _assert_same_outputs(ref, cut, 6)


def _paper_sq_norm(tree, prefix=""):
  """Sum of squares over the paper's parameters (encoder, non-scalar, no embeddings)."""
  total = 0.0
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    segs = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    name = "/".join(segs)
    if (
        "encoder" in segs
        and np.ndim(x) >= 1
        and not any("embed" in s for s in segs)
        and name.startswith(prefix)
    ):
      total += float(np.sum(np.asarray(x, np.float64) ** 2))
  return total


def _heldout_loss(params, n_batches):
  """Per-token loss (with z-loss) of the first ``n_batches`` validation batches, by hand."""
  gin.clear_config()
  gin_utils.parse_gin([TINY], [])
  model = gin.query_parameter("train.train.model").scoped_configurable_fn()
  gin.clear_config()
  loss_fn = jax.jit(t5.make_loss_fn(model, z_loss=1e-4, enable_dropout=False))
  data = pipeline.make_batch_iterator(
      "ng_span_corruption_botchan_bytes", "validation", {"inputs": 16, "targets": 8}, 4, seed=0
  )
  total = tokens = 0.0
  for _, batch in zip(range(n_batches), data):
    _, aux = loss_fn(params, batch, jax.random.PRNGKey(0))
    total, tokens = total + float(aux["loss"]), tokens + float(aux["weight_sum"])
  return total / tokens, tokens


@pytest.mark.slow  # measured > 30 s (one real train() compile or more)
def test_periods_and_validation_loss_record_the_right_steps(tmp_path, data_cache):  # noqa: F811
  """TRACK_EVERY=2, LOG_EVERY=4, validation every 3 steps: rows only at their periods (and
  the last step), each holding that step's values, checked against the saved parameters."""
  _run(
      tmp_path,
      6,
      "TRACK_EVERY=2",
      "LOG_EVERY=4",
      "CHECKPOINT_PERIOD=1",
      "train.keep_checkpoints=10",
      "train.evaluator=@train.validation_loss",
      "train.eval_every=3",
      "train.validation_loss.num_batches=2",
  )
  norms_rows = sinks.read_jsonl(tmp_path / "norms.jsonl")
  metrics_rows = sinks.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in norms_rows] == [2, 4, 6]
  assert [r["step"] for r in metrics_rows] == [4, 6]
  assert list(_tb(tmp_path, "norms")["step"]) == [2, 4, 6]
  assert list(_tb(tmp_path, "train")["step"]) == [4, 6]
  # Row s is update s (state s-1 -> s): rsqrt schedule 1/sqrt(max(s - 1, WARMUP_STEPS)).
  np.testing.assert_allclose(
      [r["learning_rate"] for r in metrics_rows], [1 / np.sqrt(3), 1 / np.sqrt(5)], rtol=1e-6
  )
  params = {s: _checkpoint(tmp_path, s)["params"] for s in range(1, 7)}
  for row in norms_rows:
    s = row["step"]
    np.testing.assert_allclose(row["param_norm"], np.sqrt(_paper_sq_norm(params[s])), rtol=2e-6)
    np.testing.assert_allclose(
        row["param_norm/encoder/layers_1"],
        np.sqrt(_paper_sq_norm(params[s], "encoder/layers_1/")),
        rtol=2e-6,
    )
    delta = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, params[s], params[s - 1])
    np.testing.assert_allclose(row["update_norm"], np.sqrt(_paper_sq_norm(delta)), rtol=1e-4)
  # The validation loss: at the initialisation, every 3 steps and at the end, each of the
  # parameters of its step, token-weighted over the same two held-out batches.
  eval_rows = sinks.read_jsonl(tmp_path / "eval.jsonl")
  assert [r["step"] for r in eval_rows] == [0, 3, 6]
  assert list(_tb(tmp_path, "eval")["step"]) == [0, 3, 6]
  assert eval_rows[0]["loss"] > 5.0  # near log(384) at the initialisation
  for row in eval_rows[1:]:
    loss, tokens = _heldout_loss(params[row["step"]], 2)
    assert row["tokens"] == tokens
    np.testing.assert_allclose(row["loss"], loss, rtol=1e-5)
  assert eval_rows[-1]["loss"] < eval_rows[0]["loss"]


# ------------------------------------------------------------------------------ refusals


def _snapshot(model_dir):
  files = {}
  for root, _, names in os.walk(model_dir):
    for n in names:
      p = os.path.join(root, n)
      if "tfevents" not in n:
        files[os.path.relpath(p, model_dir)] = open(p, "rb").read()
  return files


@pytest.mark.slow  # measured > 30 s (one real train() compile or more)
def test_a_checkpoint_refuses_another_seed_or_model_even_when_config_changes_are_allowed(
    tmp_path, data_cache
):  # noqa: F811
  """``--allow_config_change`` lets a binding change, never a restore into another model or a
  continuation under another seed: the checkpoint itself refuses, and the run is untouched."""
  _run(tmp_path, 1)
  before = _snapshot(tmp_path)
  with pytest.raises(checkpoints.CheckpointMismatchError, match="seed 0, not 1"):
    _run(tmp_path, 2, "SEED=1", "train.allow_config_change=True")
  with pytest.raises(checkpoints.CheckpointMismatchError) as err:
    _run(tmp_path, 2, "network.T5Config.mlp_dim=24", "train.allow_config_change=True")
  msg = str(err.value)
  assert "different model" in msg
  assert "differs: encoder/layers_0/mlp/wi_0/kernel checkpoint [8, 16]" in msg
  assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ command line


def _cli(*args, env=None):
  cmd = [sys.executable, "-m", "normgrowth_jax.train", *args]
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _cli_run_args(model_dir, steps, *bindings):
  return [
      f"--gin_file={TINY}",
      f"--gin.MODEL_DIR={model_dir}",
      f"--gin.TRAIN_STEPS={steps}",
      *[f"--gin.{b}" for b in BASE],
      *[f"--gin.{b}" for b in bindings],
  ]


@pytest.mark.parametrize(
    "args, expected",
    [
        ([f"--gin_file={TINY}", "--gin.TRAIN_STEPS"], "expected --gin.KEY=VALUE"),
        (["--gin_file=gin_configs/local/no_such.gin"], "not found"),
        ([f"--gin_file={TINY}"], "add --gin.MODEL_DIR=VALUE"),  # a required macro is unset
        (["--gin_file=gin_configs/local/models/t5_1_1_tiny.gin"], "Required bindings for `train`"),
        ([f"--gin_file={TINY}", "--bogus"], "unrecognised argument"),
        ([], "at least one --gin_file"),
    ],
)
def test_command_line_configuration_errors_exit_2(args, expected):
  proc = _cli(*args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert expected in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # measured > 30 s (one real train() compile or more)
def test_command_line_runtime_errors_exit_1(tmp_path, data_cache):  # noqa: F811
  run = tmp_path / "origin_run"  # a name holding "gin": still a run error, not a config one
  _run(run, 1)
  proc = _cli(*_cli_run_args(run, 2, "network.T5Config.num_heads=2"), "--allow_config_change")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "different model" in proc.stderr and "Traceback" not in proc.stderr
  env = dict(os.environ, NORMGROWTH_DATA=str(tmp_path / "empty_cache"))
  proc = _cli(*_cli_run_args(tmp_path / "fresh", 2), env=env)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "prepare --corpus botchan" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------ devices

_MULTI_DEVICE = """
import collections, json, sys
import jax
from normgrowth_jax import gin_utils, sinks, train
calls = collections.Counter()
write = sinks.JsonlSink.write_rows
def counting(self, columns):
  if self.path.endswith("norms.jsonl"):
    for s in columns["step"]:
      calls[int(s)] += 1
  return write(self, columns)
sinks.JsonlSink.write_rows = counting
gin_utils.parse_gin([sys.argv[1]], sys.argv[2:])
train.train(progress=False)
print("RESULT", json.dumps({"devices": jax.local_device_count(), "calls": calls}))
"""


@pytest.mark.slow
@pytest.mark.cpu_only
def test_four_host_devices_follow_the_one_device_trajectory(tmp_path, data_cache):  # noqa: F811
  # A small learning rate (rsqrt at 1/sqrt(10000)): at BASE's 0.7 the float32 differences of
  # the sharded batch reduction (1e-7 at step 2) grow chaotically to 1e-3 by step 4.
  one, four = tmp_path / "one", tmp_path / "four"
  slow_lr = "WARMUP_STEPS=10000"
  _run(one, 6, slow_lr)
  env = dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=4",
      PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )
  proc = subprocess.run(
      [
          sys.executable,
          "-c",
          _MULTI_DEVICE,
          TINY,
          f"MODEL_DIR='{four}'",
          *BASE,
          "TRAIN_STEPS=6",
          slow_lr,
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT", 1)[1])
  assert result["devices"] == 4
  # The hook's row reaches the sink once per step, not once per device.
  assert result["calls"] == {str(s): 1 for s in range(1, 7)}
  for name in ("norms.jsonl", "metrics.jsonl"):
    a, b = _jsonl(one, name), _jsonl(four, name)
    assert [r["step"] for r in b] == list(range(1, 7)), name
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
      if k != "nonfinite":
        np.testing.assert_allclose(
            [r[k] for r in b], [r[k] for r in a], rtol=1e-4, atol=1e-5, err_msg=f"{name}: {k}"
        )
  # The 4-device checkpoint reads back on 1 device (the analysis reader; orbax's plain restore
  # refuses the other topology) and holds the same parameters.
  pa = ac.read_params(ac.list_checkpoints(str(one))[-1], "all")
  pb = ac.read_params(ac.list_checkpoints(str(four))[-1], "all")
  assert sorted(pa) == sorted(pb) and len(pa) > 10
  for k in pa:
    np.testing.assert_allclose(pb[k], pa[k], rtol=2e-4, atol=1e-6, err_msg=k)
