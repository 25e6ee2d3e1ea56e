"""Trainer throughput for "t5-mini" on CPU, with and without the norm hook, beside T5X's figure.

Config (fixed by the issue): T5.1.1 emb 256, 4 heads x 64, mlp 1024, 4+4 layers, vocab 384,
batch 16, inputs 256 / targets 64, float32, AdamW (the paper's defaults), dropout 0.
Measures the jitted ``train.make_train_step`` (forward, backward, optimizer, hook, and the
host read of the metrics the trainer does every step) on one fixed batch of random tokens, so
the data pipeline is excluded (it runs ahead with prefetch in the trainer). The two variants
are timed in alternation, step by step, so that drifting machine load hits both alike.
tokens/s counts token slots, T5X's convention: 16 x (256 + 64) = 5,120 per step.

Usage:
  python benchmarks/bench_trainer.py [--steps 30] [--batch 16]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from normgrowth_jax import optimizers, train  # noqa: E402
from normgrowth_jax.models import t5  # noqa: E402

T5X_S_PER_STEP = 2.35  # T5X's trainer, same config, a 2-core machine of this class
# (measured once with T5X in a scratch virtualenv; README's benchmark table)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--inputs", type=int, default=256)
  parser.add_argument("--targets", type=int, default=64)
  args = parser.parse_args()

  cfg = t5.get_config("mini", dropout_rate=0.0, dtype="float32")
  model = t5.Transformer(cfg)
  init_fn, loss_fn = train.encoder_decoder_loss(model)
  rng = np.random.default_rng(0)
  tgt = rng.integers(3, cfg.vocab_size, (args.batch, args.targets)).astype(np.int32)
  batch = {
      "encoder_input_tokens": rng.integers(3, cfg.vocab_size, (args.batch, args.inputs)).astype(
          np.int32
      ),
      "decoder_target_tokens": tgt,
      "decoder_input_tokens": np.concatenate(
          [np.zeros((args.batch, 1), np.int32), tgt[:, :-1]], axis=1
      ),
      "decoder_loss_weights": np.ones_like(tgt),
  }
  batch = jax.device_put(batch)
  params = jax.jit(init_fn)(jax.random.PRNGKey(0), batch)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  tokens = args.batch * (args.inputs + args.targets)

  variants = {
      "no hook": optax.inject_hyperparams(
          lambda learning_rate: optimizers.adamw_paper(learning_rate)
      )(learning_rate=1e-3),
      "with hook (paper filter, per-layer)": optimizers.make_optimizer(
          optimizers.adamw_paper, 1e-3
      ),
  }
  steps, states, times = {}, {}, {}
  for name, tx in variants.items():
    steps[name] = jax.jit(train.make_train_step(loss_fn, tx))
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    t0 = time.perf_counter()
    state, m = steps[name](state, batch, jax.random.PRNGKey(1))
    jax.device_get(m)
    print(f"{name}: compile + first step {time.perf_counter() - t0:.1f} s", flush=True)
    states[name], times[name] = state, []
  for _ in range(args.steps):
    for name in variants:
      t0 = time.perf_counter()
      states[name], m = steps[name](states[name], batch, jax.random.PRNGKey(1))
      jax.device_get(m)  # the trainer reads the metrics every step
      times[name].append(time.perf_counter() - t0)

  print(
      f"\nt5-mini: {n_params / 1e6:.2f}M params, batch {args.batch} x ({args.inputs} + "
      f"{args.targets}) = {tokens} tokens/step, float32, AdamW, {jax.devices()[0].platform}, "
      f"{os.cpu_count()} cores; median over {args.steps} steps after compile"
  )
  print(f"{'variant':40s} {'s/step':>8s} {'tokens/s':>10s} {'vs T5X':>8s}")
  print(
      f"{'T5X trainer (reference, measured once)':40s} {T5X_S_PER_STEP:8.3f} "
      f"{tokens / T5X_S_PER_STEP:10,.0f} {1.0:7.2f}x"
  )
  for name, ts in times.items():
    med = float(np.median(ts))
    print(f"{name:40s} {med:8.3f} {tokens / med:10,.0f} {T5X_S_PER_STEP / med:7.2f}x")
  base, hook = (float(np.median(t)) for t in times.values())
  print(f"hook overhead: {100 * (hook / base - 1):+.1f}% per step")


if __name__ == "__main__":
  main()
