"""T5.1.1 train step at tiny/base/large: XLA compile time with scanned vs unrolled layers, XLA's
flops against the model's, and XLA's memory analysis.

The step is the trainer's (forward, backward, T5's Adafactor = `optimizers.adafactor_t5`, per
layer on scanned stacks as the trainer runs it (`optimizers.layerwise`), then `apply_updates`; with `track=True` the chain ends with
the norm hook, paper filter, per-layer groups), jitted with the state donated. Dropout is 0
(T5.1.1 pretraining), batches are random tokens of fixed lengths.

Model flops (`model_flops`): 6 x (matmul parameters x the tokens that pass through them), i.e.
encoder kernels x input tokens, decoder kernels and `logits_dense` x target tokens (embedding
lookups are gathers, not matmuls), plus attention: 3 x 4 x batch x heads*head_dim x q x k per
attention (q.k and weights.v, forward and backward), causal masks not discounted. XLA's own
count (`xla_flops`) also has the position-bias one-hot matmuls, norms and the optimizer; it
counts a while loop's body once, so for scanned layers it sees one layer per stack, not all of
them (`xla_flops` of the unrolled step is the comparable number).

No TensorFlow or seqio is imported (gin-config is, through `optimizers`), so a device check
can import the functions:

    from benchmarks.bench_t5_scale import build_train_step, measure_compile, ...
    step, state, batch = build_train_step("base", scan=True, dtype="bfloat16", batch=64,
                                          lengths=(512, 114), track=True)
    compiled, lower_s, compile_s = measure_compile(step, state, batch)
    times, state = time_steps(compiled, state, batch, 10)
    xla_flops(compiled), model_flops(config("base"), 64, (512, 114)), memory(compiled)

Usage:
    python benchmarks/bench_t5_scale.py [--sizes tiny base large] [--batch 2]
        [--lengths 64 16] [--dtype float32] [--steps 3] [--unrolled-large]
"""

import argparse
import os
import statistics
import sys
import time
from typing import Any, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from normgrowth_jax import optimizers, tracking  # noqa: E402
from normgrowth_jax.models import t5  # noqa: E402


def config(
    size: str,
    *,
    scan: bool = True,
    dtype: str = "float32",
    remat: str = "none",
    attention: str = "xla",
) -> t5.T5Config:
  """The T5.1.1 preset `size` (T5's vocabulary, 32128) with dropout 0 and these options."""
  return t5.get_config(
      size,
      dropout_rate=0.0,
      scan_layers=scan,
      dtype=dtype,
      remat_policy=remat,
      attention_impl=attention,
  )


def random_batch(vocab_size: int, batch: int, lengths: Tuple[int, int], seed: int = 0) -> dict:
  """T5X features of random tokens (no padding) for inputs/targets lengths."""
  rng = np.random.default_rng(seed)
  inputs, targets = lengths
  tgt = rng.integers(2, vocab_size, (batch, targets)).astype(np.int32)
  return {
      "encoder_input_tokens": rng.integers(2, vocab_size, (batch, inputs)).astype(np.int32),
      "decoder_target_tokens": tgt,
      "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1),
      "decoder_loss_weights": np.ones_like(tgt),
  }


def build_train_step(
    size: str,
    *,
    scan: bool = True,
    dtype: str = "float32",
    track: bool = False,
    batch: int = 2,
    lengths: Tuple[int, int] = (64, 16),
    remat: str = "none",
    attention: str = "xla",
    abstract: bool = False,
):
  """-> (jitted step(state, batch) -> (state, loss), state, batch arrays).

  `state` is {"params", "opt_state"}; it is donated, so feed each step's state to the next.
  With `abstract=True` the state is `jax.ShapeDtypeStruct`s (enough to lower and compile
  without allocating the parameters, e.g. for T5-large on a small host).
  """
  cfg = config(size, scan=scan, dtype=dtype, remat=remat, attention=attention)
  model = t5.Transformer(cfg)
  loss_fn = t5.make_loss_fn(model, enable_dropout=False)
  tx = optimizers.layerwise(optimizers.adafactor_t5(learning_rate=1e-3))  # per layer when scanned
  if track:
    tx = optax.chain(tx, tracking.track_norms(param_filter="paper", groups="layers"))
  arrays = jax.device_put(random_batch(cfg.vocab_size, batch, lengths))

  def init(rng):
    params = model.init(
        rng,
        arrays["encoder_input_tokens"],
        arrays["decoder_input_tokens"],
        arrays["decoder_target_tokens"],
    )["params"]
    return {"params": params, "opt_state": tx.init(params)}

  def step(state, features):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], features, jax.random.PRNGKey(0)
    )
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss

  rng = jax.random.PRNGKey(0)
  state = jax.eval_shape(init, rng) if abstract else jax.jit(init)(rng)
  return jax.jit(step, donate_argnums=0), state, arrays


def measure_compile(step, state, batch) -> Tuple[Any, float, float]:
  """-> (compiled, seconds to trace and lower, seconds for XLA to compile)."""
  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  return compiled, t1 - t0, time.perf_counter() - t1


def time_steps(compiled, state, batch, steps: int) -> Tuple[list, Any]:
  """Runs `steps` steps of a compiled step; -> (seconds per step, final state)."""
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, loss = compiled(state, batch)
    loss.block_until_ready()
    times.append(time.perf_counter() - t0)
  return times, state


def xla_flops(compiled) -> float:
  """XLA's flop count of a compiled computation (a while loop's body counted once)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0]
  return float(cost["flops"])


def param_count(cfg: t5.T5Config) -> dict:
  """Parameter counts: total, matmul kernels per encoder/decoder layer, logits."""
  hd = cfg.num_heads * cfg.head_dim
  mlp = (len(cfg.mlp_activations) + 1) * cfg.emb_dim * cfg.mlp_dim
  enc_layer = 4 * cfg.emb_dim * hd + mlp
  dec_layer = 8 * cfg.emb_dim * hd + mlp
  logits = 0 if cfg.logits_via_embedding else cfg.emb_dim * cfg.vocab_size
  norms = cfg.emb_dim * (2 * cfg.num_encoder_layers + 3 * cfg.num_decoder_layers + 2)
  total = (
      cfg.vocab_size * cfg.emb_dim
      + logits
      + 2 * cfg.num_heads * t5.NUM_BUCKETS
      + norms
      + cfg.num_encoder_layers * enc_layer
      + cfg.num_decoder_layers * dec_layer
  )
  return {"total": total, "encoder_layer": enc_layer, "decoder_layer": dec_layer, "logits": logits}


def model_flops(cfg: t5.T5Config, batch: int, lengths: Tuple[int, int]) -> dict:
  """Training flops of one step: {"matmul", "attention", "total", "6N_tokens"} (see module doc).

  Example:
      >>> f = model_flops(t5.get_config("tiny", vocab_size=32), 1, (4, 2))
      >>> f["total"] == f["matmul"] + f["attention"]
      True
  """
  inputs, targets = lengths
  n = param_count(cfg)
  matmul = (
      6
      * batch
      * (
          cfg.num_encoder_layers * n["encoder_layer"] * inputs
          + (cfg.num_decoder_layers * n["decoder_layer"] + n["logits"]) * targets
      )
  )
  hd = cfg.num_heads * cfg.head_dim
  pairs = cfg.num_encoder_layers * inputs * inputs + cfg.num_decoder_layers * (
      targets * targets + targets * inputs
  )
  attention = 3 * 4 * batch * hd * pairs
  return {
      "matmul": matmul,
      "attention": attention,
      "total": matmul + attention,
      "6N_tokens": 6 * n["total"] * batch * (inputs + targets),
  }


def memory(compiled) -> dict:
  """XLA's memory analysis of a compiled computation, in bytes."""
  stats = compiled.memory_analysis()
  names = (
      "argument_size_in_bytes",
      "output_size_in_bytes",
      "alias_size_in_bytes",
      "temp_size_in_bytes",
      "generated_code_size_in_bytes",
  )
  return {name.replace("_size_in_bytes", ""): int(getattr(stats, name)) for name in names}


def main(argv: Sequence[str] = None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", nargs="+", default=["tiny", "base", "large"])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--lengths", type=int, nargs=2, default=(64, 16))
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=3, help="timed steps (not for large)")
  parser.add_argument(
      "--unrolled-large",
      action="store_true",
      help="also compile unrolled T5-large (minutes on a 2-core CPU)",
  )
  args = parser.parse_args(argv)
  lengths = tuple(args.lengths)
  print(
      f"jax {jax.__version__} on {jax.devices()[0].device_kind}; batch {args.batch} x "
      f"({lengths[0]}+{lengths[1]}), {args.dtype}, Adafactor, no hook"
  )
  print(
      "size  layers   lower_s compile_s  s/step  xla_GFLOP model_GFLOP (6N_tokens) "
      "args_MB temp_MB code_MB"
  )
  for size in args.sizes:
    for scan in (False, True):
      if size == "large" and not scan and not args.unrolled_large:
        print(f"{size:5} unrolled  skipped (--unrolled-large to compile it)")
        continue
      large = size == "large"
      step, state, batch = build_train_step(
          size, scan=scan, dtype=args.dtype, batch=args.batch, lengths=lengths, abstract=large
      )
      compiled, lower_s, compile_s = measure_compile(step, state, batch)
      per_step = "-"
      if not large and args.steps > 0:
        times, state = time_steps(compiled, state, batch, args.steps + 1)
        per_step = f"{statistics.median(times[1:]):.3f}"
      flops = model_flops(config(size), args.batch, lengths)
      mem = memory(compiled)
      print(
          f"{size:5} {'scanned' if scan else 'unrolled':8} {lower_s:7.1f} "
          f"{compile_s:9.1f} {per_step:>7} {xla_flops(compiled) / 1e9:10.4g} "
          f"{flops['total'] / 1e9:11.4g} ({flops['6N_tokens'] / 1e9:9.4g}) "
          f"{mem['argument'] / 1e6:7.0f} {mem['temp'] / 1e6:7.0f} "
          f"{mem['generated_code'] / 1e6:7.2f}",
          flush=True,
      )
      del compiled, state


if __name__ == "__main__":
  main()
