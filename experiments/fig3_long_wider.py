"""Fig. 3 at 5 epochs (``make fig3-five-epochs``) one size up: does saturation return when wider?

The quick profile's 4 x 64 small LMs do not saturate after the paper's 5 epochs with either mask
(saturation peaks in the first half epoch and falls with the dev loss). This trains the same
data, optimiser and budget at 6 layers x 128 (FF 256, 4 heads of 32), correct causal mask,
pre- and post-norm, one seed, and writes ``fig3_long.png``, ``.pdf``, ``.json`` and a report
into ``--out``. About 40 minutes on 2 idle CPU cores (12 steps/s, the two runs one after the
other; 57 minutes measured with the test suite beside it). Runs are cached under ``--runs`` like
the figures pipeline's.

Usage:
  python experiments/fig3_long_wider.py [--out figures/fig3_long_wider] [--runs runs/figures]
"""

import argparse
import dataclasses

from normgrowth_jax.figures import fig3_long, pipeline, small_lm_runs

WIDER = dict(
    arch=small_lm_runs.Architecture(num_layers=6, d_model=128, d_ff=256, num_heads=4),
    masks=("causal",),
    seeds=(0,),
)


def config() -> fig3_long.Fig3LongConfig:
  """The quick profile's 5-epoch experiment at the wider size."""
  quick = fig3_long.CONFIGS["quick"]
  return dataclasses.replace(quick, run=dataclasses.replace(quick.run, **WIDER))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="figures/fig3_long_wider")
  parser.add_argument("--runs", default="runs/figures")
  args = parser.parse_args()
  pipeline.run([fig3_long.NAME], "quick", args.out, args.runs, configs={fig3_long.NAME: config()})


if __name__ == "__main__":
  main()
