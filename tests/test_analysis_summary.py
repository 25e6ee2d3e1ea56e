"""Tests for normgrowth_jax.analysis.summary and its command line."""

import json

import numpy as np
import pytest

from normgrowth_jax.analysis import summary
from normgrowth_jax.analysis.__main__ import main


def _trajectory(n=200):
  t = np.arange(1, n + 1, dtype=np.float64)
  return {
      "step": t,
      "param_norm": 0.5 * np.sqrt(t) + 3.0,
      "param_norm/encoder/layers_0": 0.1 * np.sqrt(t) + 2.0,
      "param_norm/encoder/layers_1": 0.3 * np.sqrt(t) + 2.0,
      "alignment": np.full(n, 0.25),
      "update_norm": np.linspace(1.0, 2.0, n),
  }


def test_summarize_recovers_sqrt_law_and_layer_growth():
  tr = _trajectory()
  s = summary.summarize(tr, fit_from=50)
  assert s.fit.a == pytest.approx(0.5, rel=1e-9) and s.fit.b == pytest.approx(3.0, rel=1e-9)
  assert s.fit.r2 == pytest.approx(1.0)
  assert s.layer_growth["encoder/layers_1"] == pytest.approx((2.3, 0.3 * np.sqrt(200) + 2.0))
  assert s.alignment_mean == pytest.approx(0.25)
  assert s.update_norm_mean == pytest.approx(np.linspace(1.0, 2.0, 200)[49:].mean())
  text = summary.format_summary(s)
  assert "0.5 sqrt(t) + 3" in text and "encoder/layers_1" in text


def test_summarize_rejects_too_short_trajectory():
  tr = {k: v[:2] for k, v in _trajectory().items()}
  with pytest.raises(ValueError, match="at least 3"):
    summary.summarize(tr)


def test_command_line_reads_jsonl_and_writes_plot(tmp_path, capsys):
  tr = _trajectory(60)
  with open(tmp_path / "norms.jsonl", "w") as f:
    for i in range(60):
      f.write(
          json.dumps({k: float(v[i]) if k != "step" else int(v[i]) for k, v in tr.items()}) + "\n"
      )
  assert main([str(tmp_path), "--source", "jsonl"]) == 0
  out = capsys.readouterr().out
  assert "r^2 = 1.0000" in out
  png = tmp_path / "norm_growth.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_reports_missing_run(tmp_path, capsys):
  assert main([str(tmp_path / "nope")]) == 1
  assert "No trajectory found" in capsys.readouterr().err
