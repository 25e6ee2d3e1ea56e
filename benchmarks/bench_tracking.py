"""Overhead of track_norms on a ~10M-parameter causal LM (batch 8 x 128 tokens).

Builds three jitted train steps (AdamW; AdamW + track_norms(every=1); AdamW +
track_norms(every=10)), runs them interleaved step by step (so machine load drifts hit all
three alike) and prints median step-time ratios tracked/untracked plus the peak-memory ratio
(from XLA's compiled memory analysis: arguments + outputs + temporaries).

Targets: <= 1.02 at every=1, <= 1.005 at every=10, memory <= 1.01. params and the optimizer
state are donated (as real trainers do), so in-place updates count as they would in training.

Usage: python benchmarks/bench_tracking.py [--steps 30] [--warmup 3] [--layers 6]
       [--d_model 256] [--memory_only]   (--memory_only: compile, print memory, no timing)
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normgrowth_jax import norms, tracking
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig, lm_loss


def make_step(model, opt):
  def step(params, state, tokens):
    loss, grads = jax.value_and_grad(
        lambda p: lm_loss(model.apply({"params": p}, tokens).logits, tokens)
    )(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def memory(compiled) -> dict:
  """XLA's compiled memory analysis in bytes; peak = arguments + outputs + temps - aliased."""
  m = compiled.memory_analysis()
  if m is None:
    return {"peak": float("nan")}
  out = {
      "argument": m.argument_size_in_bytes,
      "output": m.output_size_in_bytes,
      "temp": m.temp_size_in_bytes,
      "alias": m.alias_size_in_bytes,
  }
  out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--layers", type=int, default=6)
  ap.add_argument("--d_model", type=int, default=256)
  ap.add_argument("--d_ff", type=int, default=1024)
  ap.add_argument("--vocab", type=int, default=8192)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--length", type=int, default=128)
  ap.add_argument("--memory_only", action="store_true", help="skip the timed steps")
  args = ap.parse_args()

  cfg = SmallLMConfig(
      vocab_size=args.vocab,
      num_layers=args.layers,
      d_model=args.d_model,
      d_ff=args.d_ff,
      num_heads=8,
      max_len=args.length,
      norm="preln",
  )
  model = SmallLM(cfg)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, args.vocab, size=(args.batch, args.length)))
  params0 = model.init(jax.random.PRNGKey(0), tokens)["params"]
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params0))
  print(
      f"model: {n_params / 1e6:.2f}M params, batch {args.batch} x {args.length}, "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
  )

  base = optax.adamw(1e-3, weight_decay=0.01)
  variants = {
      "untracked": base,
      "every=1": optax.chain(base, tracking.track_norms(param_filter="paper", groups="layers")),
      "every=10": optax.chain(
          base, tracking.track_norms(param_filter="paper", groups="layers", every=10)
      ),
  }
  runs = {}
  for name, opt in variants.items():
    params = jax.tree.map(jnp.array, params0)
    state = opt.init(params)
    fn = make_step(model, opt)
    compiled = fn.lower(params, state, tokens).compile()
    mem = memory(compiled)
    print(
        f"compiled {name}: " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in mem.items()),
        flush=True,
    )
    runs[name] = dict(fn=compiled, params=params, state=state, times=[], mem=mem["peak"])
  for name in ("every=1", "every=10"):
    print(f"{name}: memory ratio {runs[name]['mem'] / runs['untracked']['mem']:.4f}")
  if args.memory_only:
    return

  for i in range(args.warmup + args.steps):
    order = list(runs) if i % 2 == 0 else list(runs)[::-1]
    for name in order:
      r = runs[name]
      t0 = time.perf_counter()
      r["params"], r["state"], loss = r["fn"](r["params"], r["state"], tokens)
      jax.block_until_ready((r["params"], r["state"], loss))
      if i >= args.warmup:
        r["times"].append(time.perf_counter() - t0)
    if i >= args.warmup:
      print(
          f"step {i}: "
          + ", ".join(f"{k} {r['times'][-1] * 1e3:.0f} ms" for k, r in runs.items() if r["times"]),
          flush=True,
      )

  med = {k: float(np.median(r["times"])) for k, r in runs.items()}
  print(
      f"median step time untracked: {med['untracked'] * 1e3:.1f} ms "
      f"({args.steps} interleaved steps each)"
  )
  for name in ("every=1", "every=10"):
    ratios = np.array(runs[name]["times"]) / np.array(runs["untracked"]["times"])
    print(
        f"{name}: median time ratio {med[name] / med['untracked']:.4f} "
        f"(median of paired ratios {np.median(ratios):.4f}), "
        f"memory ratio {runs[name]['mem'] / runs['untracked']['mem']:.4f}"
    )
  trace = tracking.read_trace(runs["every=1"]["state"])
  print(
      f"recorded {len(trace['step'])} rows; param_norm {trace['param_norm'][0]:.3f} -> "
      f"{trace['param_norm'][-1]:.3f}; untracked final paper-norm "
      f"{float(norms.global_norm(runs['untracked']['params'], 'paper')):.3f}"
  )


if __name__ == "__main__":
  main()
