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

With ``--breakdown`` a third program joins the interleaving: the hook with the NaN/inf probes
of the unfiltered leaves switched off (a diagnostic; the hook itself always probes them), and a
floor is timed on the base-size filtered parameters alone: ``apply_updates`` with and without
one ``sum(theta * delta)`` (one more read of theta and delta: the least that recording
<theta, delta> adds where every reduction is its own loop over memory, as on XLA:CPU).

Targets (issue 21, on the 2-core CPU at base size): step ratio <= 1.03, compile ratio <= 1.2.
Base on a 2-core CPU takes seconds a step and tens of seconds to compile: keep --steps small.

Usage: python benchmarks/bench_hook_scale.py [--sizes tiny base] [--layouts unrolled scanned]
       [--steps 4] [--compiles 2] [--batch 2] [--lengths 64 16] [--breakdown]
"""

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.bench_t5_scale import build_train_step  # noqa: E402
from normgrowth_jax import norms, tracking  # noqa: E402

NAMES = ("untracked", "tracked")
NO_PROBES = "no probes"  # the hook without the unfiltered leaves' NaN/inf probes


@contextlib.contextmanager
def unfiltered_probes_off():
  """While tracing, the hook skips the unfiltered leaves' probes (and so their ties)."""
  measure, ordered = tracking._measure, tracking._ordered_after_reads  # pylint: disable=protected-access

  def measure_filtered(leaves, uleaves, lay, others, anchors, do):
    del others
    return measure(leaves, uleaves, lay, [], anchors, do)

  def ordered_filtered(uleaves, others, probes, zero):
    del probes
    untied, tied = set(others), ordered(uleaves, [], [], zero)
    return [u if j in untied else t for j, (u, t) in enumerate(zip(uleaves, tied))]

  tracking._measure, tracking._ordered_after_reads = measure_filtered, ordered_filtered  # pylint: disable=protected-access
  try:
    yield
  finally:
    tracking._measure, tracking._ordered_after_reads = measure, ordered  # pylint: disable=protected-access


def lower(name, built):
  """The program ``name`` lowered (the hook's Python runs while tracing, so the diagnostic
  patch only has to be in place then)."""
  step, state, batch = built
  with unfiltered_probes_off() if name == NO_PROBES else contextlib.nullcontext():
    return step.lower(state, batch)


def compile_times(size, scan, args, names):
  """-> ({name: compiled}, {name: state}, batch, {name: [(wall s, CPU s), ...]})."""
  built = {
      name: build_train_step(
          size,
          scan=scan,
          track=name != "untracked",
          batch=args.batch,
          lengths=tuple(args.lengths),
      )
      for name in names
  }
  times = {name: [] for name in names}
  compiled = {}
  for i in range(args.compiles):
    for name in names if i % 2 == 0 else names[::-1]:
      jax.clear_caches()  # else the second compilation returns the first's executable
      lowered = lower(name, built[name])
      t0, c0 = time.perf_counter(), time.process_time()
      compiled[name] = lowered.compile()
      times[name].append((time.perf_counter() - t0, time.process_time() - c0))
  states = {name: built[name][1] for name in names}
  return compiled, states, built["untracked"][2], times


def step_times(compiled, states, batch, steps):
  """Interleaved steps after one warm-up each -> {name: [seconds]}."""
  names = list(compiled)
  times = {name: [] for name in names}
  for i in range(steps + 1):
    for name in names if i % 2 == 0 else names[::-1]:
      t0 = time.perf_counter()
      states[name], loss = compiled[name](states[name], batch)
      loss.block_until_ready()
      if i:
        times[name].append(time.perf_counter() - t0)
  return times


def read_floor(size, steps) -> tuple[float, float, int]:
  """-> (s apply, s apply + sum(theta * delta), filtered params) on the filtered leaves of
  ``size``'s parameters, interleaved; theta donated as in the train step, the apply tied after
  the read as the hook ties it (else XLA copies theta to keep it for the read)."""
  _, state, _ = build_train_step(size, scan=False, abstract=True)
  kept = [x for p, x in norms.named_leaves(state["params"]) if norms.paper_filter(p, x)]
  rng = np.random.default_rng(0)
  theta = [jnp.asarray(rng.standard_normal(x.shape, dtype=np.float32)) for x in kept]
  delta = [jnp.asarray(1e-3 * rng.standard_normal(x.shape, dtype=np.float32)) for x in kept]
  apply = jax.jit(lambda t, d: (optax.apply_updates(t, d), jnp.zeros(())), donate_argnums=0)

  def apply_after_read(t, d):  # the hook's tie: the in-place apply waits for the read
    s = sum(jnp.sum(a * b) for a, b in zip(t, d))
    zero = tracking._zero_of(s)  # pylint: disable=protected-access
    return optax.apply_updates(t, [tracking._after(x, zero) for x in d]), s  # pylint: disable=protected-access

  both = jax.jit(apply_after_read, donate_argnums=0)
  times = {apply: [], both: []}
  for i in range(steps + 1):
    for fn in (apply, both) if i % 2 == 0 else (both, apply):
      t0 = time.perf_counter()
      theta, s = fn(theta, delta)
      s.block_until_ready()
      if i:
        times[fn].append(time.perf_counter() - t0)
  return float(np.median(times[apply])), float(np.median(times[both])), sum(x.size for x in kept)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
  ap.add_argument("--layouts", nargs="+", default=["unrolled", "scanned"])
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--compiles", type=int, default=2, help="compilations of each program")
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--lengths", type=int, nargs=2, default=(64, 16))
  ap.add_argument("--breakdown", action="store_true", help="add the diagnostic program and floor")
  args = ap.parse_args()
  names = NAMES + ((NO_PROBES,) if args.breakdown else ())
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
      compiled, states, batch, comp = compile_times(size, layout == "scanned", args, names)
      best = {n: np.min(np.array(comp[n]), axis=0) for n in names}
      steps = step_times(compiled, states, batch, args.steps)
      step = {n: float(np.median(steps[n])) for n in names}
      u, t = best["untracked"], best["tracked"]
      print(
          f"{size:4} {layout:8} | {u[0]:6.1f} / {t[0]:6.1f}; {u[1]:6.1f} / {t[1]:6.1f}"
          f"          | {t[0] / u[0]:5.2f} {t[1] / u[1]:5.2f}      | {step['untracked']:8.4f} / "
          f"{step['tracked']:8.4f}        | {step['tracked'] / step['untracked']:.3f}",
          flush=True,
      )
      if args.breakdown:
        print(
            f"     {'':8}   {NO_PROBES}: compile {best[NO_PROBES][0]:.1f} s wall, step "
            f"{step[NO_PROBES]:.4f} s, ratio {step[NO_PROBES] / step['untracked']:.3f}",
            flush=True,
        )
      del compiled, states
  if args.breakdown:
    for size in args.sizes:
      plain, with_read, n = read_floor(size, max(args.steps, 8))
      print(
          f"floor, {size}: apply_updates on the {n / 1e6:.1f}M filtered params {plain * 1e3:.1f} ms,"
          f" + one sum(theta * delta) {with_read * 1e3:.1f} ms: +{(with_read - plain) * 1e3:.1f} ms",
          flush=True,
      )


if __name__ == "__main__":
  main()
