"""train(steps_per_call=k): the same run as one step per call, with fewer host round trips."""

import gin
import numpy as np
import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from normgrowth_jax import checkpoints, gin_utils, sinks, train
from normgrowth_jax.analysis import run_reader
from normgrowth_jax.figures import t5_runs

GIN = "gin_configs/local/t5_normgrowth_bbc.gin"
TOY = [
    "MIXTURE_OR_TASK_NAME='ng_span_corruption_botchan_bytes'",
    "BATCH_SIZE=4",
    "TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
    "WARMUP_STEPS=2",
    "TRAIN_STEPS=13",
    "CHECKPOINT_PERIOD=5",
    "CHECKPOINT_GRID=3",
    "LOG_EVERY=2",
    "network.T5Config.emb_dim=8",
    "network.T5Config.num_heads=2",
    "network.T5Config.head_dim=4",
    "network.T5Config.mlp_dim=16",
    "network.T5Config.num_encoder_layers=2",
    "network.T5Config.num_decoder_layers=1",
]


def _run(model_dir, k, *more):
  gin.clear_config()
  try:
    gin_utils.parse_gin(
        [GIN],
        [
            f"MODEL_DIR='{model_dir}'",
            *TOY,
            *more,
            f"train.train.steps_per_call={k}",
            "train.train.keep_checkpoints=5",
        ],
    )
    return train.train(progress=False)
  finally:
    gin.clear_config()


@pytest.mark.slow  # three compilations of the toy T5 (~1 min on 2 quiet cores)
def test_steps_per_call_reproduces_the_step_by_step_run(tmp_path, data_cache):  # noqa: F811
  one = _run(tmp_path / "k1", 1)
  # calls of 4 (steps 0-3, 5-8), single steps at 4, 9, 10-12; JSONL only
  four = _run(tmp_path / "k4", 4, "train.train.tensorboard=False")
  assert (tmp_path / "k1" / "tb").is_dir() and not (tmp_path / "k4" / "tb").exists()
  a = sinks.read_jsonl(tmp_path / "k1" / "norms.jsonl")
  b = sinks.read_jsonl(tmp_path / "k4" / "norms.jsonl")
  assert [r["step"] for r in b] == list(range(1, 14)) == [r["step"] for r in a]
  for ra, rb in zip(a, b):
    assert set(ra) == set(rb)
    for key in ra:
      if key != "nonfinite":
        np.testing.assert_allclose(rb[key], ra[key], rtol=2e-5, atol=1e-6, err_msg=key)
  ma = sinks.read_jsonl(tmp_path / "k1" / "metrics.jsonl")
  mb = sinks.read_jsonl(tmp_path / "k4" / "metrics.jsonl")
  assert [r["step"] for r in mb] == [2, 4, 6, 8, 10, 12, 13] == [r["step"] for r in ma]
  np.testing.assert_allclose([r["loss"] for r in mb], [r["loss"] for r in ma], rtol=2e-5)
  assert all(r["tokens_per_s"] > 0 for r in mb)
  steps = checkpoints.Checkpointer(str(tmp_path / "k4" / "checkpoints")).all_steps()
  assert sorted(steps) == [5, 10, 13]
  assert four["step"] == one["step"] == 13
  assert four["param_norm"] == pytest.approx(one["param_norm"], rel=2e-5)
  # Figs. 1/5 recompute the trainer's initialisation: its norm equals ||theta_0|| solved from
  # the first row (||theta_1||, ||delta_0||, cos(delta_0, theta_0))
  cfg = t5_runs.T5RunConfig(
      emb_dim=8,
      num_heads=2,
      head_dim=4,
      mlp_dim=16,
      num_encoder_layers=2,
      num_decoder_layers=1,
      batch_size=4,
      inputs_length=32,
      targets_length=8,
  )
  init = t5_runs.init_norms(cfg, 0)
  r = a[0]
  assert run_reader.theta0_norm(r["param_norm"], r["update_norm"], r["alignment"]) == pytest.approx(
      init["param_norm"], rel=1e-5
  )


def test_steps_per_call_must_be_positive(tmp_path, data_cache):  # noqa: F811
  with pytest.raises(ValueError, match="steps_per_call"):
    _run(tmp_path / "k0", 0)
