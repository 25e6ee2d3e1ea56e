"""Fig. 6 at the paper's model size, on a grid sized for one GPU: does the threshold appear there?

The quick grid (2 x 64) shows no weight-decay threshold in our setting or the original
script's. This trains the paper's small LM (12 layers, d_model 768, FF 512, 12 heads; the
original setting: PyTorch's FF 2048, dropout 0.1, no mask, attention across the batch) for one
epoch of WikiText-2 (BBC when WikiText-2 is not prepared) at 5 x 5 learning rates x weight
decays over the paper's ranges (1e-5..1e-1, a point per decade, so a threshold between 1e-3 and
1e-2 shows as growth at 1e-3 and shrinkage at 1e-2) plus PyTorch's default cell, in both
settings, and writes ``fig6.png``, ``fig6.pdf``, ``fig6.json`` and a report into ``--out``.

It prints the model FLOPs of each setting first (``grid_runs.training_flops``). On one GPU the
cells are vmapped, as many at once as fit; at 74 TFLOP/s sustained (15% of an H100's dense TF32
peak, the fraction the T5-base step reached on an H200) the two settings take about 6 and 9
minutes of training on BBC (2,686 steps); the paper's 20 x 20 grid (``--full``: the ``full``
profile) 16 times that, about 4 hours.
Runs are cached under ``--runs`` like the figures pipeline's, one file per finished chunk of
cells, so a killed run resumes.

Usage:
  python experiments/fig6_paper_size.py [--out figures/fig6_paper_size] [--runs runs/figures]
                                        [--full] [--steps N]
"""

import argparse
import dataclasses

from normgrowth_jax.figures import fig6, grid_runs, pipeline

SUSTAINED_FLOPS = 74e12  # the rate the printed estimate assumes (see the docstring)


def paper_size(full: bool = False, steps=None) -> fig6.Fig6Config:
  """The ``full`` profile's config (the paper's size, both settings), on 5 x 5 unless ``full``;
  ``steps`` (None: one epoch) shortens it, e.g. to check the program on a CPU.

  Example:
    >>> cfg = paper_size()
    >>> (cfg.n_lr, cfg.n_wd, cfg.arch.d_model, cfg.arch.d_ff, cfg.original.arch.d_ff)
    (5, 5, 768, 512, 2048)
  """
  cfg = fig6.CONFIGS["full"]
  if not full:
    cfg = dataclasses.replace(cfg, n_lr=5, n_wd=5, track_every=16)
  cfg = dataclasses.replace(cfg, steps=steps)
  return dataclasses.replace(cfg, original=fig6.original_setting(cfg))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="figures/fig6_paper_size")
  parser.add_argument("--runs", default="runs/figures")
  parser.add_argument("--full", action="store_true", help="the paper's 20 x 20 grid")
  parser.add_argument("--steps", type=int, default=None, help="steps per cell (default: an epoch)")
  args = parser.parse_args()
  cfg = paper_size(args.full, args.steps)
  for label, c in (("ours", cfg), ("original setting", cfg.original)):
    steps = grid_runs.cell_steps(c)  # loads the corpus to count an epoch
    flops = grid_runs.training_flops(c, steps)
    print(
        f"{label}: {grid_runs.grid_cells(c)[0].size} cells x {steps} steps, "
        f"{flops:.3g} model FLOPs, ~{flops / SUSTAINED_FLOPS / 60:.1f} min at "
        f"{SUSTAINED_FLOPS / 1e12:.0f} TFLOP/s",
        flush=True,
    )
  pipeline.run(["fig6"], "full", args.out, args.runs, configs={"fig6": cfg})


if __name__ == "__main__":
  main()
