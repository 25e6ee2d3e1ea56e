"""Fig. 3: criteria on both sides, head statistics, the best checkpoint, Fig. 2's subjects."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backend_helpers import dot_precisions
from data_helpers import data_cache  # noqa: F401  (fixture)
from normgrowth_jax import norms, sinks
from normgrowth_jax.figures import core, fig3, fig3_heads, small_lm_runs, subjects

PRE, POST = "prenorm_paper", "postnorm"
CAUSAL, LEAKY = "causal", "original_leaky"


# ----------------------------------------------------------------------------- criteria


def _inputs(leaky=(0.3, 0.4), correct_split=0.0, trained=0.99, init=(0.5, 0.07), growth=1.2):
  fractions = {(n, LEAKY): {"argmax": leaky[0], "half": leaky[1]} for n in (PRE, POST)}
  fractions.update(
      {
          (n, CAUSAL): {"argmax": 1.0 - correct_split, "split_high": correct_split}
          for n in (PRE, POST)
      }
  )
  saturation = {
      (n, m): ([init[0] if n == PRE else init[1]] * 2, [trained] * 2)
      for n in (PRE, POST)
      for m in (CAUSAL, LEAKY)
  }
  growth_ = {k: [growth, growth] for k in saturation}
  return fractions, saturation, growth_


def _passed(**kw):
  return [c.passed for c in fig3.judge(*_inputs(**kw), padded_length=83)]


def test_judge_every_criterion_on_both_sides():
  assert _passed() == [True, False, True, True, True, True]
  assert _passed(correct_split=0.3)[1] is True  # a second mode with the right mask
  assert _passed(leaky=(0.3, 0.05))[0] is False  # no half-length mode
  assert _passed(leaky=(0.05, 0.6))[0] is False  # no argmax mode
  assert _passed(trained=0.95)[2] is False  # not saturated enough
  assert _passed(trained=0.45)[3] is False  # below its initialisation
  assert _passed(growth=0.98)[4] is False  # the norm shrank
  assert _passed(init=(0.05, 0.5))[5] is False  # post-norm closer at init


def test_judge_uses_seed_means_so_one_run_cannot_flip_it():
  f, s, g = _inputs()
  s[PRE, CAUSAL] = ([0.5, 0.5, 0.5], [0.99, 0.99, 0.49])  # one seed below its init, mean above
  g[PRE, CAUSAL] = [1.2, 1.2, 0.99]  # one seed shrinks, mean grows
  passed = [c.passed for c in fig3.judge(f, s, g, 83)]
  assert passed[3] is True and passed[4] is True
  s[PRE, CAUSAL] = ([0.5, 0.5, 0.5], [0.49, 0.49, 0.52])  # the mean falls: fails
  assert [c.passed for c in fig3.judge(f, s, g, 83)][3] is False


def test_judge_with_one_norm_and_one_mask():
  f, s, g = _inputs()
  keep = [(PRE, CAUSAL)]
  crit = fig3.judge({k: f[k] for k in keep}, {k: s[k] for k in keep}, {k: g[k] for k in keep}, 83)
  assert [c.passed for c in crit] == [False, True, True, True, None]


def test_head_fractions():
  stats = {
      "num_attended": np.array([[1.0, 1.2, 41.0], [40.2, 20.0, 1.6]]),
      "split_fraction": np.array([[0.0, 0.2, 0.98], [0.95, 0.5, 0.005]]),
  }
  f = fig3_heads.head_fractions(stats, 83)
  assert f["heads"] == 6
  assert f["argmax"] == pytest.approx(2 / 6) and f["half"] == pytest.approx(2 / 6)
  assert f["split_low"] == pytest.approx(2 / 6) and f["split_high"] == pytest.approx(2 / 6)


def test_head_statistics_conventions_on_hand_made_weights():
  # One layer, one head, one sentence of 2 real tokens padded to 4.
  w = np.zeros((1, 1, 1, 4, 4), np.float32)
  w[..., 0, :] = [0.0, 0.5, 0.25, 0.25]  # query 0 looks only at later/padding positions
  w[..., 1, :] = [1.0, 0.0, 0.0, 0.0]  # argmax
  w[..., 2, :] = [0.5, 0.5, 0.0, 0.0]  # padding query
  w[..., 3, :] = [0.25, 0.25, 0.25, 0.25]  # padding query
  tokens = np.array([[5, 7, 0, 0]])
  h = fig3_heads.head_statistics(jnp.asarray(w), tokens)
  # ours: real queries 0, 1 and real keys 0, 1: counts 1 and 1.
  assert float(h["real"]["num_attended"][0, 0]) == 1.0
  assert float(h["real"]["split_fraction"][0, 0]) == 0.0
  # the original's: every query and key: counts 3, 1, 2, 4.
  assert float(h["padded"]["num_attended"][0, 0]) == pytest.approx(2.5)
  assert float(h["padded"]["split_fraction"][0, 0]) == pytest.approx(0.75)
  # weight on later positions, over real queries: (1.0 + 0.0) / 2.
  assert float(h["future_weight"][0, 0]) == pytest.approx(0.5)


def test_best_step_uses_dev_loss_and_existing_checkpoints():
  rows = [
      {"step": 0, "loss": 1.0},
      {"step": 10, "loss": 5.0},
      {"step": 20, "loss": 3.0},
      {"step": 30, "loss": 2.0},
      {"step": 40, "loss": 4.0},
  ]
  assert small_lm_runs.best_step(rows, [10, 20, 30, 40]) == 30  # step 0 (init) never chosen
  assert small_lm_runs.best_step(rows, [10, 20, 40]) == 20  # 30's checkpoint is gone
  with pytest.raises(ValueError, match="no evaluated checkpoint"):
    small_lm_runs.best_step(rows, [5])


def test_prune_keeps_only_the_named_checkpoints(tmp_path):
  for step in (10, 20, 30):
    (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
  (tmp_path / "checkpoints" / "tmp_junk").mkdir()
  assert small_lm_runs.prune_checkpoints(tmp_path, {20, 30}) == [10]
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["20", "30", "tmp_junk"]


def test_bindings_name_every_setting_and_the_quick_budget_is_fixed():
  cfg = fig3.CONFIGS["quick"].run
  b = small_lm_runs.bindings(cfg, PRE, LEAKY, 2, 600)
  assert "ATTENTION_MASK='original_leaky'" in b and "SEED=2" in b and "TRAIN_STEPS=600" in b
  assert f"EVAL_EVERY={600 // cfg.evals}" in b and f"CHECKPOINT_PERIOD={600 // cfg.evals}" in b
  assert cfg.steps is not None and len(cfg.seeds) >= 2
  full = fig3.CONFIGS["full"].run
  assert full.arch.is_paper_size and full.epochs == 5.0
  assert (full.arch.num_layers, full.arch.d_model, full.arch.d_ff, full.arch.num_heads) == (
      12,
      768,
      512,
      12,
  )


def test_attention_weights_are_traced_at_float32_precision():
  cfg = fig3.CONFIGS["smoke"].run
  m = small_lm_runs.run_model(cfg, PRE, CAUSAL)
  tokens = jnp.ones((1, cfg.max_len), jnp.int32)
  params = m.init(jax.random.key(0), tokens)["params"]
  text = fig3_heads._attention_fn(cfg, PRE, CAUSAL).lower(params, tokens).as_text()
  precisions = dot_precisions(text)
  assert precisions and set(precisions) == {"[HIGHEST, HIGHEST]"}, precisions


# ----------------------------------------------------------------------------- a real tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_cache):  # noqa: F811
  """One 2-step run of the smoke model through the run cache, as the smoke profile."""
  cfg = dataclasses.replace(
      small_lm_runs.PROFILES["smoke"], steps=2, evals=1, norms=(PRE,), masks=(CAUSAL,)
  )
  root = tmp_path_factory.mktemp("fig3")
  ctx = core.FigureContext(profile="smoke", out_dir=root / "out", runs_root=root / "runs")
  sentences = ["The cat sat on the mat.", "It was a fine day for a walk in the park."]
  assert subjects.trained_small_lms(ctx, cfg, sentences) == []  # nothing cached: none offered
  run_dir = small_lm_runs.train_all(ctx, cfg, 2)[PRE, CAUSAL, 0]
  offered = subjects.trained_small_lms(ctx, cfg, sentences)
  return cfg, run_dir, offered


def test_init_params_are_the_trainers_and_the_run_is_analysed(tiny_run):
  cfg, run_dir, _ = tiny_run
  rows = sinks.read_jsonl(str(run_dir / "eval.jsonl"))
  assert [r["step"] for r in rows] == [0, 2]
  init = small_lm_runs.init_params(cfg, PRE, CAUSAL, 0)
  assert float(norms.global_norm(init, "paper")) == pytest.approx(rows[0]["param_norm"], rel=1e-6)
  data = small_lm_runs.load_data(cfg)
  res = fig3_heads.analyse_run(cfg, PRE, CAUSAL, run_dir, data.split("validation")[:4])
  assert res["best_step"] == 2 and res["norm"]["step"][0] == 0
  heads = res["heads"]["limit"]["real"]["num_attended"]
  assert heads.shape == (cfg.arch.num_layers, cfg.arch.num_heads)
  assert np.all(heads >= 1) and np.all(np.isfinite(heads))


def test_checkpoints_restore_from_a_relative_run_dir(tiny_run, monkeypatch):
  # `make reproduce-figures` passes the relative default runs/figures; orbax wants absolute paths.
  _, run_dir, _ = tiny_run
  absolute = small_lm_runs.restore_params(run_dir, 2)
  monkeypatch.chdir(run_dir.parent)
  relative = small_lm_runs.restore_params(Path(run_dir.name), 2)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), absolute, relative))


def test_trained_small_lms_are_offered_against_their_own_init(tiny_run):
  cfg, _, offered = tiny_run
  assert len(offered) == 1
  s = offered[0]
  assert s.baseline_label == "own init" and "pre-norm" in s.label
  assert s.mask.shape == (2, cfg.max_len) and int(s.mask[1].sum()) == 12  # 11 words + <eos>
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s.params, s.baselines[0])
  assert max(jax.tree.leaves(moved)) > 0
  per = subjects.per_layer(s, s.params, 1000.0)
  assert per["rho"].shape == (cfg.arch.num_layers,) and np.all(np.abs(per["limit"]) <= 1 + 1e-6)
