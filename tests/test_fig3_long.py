"""fig3_long: criteria on both sides, attention targets and the logit scale of a real model,
and the smoke profile through the pipeline (train, measure every checkpoint, plot, report)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_helpers import data_cache, load_experiment  # noqa: F401  (fixture)
from normgrowth_jax import attention_logits as al
from normgrowth_jax.figures import fig3, fig3_long, fig3_long_plot, pipeline, registry, small_lm_runs
from normgrowth_jax.models.small_lm import causal_attention_mask

PRE, POST = "prenorm_paper", "postnorm"


def _summary(end=0.99, growth=1.3, rho_norm=0.9):
  one = {"end": end, "growth": growth, "rho_norm": rho_norm}
  return {(n, "causal"): [one, one] for n in (PRE, POST)}


def _passed(**kw):
  return [c.passed for c in fig3_long.judge(_summary(**kw))]


def test_judge_every_criterion_on_both_sides():
  assert _passed() == [True, True, True]
  assert _passed(growth=0.99) == [False, True, True]
  assert _passed(end=0.9) == [True, False, True]
  assert _passed(rho_norm=0.2) == [True, True, False]


def test_judge_uses_seed_means():
  s = _summary()
  s[PRE, "causal"] = [
      {"end": 0.999, "growth": 1.3, "rho_norm": 0.9},
      {"end": 0.975, "growth": 1.3, "rho_norm": 0.9},
  ]  # mean 0.987 >= 0.986
  assert [c.passed for c in fig3_long.judge(s)] == [True, True, True]


def test_attention_targets_against_numpy():
  rng = np.random.default_rng(0)
  w = rng.uniform(size=(2, 3, 2, 5, 5))
  w /= w.sum(-1, keepdims=True)
  real = np.ones((3, 5), bool)
  real[2, 3:] = False
  got = fig3_long.attention_targets(jnp.asarray(w, jnp.float32), jnp.asarray(real))
  for layer in range(2):
    first, prev, self_, later = [], [], [], []
    for b in range(3):
      for h in range(2):
        for q in range(5):
          if real[b, q]:
            row = w[layer, b, h, q]
            first.append(row[0])
            prev.append(row[q - 1] if q > 0 else 0.0)
            self_.append(row[q])
            later.append(row[q + 1 :].sum())
    for key, ref in zip(("first", "previous", "self", "later"), (first, prev, self_, later)):
      assert float(got[key][layer]) == pytest.approx(np.mean(ref), rel=1e-5)


def test_measure_checkpoint_reads_the_models_own_scores():
  run = fig3_long.CONFIGS["smoke"].run
  m = small_lm_runs.run_model(run, PRE, "causal")
  tokens = jnp.array([[5, 6, 7, 8, 0, 0] + [0] * (run.max_len - 6)] * 2)
  params = m.init(jax.random.key(1), tokens)["params"]
  got = fig3_long.measure_checkpoint(run, PRE, "causal", params, tokens)
  _, state = m.apply({"params": params}, tokens, mutable=["intermediates"])
  scores = al.sown_scores(state["intermediates"])
  real = tokens != 0
  want = al.logit_stats(scores, causal_attention_mask(real), real)
  np.testing.assert_allclose(got["margin"], np.asarray(want["margin"]).mean(1), rtol=1e-6)
  assert got["qk_norm"].shape == (run.arch.num_layers,) and np.all(got["qk_norm"] > 0)
  # a head's weights on first / previous / itself can overlap (the first query is all three)
  assert all(np.all((v >= 0) & (v <= 1 + 1e-6)) for v in got["targets"].values())


def test_only_named_never_in_all():
  assert "fig3_long" not in registry.resolve(["all"])
  assert registry.resolve(["fig3_long", "fig3"]) == ["fig3", "fig3_long"]


def test_quick_profile_is_the_papers_five_epochs_with_twenty_evaluations():
  run = fig3_long.CONFIGS["quick"].run
  assert (run.steps, run.epochs, run.evals) == (None, 5.0, 20)
  assert set(small_lm_runs.variants(run)) == set(fig3_long_plot.COLORS)
  assert fig3.CONFIGS["quick"].run.arch == run.arch


def test_full_profile_is_the_papers_model_for_five_epochs():
  run = fig3_long.CONFIGS["full"].run
  assert (run.arch.num_layers, run.arch.d_model, run.arch.d_ff, run.arch.num_heads) == (
      12,
      768,
      512,
      12,
  )
  assert (run.steps, run.epochs, run.evals) == (None, 5.0, 20)


def test_wider_experiment_changes_only_the_size_masks_and_seeds():
  wider = load_experiment("fig3_long_wider")
  run, quick = wider.config().run, fig3_long.CONFIGS["quick"].run
  assert (run.arch.num_layers, run.arch.d_model, run.masks) == (6, 128, ("causal",))
  assert dataclasses.replace(run, **{k: getattr(quick, k) for k in wider.WIDER}) == quick


def test_smoke_profile_end_to_end(tmp_path, data_cache):  # noqa: F811
  out = tmp_path / "out"
  variant = dataclasses.replace(fig3_long.CONFIGS["smoke"], sentences=8)  # a config passed in
  (result,) = pipeline.run(
      ["fig3_long"], "smoke", out, tmp_path / "runs", progress=False, configs={"fig3_long": variant}
  )
  assert {p.name for p in out.iterdir()} >= {
      "fig3_long.png",
      "fig3_long.pdf",
      "fig3_long.json",
      "report.md",
  }
  numbers = json.loads((out / "fig3_long.json").read_text())
  assert numbers["config"]["sentences"] == 8
  run = fig3_long.CONFIGS["smoke"].run
  for key, v in numbers["runs"].items():
    r = v[0]
    assert r["step"] == [0, 8, 16, 24], key  # the init and every checkpoint
    assert np.asarray(r["saturation_rho"]).shape == (4, run.arch.num_layers)
    assert np.asarray(r["margin"]).shape == (4, run.arch.num_layers)
  assert len(result.criteria) == 3 and result.verdict in ("partly", "not reproduced", "reproduced")
  assert "fig3_long" in (out / "report.md").read_text()
