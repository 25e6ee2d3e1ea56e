"""Fig. 6's quick grid and model trained for one whole epoch instead of the quick profile's 256 steps.

Does the missing weight-decay threshold of the quick profile come from its short budget (0.1
epoch: decoupled decay removes only lr * wd * T = 2.6e-3 of the norm at PyTorch's defaults)?
This trains the same 7 x 7 (+ default) grid for one epoch of the BBC word-level sentences (2,638
steps, lr * wd * T = 0.026 at the defaults), the cells sharded over the host's cores, and writes
``fig6.png``, ``fig6.pdf``, ``fig6.json`` and a report into ``--out``. The quick profile trains the
original script's setting beside ours, so this does too, with the same budget: 17 and 19 minutes
on 2 CPU cores (2026-12-08). Runs are cached under ``--runs`` like the
figures pipeline's.

Usage:
  python experiments/fig6_one_epoch.py [--out figures/fig6_one_epoch] [--runs runs/figures]
"""

import argparse
import dataclasses
import os

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")

from normgrowth_jax.figures import fig6, pipeline  # noqa: E402  (after XLA_FLAGS)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="figures/fig6_one_epoch")
  parser.add_argument("--runs", default="runs/figures")
  args = parser.parse_args()
  pipeline.run(["fig6"], "quick", args.out, args.runs, configs={"fig6": one_epoch_config()})


def one_epoch_config() -> fig6.Fig6Config:
  """The quick profile with steps=None (one epoch) and the hook recording every 16th step (the
  trajectories' resolution), for ours and for the original setting trained beside it."""
  quick, budget = fig6.CONFIGS["quick"], {"steps": None, "track_every": 16}
  return dataclasses.replace(
      quick, **budget, original=dataclasses.replace(quick.original, **budget)
  )


if __name__ == "__main__":
  main()
