"""Bad input and damaged runs (issue 12): a clear error or a safe recovery, never a silent number.

``BAD_INPUTS`` is one table across the public API (saturation, hook, sinks, trainer, data,
analysis, figures, checkpoints): each row calls the real entry point in a work directory that
already holds a file, expects a narrow exception type and message, and then checks that nothing
on disk was lost or half-written (every file that was there is unchanged; anything new is
empty). The trainer rows go through ``console_main``: exit status 2 and one line on stderr.

The end-to-end cases (changed config on resume: refused, then allowed; a damaged newest
checkpoint: the run resumes from the intact one) share one tiny T5 run trained once per module.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import warnings

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_helpers import data_cache  # noqa: F401  (fixture)

from normgrowth_jax import (
    checkpoints,
    gin_utils,
    norms,
    run_checks,
    saturation as sat,
    sinks,
    tracking,
    train,
)

TINY = "gin_configs/local/t5_tiny_bbc_adafactor.gin"
SMALL = [
    "BATCH_SIZE=2",
    "TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}",
    "LOG_EVERY=1",
    "CHECKPOINT_PERIOD=2",
    "MIXTURE_OR_TASK_NAME='ng_span_corruption_botchan_bytes'",
]


@pytest.fixture(autouse=True)
def _fresh_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _snapshot(root):
  """{relative path: sha256 or '<dir>'} of everything under ``root``."""
  out = {}
  for dirpath, dirs, files in os.walk(root):
    for d in dirs:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = "<dir>"
    for f in files:
      path = os.path.join(dirpath, f)
      with open(path, "rb") as fh:
        out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _assert_nothing_lost(root, before):
  after = _snapshot(root)
  for rel, digest in before.items():
    assert after.get(rel) == digest, f"{rel} was changed or removed"
  empty = hashlib.sha256(b"").hexdigest()
  for rel in set(after) - set(before):
    assert after[rel] in ("<dir>", empty), f"{rel} was half-written"


# ----------------------------------------------------------------------------- the rows' inputs


def _mlp_params():
  k = jax.random.split(jax.random.PRNGKey(0), 2)
  return {
      "encoder": {
          "layers_0": {"w": jax.random.normal(k[0], (4, 8))},
          "layers_1": {"w": jax.random.normal(k[1], (8, 8))},
      }
  }


def _fn(p):
  x = jnp.ones((2, 3, 4))
  return (jax.nn.relu(x @ p["encoder"]["layers_0"]["w"]) @ p["encoder"]["layers_1"]["w"],)


def _hook_init(**kw):
  return lambda d: tracking.track_norms(**kw).init(_mlp_params())


def _damaged_jsonl(d):
  with open(os.path.join(d, "norms.jsonl"), "w") as f:
    f.write(
        '{"step": 1, "param_norm": 1.0}\n{"step": 2, "param_n\n{"step": 3, "param_norm": 3.0}\n'
    )


def _cli(*bindings):
  """``console_main`` with the tiny config; ``{d}`` in a binding is the work directory."""

  def run(d):
    return gin_utils.console_main(
        [
            f"--gin_file={TINY}",
            *[f"--gin.{b}" for b in SMALL],
            *[f"--gin.{b.replace('{d}', d)}" for b in bindings],
        ]
    )

  return run


def _cli_dir(make, *bindings):
  """(setup, call): the CLI on a MODEL_DIR ``<workdir>/run`` prepared by ``make``."""
  return (
      lambda d: make(os.path.join(d, "run")),
      _cli("MODEL_DIR={d}/run", "TRAIN_STEPS=2", *bindings),
  )


def _t5x_dir(path):
  os.makedirs(os.path.join(path, "checkpoint_1000"))
  with open(os.path.join(path, "checkpoint_1000", "checkpoint"), "wb") as f:
    f.write(b"t5x")
  with open(os.path.join(path, "config.gin"), "w") as f:
    f.write("utils.SaveCheckpointConfig.period = 1000\n")


def _foreign_dir(path):
  os.makedirs(os.path.join(path, "photos"))
  with open(os.path.join(path, "thesis.tex"), "w") as f:
    f.write("\\section{}\n")


def _a_file(path):
  with open(path, "w") as f:
    f.write("not a directory\n")


def _save_small_checkpoint(d):
  ckpt = checkpoints.Checkpointer(os.path.join(d, "ck"), save_every=1)
  ckpt.save(
      1,
      {"params": {"w": jnp.ones(3)}, "opt_state": (), "step": jnp.asarray(1)},
      data_position=1,
      seed=0,
  )
  ckpt.close()


def _restore_other_model(d):
  ckpt = checkpoints.Checkpointer(os.path.join(d, "ck"), save_every=1)
  return ckpt.restore({"params": {"w": jnp.ones(4)}, "opt_state": (), "step": jnp.asarray(0)})


def _figures_cli(*argv):
  def run(d):
    from normgrowth_jax.figures import __main__ as figures_main

    return figures_main.main([*argv, "--out", os.path.join(d, "figs")])

  return run


def _batch_iterator(**kw):
  def run(d):
    from normgrowth_jax.data import pipeline

    args = dict(
        task_name="ng_span_corruption_botchan_bytes",
        split="train",
        feature_lengths={"inputs": 16, "targets": 8},
        batch_size=2,
        seed=0,
    )
    args.update(kw)
    return next(pipeline.make_batch_iterator(**args))

  return run


def _fits(fn_name, *args, **kw):
  def run(d):
    from normgrowth_jax.analysis import fits

    return getattr(fits, fn_name)(*args, **kw)

  return run


# (id, call(workdir) or (setup(workdir), call(workdir)), exception type, message regex)
BAD_INPUTS = [
    # saturation: concrete rho / cs must be finite and > 0
    (
        "sat-rho-0",
        lambda d: sat.saturation_similarity(_fn, _mlp_params(), 0.0),
        ValueError,
        r"rho must be finite and > 0, got \[0.0\]",
    ),
    (
        "sat-rho-negative",
        lambda d: sat.saturation_similarity(_fn, _mlp_params(), -5.0),
        ValueError,
        r"rho must be finite and > 0, got \[-5.0\]",
    ),
    (
        "sat-rho-nan",
        lambda d: sat.saturation_similarity(_fn, _mlp_params(), float("nan")),
        ValueError,
        r"rho must be finite and > 0, got \[nan\]",
    ),
    (
        "sat-rho-inf",
        lambda d: sat.saturation_similarity(_fn, _mlp_params(), np.inf),
        ValueError,
        r"rho must be finite and > 0, got \[inf\]",
    ),
    (
        "sat-rho-string",
        lambda d: sat.saturation_similarity(_fn, _mlp_params(), "big"),
        TypeError,
        r"rho must be a real number",
    ),
    (
        "sweep-rho-0",
        lambda d: sat.rho_sweep(_fn, _mlp_params(), jnp.array([10.0, 0.0])),
        ValueError,
        r"rho_sweep: rhos must be finite and > 0, got \[0.0\]",
    ),
    (
        "sweep-empty",
        lambda d: sat.rho_sweep(_fn, _mlp_params(), jnp.zeros((0,))),
        ValueError,
        r"rhos needs at least 1 value",
    ),
    (
        "sweep-2d",
        lambda d: sat.rho_sweep(_fn, _mlp_params(), jnp.ones((2, 2))),
        ValueError,
        r"rhos must be 1-D",
    ),
    (
        "sweep-batch-0",
        lambda d: sat.rho_sweep(_fn, _mlp_params(), jnp.array([1.0]), batch_size=0),
        ValueError,
        r"batch_size must be None or an int >= 1",
    ),
    (
        "curve-c-negative",
        lambda d: sat.homogeneity_curve(_fn, _fn, _mlp_params(), jnp.array([-1.0, 1.0])),
        ValueError,
        r"homogeneity_curve: cs must be finite and > 0, got \[-1.0\]",
    ),
    (
        "degree-one-c",
        lambda d: sat.homogeneity_degree(_fn, _mlp_params(), jnp.array([2.0, 2.0])),
        ValueError,
        r"at least 2 distinct values",
    ),
    (
        "histogram-bins-0",
        lambda d: sat.attention_histogram(jnp.ones((2, 2)), bins=0),
        ValueError,
        r"bins must be >= 1",
    ),
    # the hook: a selection that selects nothing, counts
    (
        "hook-filter-nothing",
        _hook_init(param_filter=lambda p, x: False),
        norms.EmptySelectionError,
        r"param_filter .* matches none of the 2 parameters.*" r"'encoder/layers_0/w'",
    ),
    (
        "hook-paper-on-decoder",
        lambda d: tracking.track_norms(param_filter="paper").init({"decoder": {"w": jnp.ones(2)}}),
        norms.EmptySelectionError,
        r"'paper' matches none.*'decoder/w'",
    ),
    (
        "hook-group-regex-nothing",
        _hook_init(groups={"enc": "^nomatch"}),
        norms.EmptySelectionError,
        r"group 'enc': regex '\^nomatch' matches none.*'encoder/layers_1/w'",
    ),
    (
        "hook-group-fn-nothing",
        _hook_init(groups=lambda p, x: None),
        norms.EmptySelectionError,
        r"put none of the 2 filtered parameters in a group",
    ),
    (
        "hook-group-regex-invalid",
        _hook_init(groups={"enc": "layers_("}),
        ValueError,
        r"group 'enc' has an invalid regex 'layers_\('",
    ),
    (
        "hook-groups-empty-mapping",
        _hook_init(groups={}),
        ValueError,
        r"mapping \{name: regex\} is empty",
    ),
    (
        "hook-filter-unknown",
        _hook_init(param_filter="encoder"),
        ValueError,
        r"Unknown param_filter 'encoder'",
    ),
    ("hook-every-0", _hook_init(every=0), ValueError, r"every \(0\) .* must be >= 1"),
    ("hook-history-0", _hook_init(history_size=0), ValueError, r"history_size \(0\)"),
    (
        "hook-stream-rows",
        _hook_init(history_size=8, stream_every_rows=3),
        ValueError,
        r"stream_every_rows \(3\) must be >= 1 and divide history_size \(8\)",
    ),
    ("hook-anchor-0", _hook_init(anchor_every=0), ValueError, r"anchor_every must be None or >= 1"),
    (
        "step-row-filter-nothing",
        lambda d: tracking.step_row(_mlp_params(), _mlp_params(), param_filter=lambda p, x: False),
        norms.EmptySelectionError,
        r"step_row: param_filter",
    ),
    # sinks: a damaged (not torn) JSONL file is not rewritten without its later rows
    (
        "sink-jsonl-damaged-middle",
        (_damaged_jsonl, lambda d: sinks.JsonlSink(os.path.join(d, "norms.jsonl"))),
        ValueError,
        r"line 2 of 3 is not a JSON row .* left unchanged",
    ),
    (
        "sink-tensorboard-and-jsonl-damaged",
        (
            _damaged_jsonl,
            lambda d: sinks.MultiSink(
                sinks.TensorBoardSink(os.path.join(d, "tb")),
                sinks.JsonlSink(os.path.join(d, "norms.jsonl")),
            ),
        ),
        ValueError,
        r"norms.jsonl: line 2 of 3",
    ),
    # checkpoints
    (
        "checkpointer-period-0",
        lambda d: checkpoints.Checkpointer(os.path.join(d, "ck"), save_every=0),
        ValueError,
        r"save_every must be >= 1",
    ),
    (
        "checkpoint-other-model",
        (_save_small_checkpoint, _restore_other_model),
        checkpoints.CheckpointMismatchError,
        r"differs: w checkpoint \[3\]",
    ),
    # the trainer's command line: status 2, one line naming the problem and the fix
    (
        "train-steps-negative",
        _cli("MODEL_DIR={d}/never", "TRAIN_STEPS=-3"),
        SystemExit,
        r"TRAIN_STEPS=-3 must be >= 0; set --gin.TRAIN_STEPS",
    ),
    (
        "train-steps-float",
        _cli("MODEL_DIR={d}/never", "TRAIN_STEPS=2.5"),
        SystemExit,
        r"TRAIN_STEPS=2.5 must be an integer >= 0",
    ),
    (
        "train-steps-string",
        _cli("MODEL_DIR={d}/never", "TRAIN_STEPS=many"),
        SystemExit,
        r"TRAIN_STEPS='many' must be an integer >= 0",
    ),
    (
        "batch-size-0",
        _cli("MODEL_DIR={d}/never", "TRAIN_STEPS=2", "BATCH_SIZE=0"),
        SystemExit,
        r"BATCH_SIZE=0 must be >= 1; set --gin.BATCH_SIZE",
    ),
    (
        "feature-length-0",
        _cli(
            "MODEL_DIR={d}/never",
            "TRAIN_STEPS=2",
            "TASK_FEATURE_LENGTHS={'inputs': 0, 'targets': 8}",
        ),
        SystemExit,
        r"TASK_FEATURE_LENGTHS\['inputs'\]=0 must be >= 1",
    ),
    (
        "feature-name-typo",
        _cli(
            "MODEL_DIR={d}/never",
            "TRAIN_STEPS=2",
            "TASK_FEATURE_LENGTHS={'input': 16, 'targets': 8}",
        ),
        SystemExit,
        r"unknown feature 'input'",
    ),
    (
        "checkpoint-period-0",
        _cli("MODEL_DIR={d}/never", "TRAIN_STEPS=2", "CHECKPOINT_PERIOD=0"),
        SystemExit,
        r"CHECKPOINT_PERIOD \(train.save_every\)=0 must be >= 1",
    ),
    (
        "track-every-0",
        _cli("MODEL_DIR={d}/never", "TRAIN_STEPS=2", "TRACK_EVERY=0"),
        SystemExit,
        r"TRACK_EVERY \(train.track_every\)=0 must be >= 1",
    ),
    (
        "task-unknown",
        _cli(
            "MODEL_DIR={d}/never",
            "TRAIN_STEPS=2",
            "MIXTURE_OR_TASK_NAME=ng_span_corruption_botchen_bytes",
        ),
        SystemExit,
        r"'ng_span_corruption_botchen_bytes' is not a registered task or mixture; "
        r"did you mean ng_span_corruption_botchan_bytes",
    ),
    (
        "binding-misspelt",
        _cli("MODEL_DIR={d}/never", "train.bach_size=3"),
        SystemExit,
        r"Did you mean: batch_size",
    ),
    (
        "model-dir-t5x",
        _cli_dir(_t5x_dir),
        SystemExit,
        r"is a T5X model directory \(it holds checkpoint_1000\)",
    ),
    (
        "model-dir-foreign",
        _cli_dir(_foreign_dir),
        SystemExit,
        r"is not a run of this trainer: it holds photos, thesis.tex",
    ),
    ("model-dir-is-file", _cli_dir(_a_file), SystemExit, r"is a file, not a directory"),
    # data
    ("data-batch-0", _batch_iterator(batch_size=0), ValueError, r"Need batch_size >= 1"),
    (
        "data-no-inputs-length",
        _batch_iterator(feature_lengths={"targets": 8}),
        ValueError,
        r"span_corruption needs sequence_length=\{'inputs'",
    ),
    (
        "data-corpus-unknown",
        lambda d: __import__("normgrowth_jax.data.corpora", fromlist=["x"]).prepare("nocorpus", d),
        ValueError,
        r"Unknown corpus 'nocorpus'; built-in corpora",
    ),
    # analysis
    (
        "fit-one-point",
        _fits("fit_sqrt", [1.0], [2.0]),
        ValueError,
        r"at least 3 finite points.*r\^2 = 1",
    ),
    ("fit-lengths", _fits("fit_sqrt", [1.0, 2.0, 3.0], [2.0, 3.0]), ValueError, r"same length"),
    (
        "fit-law-unknown",
        _fits("fit_law", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "cubic"),
        ValueError,
        r"Unknown law 'cubic'",
    ),
    (
        "trajectory-missing",
        lambda d: __import__("normgrowth_jax.analysis.trajectory", fromlist=["x"]).read_trajectory(
            os.path.join(d, "nothing")
        ),
        FileNotFoundError,
        r"No trajectory found",
    ),
    # figures (the CLI's own checks)
    ("figures-unknown-figure", _figures_cli("fig9"), SystemExit, r"unknown figure\(s\) fig9"),
    ("figures-unknown-profile", _figures_cli("fig4", "--profile", "huge"), SystemExit, r"huge"),
]


@pytest.mark.parametrize(
    "call, exc, pattern", [r[1:] for r in BAD_INPUTS], ids=[r[0] for r in BAD_INPUTS]
)
def test_bad_input_is_a_clear_error_and_nothing_on_disk_is_lost(
    call, exc, pattern, tmp_path, capsys, data_cache
):  # noqa: F811
  (tmp_path / "keep.txt").write_text("user data\n")
  if isinstance(call, tuple):
    setup, call = call
    setup(str(tmp_path))
  before = _snapshot(tmp_path)
  with pytest.raises(exc) as err:
    call(str(tmp_path))
  if exc is SystemExit:
    assert err.value.code == 2
    stderr = capsys.readouterr().err.strip()
    assert re.search(pattern, stderr), stderr
    assert "Traceback" not in stderr
    if "normgrowth-train" in stderr:
      assert len(stderr.splitlines()) == 1 or "Did you mean" in stderr, stderr
  else:
    assert re.search(pattern, str(err.value), re.S), str(err.value)
  _assert_nothing_lost(tmp_path, before)
  assert not (tmp_path / "never").exists()  # a refused trainer creates no MODEL_DIR


def test_debug_flag_shows_the_traceback(tmp_path):
  with pytest.raises(run_checks.ConfigError, match="TRAIN_STEPS=-3"):
    gin_utils.console_main(
        [f"--gin_file={TINY}", "--debug", f"--gin.MODEL_DIR={tmp_path}/r", "--gin.TRAIN_STEPS=-3"]
    )
  assert not (tmp_path / "r").exists()


def test_traced_rho_gives_nan_not_a_plausible_cosine():
  params = _mlp_params()
  f = jax.jit(lambda r: sat.saturation_similarity(_fn, params, r))
  assert np.isnan(np.asarray(f(0.0))).all() and np.isnan(np.asarray(f(-5.0))).all()
  assert np.isnan(np.asarray(f(jnp.inf))).all()
  np.testing.assert_allclose(f(1000.0), 1.0, atol=1e-6)  # biasless ReLU: saturated already
  swept = np.asarray(jax.jit(lambda r: sat.rho_sweep(_fn, params, r))(jnp.array([0.0, 10.0])))
  assert np.isnan(swept[0]).all() and np.allclose(swept[1], 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- end to end


def _train(model_dir, *bindings):
  gin_utils.parse_gin([TINY], [f"MODEL_DIR='{model_dir}'", *SMALL, *bindings])
  try:
    return train.train(progress=False)
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_cache):  # noqa: F811
  """A tiny T5 run of 4 steps with checkpoints at steps 2 and 4 (checksummed)."""
  model_dir = tmp_path_factory.mktemp("bad_input") / "run"
  gin.clear_config()
  _train(model_dir, "TRAIN_STEPS=4")
  return model_dir


def _copy(run, tmp_path):
  dest = tmp_path / "run"
  shutil.copytree(run, dest)
  return dest


def _rows(path, drop=("tokens_per_s",)):
  return [{k: v for k, v in r.items() if k not in drop} for r in sinks.read_jsonl(path)]


def test_resume_with_a_changed_config_is_refused_naming_the_bindings(trained_run, tmp_path, capsys):
  run = _copy(trained_run, tmp_path)
  before = _snapshot(run)
  with pytest.raises(
      run_checks.ConfigMismatchError,
      match=r"Differs: train.batch_size: 2 -> 4\. Fix: .*--allow_config_change",
  ):
    _train(run, "TRAIN_STEPS=6", "BATCH_SIZE=4")
  with pytest.raises(
      run_checks.ConfigMismatchError,
      match=r"make_optimizer.base: " r"@optimizers.adafactor_t5 -> @optimizers.adamw_paper",
  ):
    _train(run, "TRAIN_STEPS=6", "OPTIMIZER=@optimizers.adamw_paper")
  with pytest.raises(
      run_checks.ConfigMismatchError,
      match=r"train.split: 'train' -> 'validation'; train.task_name: "
      r"'ng_span_corruption_botchan_bytes' -> 'ng_span_corruption_bbc_bytes'",
  ):
    _train(
        run,
        "TRAIN_STEPS=6",
        "train.split='validation'",
        "MIXTURE_OR_TASK_NAME='ng_span_corruption_bbc_bytes'",
    )
  with pytest.raises(
      run_checks.ConfigMismatchError, match=r"LEARNING_RATE/rsqrt_schedule.warmup_steps: 1000 -> 10"
  ):
    _train(run, "TRAIN_STEPS=6", "WARMUP_STEPS=10")  # the schedule
  with pytest.raises(checkpoints.CheckpointMismatchError, match="seed 0, not 1"):
    _train(run, "TRAIN_STEPS=6", "SEED=1")  # the checkpoint's own check comes first
  with pytest.raises(SystemExit) as err:  # the command line: status 2, one line
    gin_utils.console_main(
        [
            f"--gin_file={TINY}",
            *[f"--gin.{b}" for b in SMALL],
            f"--gin.MODEL_DIR={run}",
            "--gin.TRAIN_STEPS=6",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
        ]
    )
  stderr = capsys.readouterr().err.strip()
  assert err.value.code == 2 and len(stderr.splitlines()) == 1
  assert "train.feature_lengths: {'inputs': 16, 'targets': 8} -> {'inputs': 32" in stderr
  _assert_nothing_lost(run, before)
  assert not os.path.exists(run / run_checks.RESUME_LOG)


def test_a_deliberate_config_change_resumes_and_is_recorded(trained_run, tmp_path):
  run = _copy(trained_run, tmp_path)
  old_config = (run / "config.gin").read_text()
  summary = _train(run, "TRAIN_STEPS=5", "BATCH_SIZE=4", "train.allow_config_change=True")
  assert summary["resumed_from"] == 4 and summary["step"] == 5
  log = [json.loads(line) for line in (run / run_checks.RESUME_LOG).read_text().splitlines()]
  assert log[-1]["event"] == "config_change" and log[-1]["checkpoint"] == 4
  assert log[-1]["changes"] == [{"binding": "train.batch_size", "saved": "2", "now": "4"}]
  assert (run / "config.before_step4.gin").read_text() == old_config
  assert "BATCH_SIZE = 4" in (run / "config.gin").read_text()
  assert [r["step"] for r in sinks.read_jsonl(run / "norms.jsonl")] == [1, 2, 3, 4, 5]


def test_damaged_newest_checkpoint_resumes_from_the_intact_one(trained_run, tmp_path):
  run = _copy(trained_run, tmp_path)
  ref_norms, ref_metrics = _rows(run / "norms.jsonl"), _rows(run / "metrics.jsonl")
  assert [r["step"] for r in ref_norms] == [1, 2, 3, 4]
  data = max(
      glob.glob(str(run / "checkpoints/4/state/**/d/*"), recursive=True), key=os.path.getsize
  )
  damaged_bytes = bytearray(open(data, "rb").read())
  damaged_bytes[len(damaged_bytes) // 2] ^= 0xFF
  open(data, "wb").write(bytes(damaged_bytes))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    summary = _train(run, "TRAIN_STEPS=5")  # extending a run needs no flag
  said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
  assert any(
      re.search(
          r"step 4: file state/.* does not match its SHA-256 .*resuming from step "
          r"2, the newest intact checkpoint; norms.jsonl, metrics.jsonl and "
          r"TensorBoard are truncated to step 2",
          m,
      )
      for m in said
  ), said
  assert summary["resumed_from"] == 2 and summary["step"] == 5
  # the damaged checkpoint is kept aside, byte for byte; the run has intact ones again
  moved = run / "damaged_checkpoints" / "4"
  assert open(str(data).replace(str(run / "checkpoints" / "4"), str(moved)), "rb").read() == bytes(
      damaged_bytes
  )
  ckpt = checkpoints.Checkpointer(run / "checkpoints")
  assert ckpt.all_steps() == [4, 5] and ckpt.verify(4) is None and ckpt.verify(5) is None
  # steps 3 and 4 were recomputed from checkpoint 2: the same numbers, once each
  norms_rows, metric_rows = _rows(run / "norms.jsonl"), _rows(run / "metrics.jsonl")
  assert [r["step"] for r in norms_rows] == [1, 2, 3, 4, 5]
  assert norms_rows[:4] == ref_norms and metric_rows[:4] == ref_metrics
  log = [json.loads(line) for line in (run / run_checks.RESUME_LOG).read_text().splitlines()]
  assert log[-1]["event"] == "damaged_checkpoint" and log[-1]["resumed_from"] == 2
  assert [d["step"] for d in log[-1]["damaged"]] == [4]
