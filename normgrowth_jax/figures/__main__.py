"""``python -m normgrowth_jax.figures [all | fig2 fig4 ...] --profile quick --out DIR``."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

from normgrowth_jax.figures import core, pipeline, registry, report, subjects


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m normgrowth_jax.figures",
      description="Reproduce the paper's figures and write report.md beside them.",
  )
  parser.add_argument(
      "figures",
      nargs="*",
      default=["all"],
      help=f"'all' (default: the paper's figures) or some of: "
      f"{', '.join(registry.available() + list(registry.BEYOND_PAPER))}",
  )
  parser.add_argument(
      "--profile",
      default="quick",
      choices=core.PROFILES,
      help="smoke: toy sizes for tests (< 3 min); quick (default): a 2-core "
      "CPU; full: the paper's scale (GPU/TPU)",
  )
  parser.add_argument("--out", default=None, help="output folder (default figures/<profile>)")
  parser.add_argument("--runs", default="runs/figures", help="run cache root")
  parser.add_argument("--force", action="store_true", help="retrain cached runs")
  parser.add_argument(
      "--hf_model_dir",
      action="append",
      default=[],
      help="Fig. 2: a Hugging Face BERT/RoBERTa/T5 directory (repeatable)",
  )
  parser.add_argument(
      "--model_dir",
      default=None,
      help="Figs. 1 and 5: draw them from this run directory (embedded trainer "
      "or T5X MODEL_DIR) instead of training",
  )
  parser.add_argument("--no_progress", action="store_true", help="no progress bar")
  parser.add_argument(
      "--train_workers",
      type=int,
      default=None,
      help="trainer runs trained at once, each in its own process (default: 2 "
      "on a CPU with 2+ cores, 1 on an accelerator)",
  )
  parser.add_argument(
      "--readme",
      default=None,
      help="also rewrite the figures block of this README (e.g. README.md) "
      "with the verdict table and the images",
  )
  return parser


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    names = registry.resolve(args.figures)
  except ValueError as e:
    parser.error(str(e))
  out = args.out or f"figures/{args.profile}"
  for d in args.hf_model_dir:  # one line and exit 2, before anything runs
    try:
      subjects.check_hf_directory(d)
    except ValueError as e:
      print(f"{parser.prog}: error: {e}", file=sys.stderr)
      return 2
  if args.readme:  # fail before the run, not after it
    try:
      report.splice_readme(pathlib.Path(args.readme).read_text(), "")
    except (OSError, ValueError) as e:
      parser.error(f"--readme {args.readme}: {e}")
  results = pipeline.run(
      names,
      args.profile,
      out,
      args.runs,
      force=args.force,
      options=core.FigureOptions(args.model_dir, tuple(args.hf_model_dir or ())),
      progress=not args.no_progress,
      train_workers=args.train_workers,
  )
  if args.readme:  # every figure in the folder, this call's and earlier ones
    results = [
        core.FigureResult.from_json(f)
        for f in json.loads((pathlib.Path(out) / "results.json").read_text())["figures"]
    ]
    readme = pathlib.Path(args.readme)
    rel = os.path.relpath(out, readme.parent)
    readme.write_text(
        report.splice_readme(readme.read_text(), report.readme_block(results, args.profile, rel))
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
