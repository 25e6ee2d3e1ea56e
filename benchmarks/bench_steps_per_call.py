"""Steps per compiled call, and seeds vmapped vs one after another, for Figs. 1/5's model.

Config: the quick profile of ``normgrowth_jax.figures.t5_runs`` (T5.1.1 emb 32, 4 heads x 8,
MLP 64, 4+2 layers, batch 8 x (64 + 16) byte tokens, T5's Adafactor + rsqrt, the hook with the
paper filter, per-layer groups and the checkpoint anchor, streaming every row to norms.jsonl
and TensorBoard as the trainer does). Batches are fixed random tokens (the data pipeline runs
ahead in the trainer and is excluded here).

Variants, timed in alternating rounds so that machine load drifts hit all alike:

* ``1 step / call``: today's loop, ``jit(train_step)`` + a metrics read-back every step;
* ``k steps / call``: ``jit(train.make_multi_step(train_step))`` on k stacked batches, one
  read-back per k steps (``train.train(steps_per_call=k)``);
* seeds: S runs one after another (k steps / call each) against one program that vmaps the
  S runs (same k); without the sink, which cannot tell vmapped runs apart.

Usage:
  python benchmarks/bench_steps_per_call.py [--k 32] [--rounds 5] [--seeds 3]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from normgrowth_jax import optimizers, sinks, train  # noqa: E402
from normgrowth_jax.figures import t5_runs  # noqa: E402
from normgrowth_jax.models import t5  # noqa: E402


def _batches(cfg, n, seed):
  rng = np.random.default_rng(seed)
  b, li, lt = cfg.batch_size, cfg.inputs_length, cfg.targets_length
  tgt = rng.integers(3, 259, (n, b, lt)).astype(np.int32)
  return {
      "encoder_input_tokens": rng.integers(3, 259, (n, b, li)).astype(np.int32),
      "decoder_target_tokens": tgt,
      "decoder_input_tokens": np.concatenate(
          [np.zeros((n, b, 1), np.int32), tgt[:, :, :-1]], axis=2
      ),
      "decoder_loss_weights": np.ones_like(tgt),
  }


def _setup(cfg, sink):
  model = t5.Transformer(t5_runs.model_config(cfg))
  init_fn, loss_fn = train.encoder_decoder_loss(model)
  tx = optimizers.make_optimizer(
      optimizers.adafactor_t5,
      optimizers.rsqrt_schedule(warmup_steps=cfg.warmup_steps),
      sink=sink,
      anchor_every=cfg.grid_interval,
  )
  step = train.make_train_step(loss_fn, tx)

  def init(seed):
    params = init_fn(jax.random.PRNGKey(seed), jax.tree.map(lambda x: x[0], _batches(cfg, 1, 0)))
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  return init, step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--k", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--seeds", type=int, default=3)
  args = parser.parse_args()
  cfg = t5_runs.PROFILES["quick"]
  k = args.k
  rng = jax.random.PRNGKey(1)
  print(
      f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus; "
      f"{cfg.describe()}; k = {k}",
      flush=True,
  )

  # --- steps per call, with the trainer's sinks
  tmp = tempfile.mkdtemp()
  sink = sinks.MultiSink(
      sinks.JsonlSink(os.path.join(tmp, "norms.jsonl")),
      sinks.TensorBoardSink(os.path.join(tmp, "tb"), prefix="norms"),
  )
  init, step = _setup(cfg, sink)
  one = jax.jit(step)
  multi = jax.jit(train.make_multi_step(step))
  data = _batches(cfg, k, 0)
  per_step = [jax.tree.map(lambda x, i=i: x[i], data) for i in range(k)]
  states = {"1 step / call": jax.jit(init)(0), f"{k} steps / call": jax.jit(init)(0)}

  def run_one(state):
    for b in per_step:
      state, m = one(state, b, rng)
      jax.device_get(m)
    return state

  def run_multi(state):
    state, m = multi(state, data, rng)
    jax.device_get(m)
    return state

  fns = {"1 step / call": run_one, f"{k} steps / call": run_multi}
  times = {n: [] for n in fns}
  for n, f in fns.items():  # compile + warm up
    t0 = time.perf_counter()
    states[n] = f(states[n])
    print(f"  {n}: first call (compile) {time.perf_counter() - t0:.1f} s", flush=True)
  for _ in range(args.rounds):
    for n, f in fns.items():
      t0 = time.perf_counter()
      states[n] = f(states[n])
      times[n].append((time.perf_counter() - t0) / k)
  sink.close()
  base = np.median(times["1 step / call"])
  print("steps per call (median over rounds, ms/step; rows streamed to JSONL + TensorBoard):")
  for n, t in times.items():
    print(f"  {n:16s} {np.median(t) * 1e3:8.2f} ms/step  ({base / np.median(t):.2f}x)")

  # --- seeds: one after another vs vmapped (no sink)
  init, step = _setup(cfg, None)
  multi = jax.jit(train.make_multi_step(step))
  S = args.seeds
  vm = jax.jit(jax.vmap(train.make_multi_step(step), in_axes=(0, 0, None)))
  seq_states = [jax.jit(init)(s) for s in range(S)]
  vm_state = jax.jit(jax.vmap(init))(jnp.arange(S))
  datas = [_batches(cfg, k, s) for s in range(S)]
  stacked = jax.tree.map(lambda *x: np.stack(x), *datas)

  def run_seq():
    nonlocal seq_states
    out = []
    for s in range(S):
      st, m = multi(seq_states[s], datas[s], rng)
      jax.device_get(m)
      out.append(st)
    seq_states = out

  def run_vm():
    nonlocal vm_state
    vm_state, m = vm(vm_state, stacked, rng)
    jax.device_get(m)

  seeds = {f"{S} seeds one after another": run_seq, f"{S} seeds vmapped": run_vm}
  for n, f in seeds.items():
    t0 = time.perf_counter()
    f()
    print(f"  {n}: first call (compile) {time.perf_counter() - t0:.1f} s", flush=True)
  st = {n: [] for n in seeds}
  for _ in range(args.rounds):
    for n, f in seeds.items():
      t0 = time.perf_counter()
      f()
      st[n].append((time.perf_counter() - t0) / (k * S))
  base = np.median(st[f"{S} seeds one after another"])
  print(f"seeds ({k} steps / call, no sink; ms per seed-step):")
  for n, t in st.items():
    print(f"  {n:28s} {np.median(t) * 1e3:8.2f} ms  ({base / np.median(t):.2f}x)")


if __name__ == "__main__":
  main()
