"""benchmarks/bench_t5_scale.py's reusable functions at tiny size (CPU)."""

import math

import jax
import numpy as np

from benchmarks import bench_t5_scale as bench
from normgrowth_jax import tracking


def test_param_count_matches_the_parameter_tree():
  for size in ("tiny", "base"):
    cfg = bench.config(size)
    batch = bench.random_batch(cfg.vocab_size, 1, (4, 2))
    shapes = jax.eval_shape(
        bench.t5.Transformer(cfg).init,
        jax.random.PRNGKey(0),
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
    )
    n = sum(math.prod(v.shape) for v in jax.tree_util.tree_leaves(shapes))
    assert bench.param_count(cfg)["total"] == n
  assert 247e6 < bench.param_count(bench.config("base"))["total"] < 249e6  # T5.1.1 base


def test_tracked_scanned_step_compiles_runs_and_reports():
  step, state, batch = bench.build_train_step(
      "tiny", scan=True, track=True, batch=2, lengths=(8, 4)
  )
  compiled, lower_s, compile_s = bench.measure_compile(step, state, batch)
  assert lower_s > 0 and compile_s > 0
  times, state = bench.time_steps(compiled, state, batch, 2)
  assert len(times) == 2
  trace = tracking.read_trace(state["opt_state"])
  assert len(trace["step"]) == 2
  assert {"param_norm/encoder/layers_0", "param_norm/encoder/layers_1"} <= set(trace)
  assert bench.xla_flops(compiled) > 0
  mem = bench.memory(compiled)
  assert mem["argument"] > 0 and mem["temp"] > 0
  abstract = bench.build_train_step("tiny", scan=True, abstract=True)[1]
  assert isinstance(jax.tree_util.tree_leaves(abstract)[0], jax.ShapeDtypeStruct)


def test_model_flops_of_one_layer_by_hand():
  cfg = bench.t5.get_config("tiny", vocab_size=10, num_encoder_layers=1, num_decoder_layers=0)
  f = bench.model_flops(cfg, 2, (5, 3))
  hd, emb, mlp = 12, 8, 16
  assert f["matmul"] == 6 * 2 * ((4 * emb * hd + 3 * emb * mlp) * 5 + emb * 10 * 3)
  assert f["attention"] == 12 * 2 * hd * 25
  np.testing.assert_equal(f["total"], f["matmul"] + f["attention"])
