"""The device check end to end on the CPU at toy sizes, through its shell entry point."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _errors(section) -> list:
  """Every ``error`` inside a section's result (with its traceback's last lines)."""
  if not isinstance(section, dict):
    return []
  own = (
      [f"{section['error']}\n{section.get('traceback', '')[-1500:]}"] if "error" in section else []
  )
  return own + [e for v in section.values() for e in _errors(v)]


@pytest.mark.slow
def test_device_check_smoke_runs_every_section(tmp_path):
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      WHEELS=str(tmp_path / "no_wheels"),
      PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
  )
  proc = subprocess.run(
      [
          "bash",
          "benchmarks/device_check.sh",
          "--smoke",
          "--out",
          str(tmp_path),
          "--fixed_ratios",
          "1.0",
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  report_file = tmp_path / "device_check.json"
  report = json.loads(report_file.read_text()) if report_file.exists() else {}
  errors = {name: found for name, section in report.items() if (found := _errors(section))}
  assert proc.returncode == 0, f"{errors}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
  assert set(report) == {"versions", "tests", "t5", "fig1", "mechanism", "sweep"}
  assert report["versions"]["backend"] == "cpu"
  assert report["tests"]["passed"] > 0 and report["tests"]["failed"] == 0
  t5 = report["t5"]
  for variant in ("tracked", "untracked"):
    assert t5[variant]["step_s"] > 0 and t5[variant]["memory"]["temp"] >= 0
  assert t5["xla_flops_per_step_unrolled"] > 0.5 * t5["model_flops_per_step"]
  assert 0.5 < t5["hook_step_ratio"] < 5
  for run in (report["fig1"], report["mechanism"]["r=1.0"]):
    assert run["train_returncode"] == 0 and run["figures_returncode"] == 0
    assert run["fig1"]["verdict"] and run["fig5"]["verdict"]
    assert run["mechanism"]["late_rows"] > 20
  assert (tmp_path / "fig1" / "fig1.png").exists()
