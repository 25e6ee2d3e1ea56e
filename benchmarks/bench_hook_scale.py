"""The norm-tracking hook's cost at T5.1.1 sizes: step-time and compile-time ratios.

For each size and layer layout (unrolled, scanned), builds two jitted T5 train steps with
`benchmarks/bench_t5_scale.build_train_step` (T5's Adafactor, per layer on scanned stacks, state
donated, dropout 0, random tokens): untracked, and tracked with the hook as the trainer sets it
up (``param_filter="paper"``, ``groups="layers"``, every step). It prints each program's XLA
compile time (lowering excluded; the fastest of ``--compiles`` compilations, alternating which
program goes first, since a process's first compilation also pays one-time set-up) in wall and
process CPU seconds and the tracked/untracked ratios, then runs the two steps interleaved
(alternating which goes first: machine-load drifts hit both alike) and prints the median step
times and their ratio. Float32, batch 2 x (64 + 16) by default.

Process CPU time counts this process's threads only, so on a machine shared with other jobs
it is the steadier compile measure; wall time includes waiting for the CPU.

Targets (issue 21, on the 2-core CPU at base size): step ratio <= 1.03, compile ratio <= 1.2.
Base on a 2-core CPU takes seconds a step and tens of seconds to compile: keep --steps small.

Usage: python benchmarks/bench_hook_scale.py [--sizes tiny base] [--layouts unrolled scanned]
       [--steps 4] [--compiles 2] [--batch 2] [--lengths 64 16]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_t5_scale import build_train_step  # noqa: E402

NAMES = ("untracked", "tracked")


def compile_times(size, scan, args):
  """-> ({name: compiled}, {name: state}, batch, {name: [(wall s, CPU s), ...]})."""
  built = {
      name: build_train_step(
          size, scan=scan, track=name == "tracked", batch=args.batch, lengths=tuple(args.lengths)
      )
      for name in NAMES
  }
  times = {name: [] for name in NAMES}
  compiled = {}
  for i in range(args.compiles):
    for name in (NAMES if i % 2 == 0 else NAMES[::-1]):
      step, state, batch = built[name]
      jax.clear_caches()  # else the second compilation returns the first's executable
      lowered = step.lower(state, batch)
      t0, c0 = time.perf_counter(), time.process_time()
      compiled[name] = lowered.compile()
      times[name].append((time.perf_counter() - t0, time.process_time() - c0))
  states = {name: built[name][1] for name in NAMES}
  return compiled, states, built["untracked"][2], times


def step_times(compiled, states, batch, steps):
  """Interleaved steps after one warm-up each -> {name: [seconds]}."""
  times = {name: [] for name in NAMES}
  for i in range(steps + 1):
    for name in (NAMES if i % 2 == 0 else NAMES[::-1]):
      t0 = time.perf_counter()
      states[name], loss = compiled[name](states[name], batch)
      loss.block_until_ready()
      if i:
        times[name].append(time.perf_counter() - t0)
  return times


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
  ap.add_argument("--layouts", nargs="+", default=["unrolled", "scanned"])
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--compiles", type=int, default=2, help="compilations of each program")
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--lengths", type=int, nargs=2, default=(64, 16))
  args = ap.parse_args()
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  print(
      f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
      f"{os.cpu_count()} CPUs, load {load:.1f}; batch {args.batch} x ({args.lengths[0]}+"
      f"{args.lengths[1]}), float32, Adafactor; hook: paper filter, per-layer groups, every=1"
  )
  print(
      "size layout   | compile s untracked / tracked (wall; CPU) | ratio wall  CPU | "
      "step s untracked / tracked | ratio"
  )
  for size in args.sizes:
    for layout in args.layouts:
      compiled, states, batch, comp = compile_times(size, layout == "scanned", args)
      best = {n: np.min(np.array(comp[n]), axis=0) for n in NAMES}
      steps = step_times(compiled, states, batch, args.steps)
      step = {n: float(np.median(steps[n])) for n in NAMES}
      u, t = best["untracked"], best["tracked"]
      print(
          f"{size:4} {layout:8} | {u[0]:6.1f} / {t[0]:6.1f}; {u[1]:6.1f} / {t[1]:6.1f}"
          f"          | {t[0] / u[0]:5.2f} {t[1] / u[1]:5.2f}      | {step['untracked']:8.4f} / "
          f"{step['tracked']:8.4f}        | {step['tracked'] / step['untracked']:.3f}",
          flush=True,
      )
      del compiled, states


if __name__ == "__main__":
  main()
