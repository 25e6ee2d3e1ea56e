"""The code's one style: pyink (Black with 2-space indentation, as Flax uses it), configured in
pyproject.toml's ``[tool.pyink]``; ``make format`` applies it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY_DIRS = ("normgrowth_jax", "tests", "benchmarks", "experiments")


def test_every_python_file_is_pyink_formatted():
  proc = subprocess.run(
      [sys.executable, "-m", "pyink", "--check", *PY_DIRS],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert (
      proc.returncode == 0
  ), f"files not in the package's style (run `make format`):\n{proc.stderr[-4000:]}"
