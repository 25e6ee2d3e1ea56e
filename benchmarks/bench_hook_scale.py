"""The norm-tracking hook's cost at T5.1.1 sizes: step-time and compile-time ratios.

For each size (the embedded trainer's ``gin_configs/local/models/t5_1_1_<size>.gin``), builds
two jitted T5 train steps with T5's Adafactor (``optimizers.adafactor_t5``, rsqrt schedule):
untracked, and tracked with the hook as the trainer sets it up (``param_filter="paper"``,
``groups="layers"``, every step). params and the optimizer state are donated, as in training.
It prints the XLA compile time of each (lowering included) and their ratio, then runs the two
steps interleaved (untracked, tracked, untracked, ...: machine-load drifts hit both alike) and
prints the median step times and their ratio. Float32, batch 2 x (64 + 16) by default.

Targets (issue 21, on the 2-core CPU at base size): step ratio <= 1.03, compile ratio <= 1.2.
Base on a 2-core CPU takes a few seconds a step and tens of seconds to compile: keep --steps
small there; numbers from a machine shared with other jobs are noisy.

Usage: python benchmarks/bench_hook_scale.py [--sizes tiny base] [--steps 6] [--warmup 1]
       [--batch 2] [--inputs 64] [--targets 16]
"""

import argparse
import ast
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normgrowth_jax import optimizers, tracking
from normgrowth_jax.models import t5

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "gin_configs", "local", "models")


def gin_t5_config(size: str) -> t5.T5Config:
  """The ``network.T5Config`` block of ``t5_1_1_<size>.gin`` (literals and %MACROs)."""
  text = open(os.path.join(GIN_DIR, f"t5_1_1_{size}.gin")).read()
  macros = dict(re.findall(r"^([A-Z_]+) = (.+)$", text, re.M))
  block = text.split("network.T5Config:", 1)[1]
  fields = {}
  for key, value in re.findall(r"^  (\w+) = (.+)$", block, re.M):
    value = value.strip()
    if value.startswith("%"):
      value = macros[value[1:]]
    fields[key] = ast.literal_eval(value)
  return t5.T5Config(**fields)


def make_step(model, opt):
  loss_fn = t5.make_loss_fn(model, enable_dropout=False)

  def step(params, state, batch):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, jax.random.PRNGKey(0))
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def bench_size(size, args):
  cfg = gin_t5_config(size)
  model = t5.Transformer(cfg)
  rng = np.random.default_rng(0)
  tok = lambda n: jnp.asarray(rng.integers(2, cfg.vocab_size, size=(args.batch, n)), jnp.int32)
  batch = {"encoder_input_tokens": tok(args.inputs), "decoder_input_tokens": tok(args.targets),
           "decoder_target_tokens": tok(args.targets)}
  params0 = jax.jit(model.init)(jax.random.PRNGKey(0), batch["encoder_input_tokens"],
                                batch["decoder_input_tokens"])["params"]
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params0))
  print(f"\n{size}: {n_params / 1e6:.1f}M params, batch {args.batch} x ({args.inputs}+"
        f"{args.targets}), {cfg.dtype}, Adafactor")
  untracked = optax.inject_hyperparams(
      lambda learning_rate: optimizers.adafactor_t5(learning_rate=learning_rate),
      hyperparam_dtype=jnp.float32)(learning_rate=optimizers.rsqrt_schedule())
  variants = {"untracked": untracked,
              "tracked": optax.chain(untracked, tracking.track_norms(param_filter="paper",
                                                                     groups="layers"))}
  runs, compile_s = {}, {}
  for name, opt in variants.items():
    params = jax.tree.map(jnp.array, params0)
    state = opt.init(params)
    t0, c0 = time.perf_counter(), time.process_time()
    compiled = make_step(model, opt).lower(params, state, batch).compile()
    compile_s[name] = (time.perf_counter() - t0, time.process_time() - c0)
    runs[name] = [compiled, params, state]
    print(f"  compile {name:9s} {compile_s[name][0]:7.1f} s wall, {compile_s[name][1]:7.1f} s CPU")
  ratio = [a / b for a, b in zip(compile_s["tracked"], compile_s["untracked"])]
  print(f"  compile ratio tracked/untracked: {ratio[0]:.3f} wall, {ratio[1]:.3f} CPU "
        "(CPU time is the steadier on a shared machine)")

  times = {name: [] for name in runs}
  for i in range(args.warmup + args.steps):
    for name, run in runs.items():
      compiled, params, state = run
      t0 = time.perf_counter()
      params, state, loss = compiled(params, state, batch)
      jax.block_until_ready((params, state, loss))
      if i >= args.warmup:
        times[name].append(time.perf_counter() - t0)
      run[1:] = [params, state]
  med = {name: float(np.median(ts)) for name, ts in times.items()}
  for name, m in med.items():
    print(f"  step    {name:9s} {1e3 * m:9.2f} ms (median of {args.steps})")
  print(f"  step ratio tracked/untracked: {med['tracked'] / med['untracked']:.3f}")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
  ap.add_argument("--steps", type=int, default=6)
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--inputs", type=int, default=64)
  ap.add_argument("--targets", type=int, default=16)
  args = ap.parse_args()
  print(f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} CPUs")
  for size in args.sizes:
    bench_size(size, args)


if __name__ == "__main__":
  main()
