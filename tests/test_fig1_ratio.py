"""fig1_ratio: tensor kinds of a real T5, the findings judged on both sides, and the smoke
profile through the pipeline (probed training, the checkpoint's probe read back, plot, report)."""

import json

import numpy as np
import pytest

from data_helpers import data_cache  # noqa: F401  (fixture)
from normgrowth_jax import norms
from normgrowth_jax.figures import fig1_ratio, pipeline, registry, t5_runs


def test_every_parameter_of_a_t5_has_a_kind():
  params = t5_runs.init_params(t5_runs.PROFILES["smoke"], 0)
  kinds = {p: fig1_ratio.tensor_kind(p) for p, _ in norms.named_leaves(params)}
  assert set(kinds.values()) == set(fig1_ratio.KINDS)
  assert kinds["token_embedder/embedding"] == "embedding, logits"
  assert kinds["encoder/relpos_bias/rel_embedding"] == "relative-position bias"
  assert kinds["decoder/layers_0/encoder_decoder_attention/key/kernel"] == "decoder attention q, k"
  assert kinds["encoder/layers_0/attention/out/kernel"] == "encoder attention v, o"


def _summary(r, scale=0.5, rms_u=0.5, r_probe=None):
  return {"r_hook": r, "r_probe": r if r_probe is None else r_probe, "scale": scale, "rms_u": rms_u}


def _measure(pairs):
  """One run whose tensors have the given (late scale, late RMS(u)) pairs."""
  return {
      "tensors": {
          f"t{i}": {"scale": np.full(3, s), "rms_u": np.full(3, u)}
          for i, (s, u) in enumerate(pairs)
      }
  }


def _judge(summaries, pairs=((0.01, 0.1), (0.1, 0.3), (1.0, 1.0))):
  cfg = fig1_ratio.CONFIGS["quick"]
  return [c.passed for c in fig1_ratio.judge(cfg, [_measure(pairs)] * len(summaries), summaries)]


def test_judge_every_finding_on_both_sides():
  # quick model, batch 16, 2+2, 2+2 batch 64, botchan, emb 128, emb 128 unfactored
  holds = [
      _summary(0.3),
      _summary(0.4),
      _summary(0.5),
      _summary(0.95, scale=0.9),
      _summary(0.6),
      _summary(0.3, rms_u=0.2),
      _summary(0.3, rms_u=0.4),
  ]
  assert _judge(holds) == [True] * 9
  fails = [
      _summary(0.6, r_probe=0.5),
      _summary(0.4, scale=1.2),
      _summary(0.55),
      _summary(0.5, scale=0.4),
      _summary(0.5),
      _summary(0.3, rms_u=0.5),
      _summary(0.3, rms_u=0.4),
  ]
  assert _judge(fails, pairs=((0.01, 1.0), (0.1, 0.3), (1.0, 0.1))) == [False] * 9


def test_findings_without_their_variants_are_not_comparable():
  cfg = fig1_ratio.CONFIGS["smoke"]
  got = fig1_ratio.judge(cfg, [_measure([(0.1, 0.3), (1, 1)])] * 2, [_summary(0.3), _summary(0.4)])
  assert [c.passed for c in got[3:]] == [None] * 6


def test_only_named_never_in_all():
  assert "fig1_ratio" not in registry.resolve(["all"])
  assert registry.resolve(["fig1_ratio"]) == ["fig1_ratio"]


def test_each_quick_variant_changes_one_factor_of_an_earlier_one():
  factors = [
      {"batch_size"},
      {"num_encoder_layers", "num_decoder_layers"},
      {"task"},
      {"emb_dim", "head_dim", "mlp_dim"},
      {"bindings"},
  ]

  def changed(a, b):
    out = {
        f
        for f in (
            "task",
            "emb_dim",
            "head_dim",
            "mlp_dim",
            "num_encoder_layers",
            "num_decoder_layers",
            "batch_size",
        )
        if getattr(a.run, f) != getattr(b.run, f)
    }
    return out | ({"bindings"} if a.bindings != b.bindings else set())

  variants = fig1_ratio.CONFIGS["quick"].variants
  for k, v in enumerate(variants[1:], 1):
    assert any(
        changed(v, u) and any(changed(v, u) <= f for f in factors) for u in variants[:k]
    ), v.label
    assert v.run.train_steps == variants[0].run.train_steps and v.run.warmup_steps == 100


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path, data_cache):  # noqa: F811
  out = tmp_path / "out"
  (result,) = pipeline.run(["fig1_ratio"], "smoke", out, tmp_path / "runs", progress=False)
  assert {p.name for p in out.iterdir()} >= {
      "fig1_ratio.png",
      "fig1_ratio.pdf",
      "fig1_ratio.json",
      "report.md",
  }
  numbers = json.loads((out / "fig1_ratio.json").read_text())
  for label, (s,) in numbers["summary"].items():
    assert abs(s["r_hook"] - s["r_probe"]) <= 0.05, label  # the probe accounts for the hook's r
    assert 0 < s["rms_u"] and 0 <= s["clip_frac"] <= 1
  assert result.criteria[0].passed is True
  assert "fig1_ratio" in (out / "report.md").read_text()
