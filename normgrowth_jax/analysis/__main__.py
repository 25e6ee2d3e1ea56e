"""``python -m normgrowth_jax.analysis MODEL_DIR``: print a run's norm-growth summary and plot it."""

import argparse
import os
import sys

from normgrowth_jax.analysis.summary import format_summary, plot_summary, summarize
from normgrowth_jax.analysis.trajectory import read_trajectory


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m normgrowth_jax.analysis", description=__doc__)
  parser.add_argument("model_dir", help="a run directory of the embedded trainer or of T5X")
  parser.add_argument(
      "--source", default="auto", choices=["auto", "checkpoint", "tensorboard", "jsonl"]
  )
  parser.add_argument(
      "--fit_from",
      type=int,
      default=None,
      help="first step of the sqrt(t) fit (default: a tenth into the run)",
  )
  parser.add_argument("--plot", default=None, help="PNG path (default: MODEL_DIR/norm_growth.png)")
  args = parser.parse_args(argv)
  try:
    trajectory = read_trajectory(args.model_dir, source=args.source)
    summary = summarize(trajectory, fit_from=args.fit_from)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(format_summary(summary))
  path = plot_summary(
      summary,
      trajectory,
      args.plot or os.path.join(args.model_dir, "norm_growth.png"),
      title=os.path.basename(os.path.normpath(args.model_dir)),
  )
  print(f"plot: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
