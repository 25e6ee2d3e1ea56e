"""Fig. 6's grid trained as one compiled program vs a loop of separately compiled runs.

The quick profile's grid (7 x 7 learning rate x weight decay + PyTorch's default cell = 50
cells) and model (fig6.CONFIGS["quick"]: post-norm SmallLM, 2 layers, d_model 64, BBC word-level
sentences), trained from the same initialisation on the same batches, five ways:

* ``mapped``:   ``grid.GridTrainer`` as it runs on CPU by default: every cell in one compiled
  program (lr and wd traced, steps in ``lax.scan`` blocks), the cells one after another in
  ``lax.map`` (``vmap_width=1``), on one device; XLA's CPU backend runs these small per-cell
  matrices on one core;
* ``vmapped``:  the same with the cells on one vmapped axis (``vmap_width=None``, the default
  on accelerators): each op runs over all cells' activations at once;
* ``sharded``:  ``mapped`` with the cell axis split over one host device per core (this script
  starts JAX with ``--xla_force_host_platform_device_count=<cores>``), so every core works;
* ``separate``: one run per cell, lr and wd compiled in as constants, so each cell compiles its
  own program (the original's one process per cell, minus the process start-up), one device;
* ``reused``:   one single-cell program with lr and wd as arguments, compiled once and run for
  each cell in turn (what one program for all cells adds beyond not recompiling).

The variants are timed side by side in one process, interleaved block by block (every variant
trains the same block of steps in turn, the order rotating), so drifting machine load hits them
alike. ``compile`` is each variant's initialisation plus its first block per program (the calls
that compile); ``per step`` is the time to advance all cells by one step after that, the
median over the later blocks, and a per-step ratio is the median over those blocks of the two
variants' ratio in the same block (adjacent in time, so a load spike hits one block, not the
ratio). Memory:
XLA's accounting of one compiled block program (arguments + outputs + temporaries), the live
state of all cells, and the peak resident memory of a fresh process running one block of the
variant (``VmHWM`` of /proc/self/status; for ``separate``: one cell, as one process per cell
would). Not ``ru_maxrss``: Linux carries it across fork + exec, so every child would report
this parent's peak.
The default ``--steps 64`` keeps the loop affordable on 2 cores; the totals are extrapolated to
the quick profile's steps (compile + steps x per step) as well. Final norms are compared:
``mapped`` and ``reused`` run the separate runs' per-cell program and match them exactly;
``vmapped`` and ``sharded`` (other programs) agree to float32 rounding except where the
attention key biases (exact gradient 0) take Adam steps of rounding noise, i.e. at learning
rates from ~5e-3 up.

Usage:
  python benchmarks/bench_grid.py [--steps 64] [--cells N] [--json PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import time

CORES = os.cpu_count() or 1
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={CORES}"
  ).strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from normgrowth_jax import causal_lm, grid  # noqa: E402
from normgrowth_jax.data import word_lm  # noqa: E402
from normgrowth_jax.figures import fig6, grid_runs  # noqa: E402

VARIANTS = ("mapped", "vmapped", "sharded", "separate", "reused")
GRIDS = ("mapped", "vmapped", "sharded")  # all cells in one program


def setup(steps: int, cells: int):
  cfg = fig6.CONFIGS["quick"]
  data = word_lm.load(grid_runs.corpus(cfg), cfg.vocab_words, cfg.max_len)
  batches = grid_runs.batches(data, cfg)[:steps]
  lr, wd = grid_runs.grid_cells(cfg)
  model = grid_runs.model_for(cfg, data.num_ids)
  init_fn, loss_fn = causal_lm.loss_adapter(model)
  params = jax.jit(init_fn)(jax.random.PRNGKey(cfg.init_seed), {causal_lm.TOKENS: batches[0]})
  block = min(cfg.block_steps, steps)
  one = {"devices": jax.local_devices()[:1]}
  options = {
      "mapped": one,
      "vmapped": dict(one, vmap_width=None),
      "sharded": {},
      "separate": one,
      "reused": one,
  }
  trainers = {
      v: grid.GridTrainer(loss_fn, track_every=cfg.track_every, block_steps=block, **o)
      for v, o in options.items()
  }
  return cfg, batches, lr[:cells], wd[:cells], params, block, trainers


def start(variant, trainers, params, lr, wd, steps):
  t = trainers[variant]
  if variant in GRIDS:
    pad = grid.padded_cells(len(lr), len(t.devices))
    return [t.start(params, lr[pad], wd[pad], steps, n_real=len(lr))]
  return [t.start(params, [a], [b], steps, vmapped=variant == "reused") for a, b in zip(lr, wd)]


def memory_child(variant: str, steps: int, cells: int) -> None:
  """One block of ``variant`` in this fresh process; prints its peak resident memory."""
  cfg, batches, lr, wd, params, block, trainers = setup(steps, cells)
  if variant == "separate":  # one process per cell: one cell
    lr, wd = lr[:1], wd[:1]
  runs = start(variant, trainers, params, lr, wd, steps)
  for r in runs[:1]:
    r.advance(batches[:block])
  print("RSS_MB", peak_rss_mb(), flush=True)


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM: this address space's own high-water mark)."""
  with open("/proc/self/status") as fh:
    for line in fh:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM in /proc/self/status (this benchmark's memory needs Linux)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=64)
  parser.add_argument("--cells", type=int, default=None, help="the first N cells (default all)")
  parser.add_argument("--json", default=None, help="also write the numbers here")
  parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  cells = args.cells or 10**9
  if args.memory_child:
    memory_child(args.memory_child, args.steps, cells)
    return

  cfg, batches, lr, wd, params, block, trainers = setup(args.steps, cells)
  variants = [v for v in VARIANTS if v != "sharded" or len(jax.local_devices()) > 1]
  runs, total, first = {}, dict.fromkeys(variants, 0.0), {}
  rest = {v: [] for v in variants}  # seconds per step of each block after the first
  blocks = list(range(0, args.steps, block))
  print(
      f"{len(lr)} cells x {args.steps} steps in blocks of {block}; {len(jax.local_devices())} "
      f"{jax.default_backend()} device(s), {CORES} cores",
      flush=True,
  )
  for i, b0 in enumerate(blocks):
    chunk = batches[b0 : b0 + block]
    order = variants[i % len(variants) :] + variants[: i % len(variants)]
    for v in order:
      t0 = time.perf_counter()
      if v not in runs:
        runs[v] = start(v, trainers, params, lr, wd, args.steps)
      for r in runs[v]:
        r.advance(chunk)
      dt = time.perf_counter() - t0
      total[v] += dt
      if i == 0:
        first[v] = dt
      else:
        rest[v].append(dt / len(chunk))
    print(
        f"block {i + 1}/{len(blocks)}: " + ", ".join(f"{v} {total[v]:.0f} s" for v in variants),
        flush=True,
    )

  results = {v: grid.concat_results([r.result() for r in runs[v]]) for v in variants}
  quick = cfg.steps
  rows = {}
  for v in variants:
    n = len(lr) if v in GRIDS else 1
    xla = trainers[v].memory_analysis(params, n, batches[:block])["total"]
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", v, "--steps", str(args.steps)]
        + (["--cells", str(args.cells)] if args.cells else []),
        capture_output=True,
        text=True,
        check=False,
    )
    rss = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("RSS_MB")]
    per_step = float(np.median(rest[v])) if rest[v] else 0.0
    rows[v] = {
        "programs": len(runs[v]) if v == "separate" else 1,
        "devices": len(trainers[v].devices) if v == "sharded" else 1,
        "wall_s": total[v],
        "compile_s": first[v],
        "per_step_s": per_step,
        "block_step_s": rest[v],
        "extrapolated_s": first[v] + (quick - block) * per_step,
        "xla_block_mb": xla / 2**20,
        "state_mb": sum(r.state_bytes() for r in runs[v]) / 2**20,
        "peak_rss_mb": rss[-1] if rss else None,
        "norm_final": results[v].norm_final.tolist(),
    }

  print(
      f"\nFig. 6 quick grid: {len(lr)} cells x {args.steps} steps (blocks of {block}), "
      f"interleaved; load average {os.getloadavg()[0]:.1f} on {CORES} cores"
  )
  head = (
      f"{'variant':9s} {'programs':>8s} {'devices':>7s} {'total s':>8s} {'compile s':>9s} "
      f"{'per step s':>10s} {f'at {quick} steps':>13s} {'XLA MB':>7s} {'state MB':>8s} "
      f"{'peak RSS MB':>11s}"
  )
  print(head + "\n" + "-" * len(head))
  for v, r in rows.items():
    rss = f"{r['peak_rss_mb']:11.0f}" if r["peak_rss_mb"] else f"{'?':>11s}"
    print(
        f"{v:9s} {r['programs']:8d} {r['devices']:7d} {r['wall_s']:8.1f} "
        f"{r['compile_s']:9.1f} {r['per_step_s']:10.3f} {r['extrapolated_s']:12.0f}s "
        f"{r['xla_block_mb']:7.1f} {r['state_mb']:8.1f} {rss}"
    )
  print()
  for fast in [v for v in GRIDS if v in rows]:
    f = rows[fast]
    for slow in ("separate", "reused"):
      r = rows[slow]
      diff = np.abs(np.asarray(r["norm_final"]) - np.asarray(f["norm_final"]))
      diff = float(np.nanmax(diff / np.asarray(f["norm_final"])))
      paired = np.asarray(r["block_step_s"]) / np.asarray(f["block_step_s"])
      per_step = f"{np.median(paired):.2f}x" if paired.size else "n/a (one block only)"
      print(
          f"{fast} over {slow}: {r['wall_s'] / f['wall_s']:.1f}x measured ({args.steps} "
          f"steps), {per_step} per step after compilation, "
          f"{r['extrapolated_s'] / f['extrapolated_s']:.1f}x at {quick} steps; final norms "
          f"agree to {diff:.1e} (relative)"
      )
  if args.json:
    with open(args.json, "w") as fh:
      json.dump(
          {
              "cells": len(lr),
              "steps": args.steps,
              "block": block,
              "quick_steps": quick,
              "load_average": os.getloadavg()[0],
              "rows": rows,
          },
          fh,
          indent=1,
      )


if __name__ == "__main__":
  main()
