"""Fig. 6: the criteria on both sides, the heat-map matrices, the grid cache, the data."""

import dataclasses
import json
import os

import numpy as np
import pytest

from data_helpers import data_cache, load_experiment  # noqa: F401  (fixture)
from normgrowth_jax import grid
from normgrowth_jax.data import corpora, word_lm
from normgrowth_jax.figures import core, fig6, fig6_plot, grid_runs, small_lm_runs
from normgrowth_jax.grid import Threshold

WDS = list(grid.log_grid(1e-5, 1e-1, 5))


def _crossings(*wds):
  return [Threshold(10.0 ** -(i + 2), w, "crossing", 1) for i, w in enumerate(wds)]


def _passed(criteria):
  return [c.passed for c in criteria]


def test_default_cell_criterion_both_sides():
  ths = _crossings(4e-3, 5e-3, 3e-3)
  assert fig6.judge(1.05, ths, WDS)[0].passed is True
  assert fig6.judge(0.95, ths, WDS)[0].passed is False
  assert fig6.judge(None, ths, WDS)[0].passed is None  # the default cell diverged


def test_median_threshold_criterion_both_sides():
  assert fig6.judge(1.1, _crossings(4e-3, 5e-3, 2e-2), WDS)[1].passed is True
  assert fig6.judge(1.1, _crossings(4e-2, 5e-2, 2e-3), WDS)[1].passed is False
  grows = [
      Threshold(1e-3, None, "grows throughout"),
      Threshold(1e-2, None, "grows throughout"),
      Threshold(1e-4, 5e-3, "crossing", 1),
  ]
  c = fig6.judge(1.1, grows, WDS)[1]
  assert c.passed is False and "grows throughout" in c.ours
  shrinks = [Threshold(1e-3, None, "shrinks throughout")] * 2 + _crossings(5e-3)
  c = fig6.judge(1.1, shrinks, WDS)[1]
  assert c.passed is False and "shrinks throughout" in c.ours


def test_threshold_exists_criterion_both_sides():
  mixed = _crossings(4e-3, 5e-3) + [Threshold(1e-1, None, "grows throughout")]
  assert fig6.judge(1.1, mixed, WDS)[2].passed is True  # 2 of 3
  few = _crossings(4e-3) + [Threshold(a, None, "grows throughout") for a in (1e-1, 1e-2, 1e-3)]
  c = fig6.judge(1.1, few, WDS)[2]
  assert c.passed is False and c.ours == "1 of 4 learning rates"
  diverged = [Threshold(1e-1, None, "diverged")] * 3 + _crossings(4e-3)
  assert fig6.judge(1.1, diverged, WDS)[2].passed is True  # diverged lrs do not count


def test_horizontal_boundary_criterion_both_sides():
  assert fig6.judge(1.1, _crossings(1e-3, 3e-3, 8e-3), WDS)[3].passed is True
  assert fig6.judge(1.1, _crossings(1e-5, 3e-3, 8e-2), WDS)[3].passed is False
  assert fig6.judge(1.1, _crossings(3e-3), WDS)[3].passed is None  # one threshold: no spread


def test_nothing_to_judge_when_every_lr_diverged():
  ths = [Threshold(a, None, "diverged") for a in (1e-2, 1e-1)]
  assert _passed(fig6.judge(None, ths, WDS)) == [None, None, None, None]


def _result(lrs, wds, ratio, diverged=()):
  lr, wd = grid.cells(lrs, wds)
  n = lr.size
  final = np.asarray(ratio, np.float64) * 2.0
  at = -np.ones(n, np.int64)
  for k in diverged:
    final[k], at[k] = np.nan, 3
  traces = [{"step": np.array([2, 4]), "param_norm": np.array([2.0, final[k]])} for k in range(n)]
  return grid.GridResult(
      lr=lr,
      wd=wd,
      norm_init=np.full(n, 2.0),
      norm_final=final,
      losses=np.arange(4 * n, dtype=np.float64).reshape(4, n),
      diverged_at=at,
      traces=traces,
  )


def test_matrices_rows_are_weight_decay_columns_learning_rate():
  lrs, wds = [1e-3, 1e-2], [1e-4, 1e-3, 1e-2]
  # cells are lr-major: (1e-3, 1e-4), (1e-3, 1e-3), (1e-3, 1e-2), (1e-2, 1e-4), ...
  r = _result(lrs, wds, [1.1, 1.2, 1.3, 1.4, 1.5, 1.6], diverged=[5])
  m = grid_runs.matrices(r, lrs, wds)
  assert m["ratio"].shape == (3, 2)
  np.testing.assert_allclose(m["ratio"][:, 0], [1.1, 1.2, 1.3])
  np.testing.assert_allclose(m["ratio"][:2, 1], [1.4, 1.5])
  assert np.isnan(m["ratio"][2, 1]) and m["diverged"][2, 1] and m["diverged"].sum() == 1
  np.testing.assert_allclose(m["delta"][0, 0], 2.2 - 2.0)
  edges = fig6_plot._edges(np.array(wds))  # pylint: disable=protected-access
  assert len(edges) == 4 and edges[1] == pytest.approx(10**-3.5)


def test_save_and_load_a_chunk(tmp_path):
  r = _result([1e-3], [1e-4, 1e-2], [1.1, 0.9], diverged=[1])
  r.traces[1] = {"step": np.array([2]), "param_norm": np.array([np.nan])}  # shorter trace
  path = tmp_path / "chunk_000.npz"
  grid_runs.save_part(path, r)
  back = grid_runs.load_part(path)
  for k in ("lr", "wd", "norm_init", "norm_final", "losses", "diverged_at"):
    np.testing.assert_array_equal(getattr(back, k), getattr(r, k))
  assert back.traces[0]["step"].tolist() == [2, 4] and back.traces[1]["step"].tolist() == [2]


def test_corpus_preference_and_error(tmp_path, data_cache):  # noqa: F811
  cfg = dataclasses.replace(fig6.CONFIGS["smoke"], corpora=("wikitext2", "botchan"))
  assert grid_runs.corpus(cfg, data_cache) == "botchan"
  with pytest.raises(corpora.CorpusNotPreparedError, match="prepare"):
    grid_runs.corpus(dataclasses.replace(cfg, corpora=("wikitext2",)), tmp_path)


def test_batches_are_epochs_of_the_training_split(data_cache):  # noqa: F811
  cfg = fig6.CONFIGS["smoke"]
  data = word_lm.load("botchan", cfg.vocab_words, cfg.max_len)
  n = grid_runs.epoch_steps(data, cfg)
  b = grid_runs.batches(data, dataclasses.replace(cfg, steps=n + 3))
  assert b.shape == (n + 3, cfg.batch_size, cfg.max_len)
  np.testing.assert_array_equal(
      b[n:], word_lm.epoch_batches(data.split("train"), cfg.batch_size, cfg.data_seed, 1)[:3]
  )
  assert len(grid_runs.batches(data, dataclasses.replace(cfg, steps=None))) == n


TINY = dataclasses.replace(
    fig6.CONFIGS["smoke"],
    n_lr=2,
    n_wd=1,
    steps=4,
    block_steps=4,
    arch=dataclasses.replace(fig6.CONFIGS["smoke"].arch, d_model=8, d_ff=8),
)


def test_make_trains_once_then_reuses_the_cached_grid(tmp_path, data_cache):  # noqa: F811
  ctx = core.FigureContext("smoke", tmp_path / "out", tmp_path / "runs")
  first = fig6.make(ctx, TINY)
  numbers = json.loads((tmp_path / "out" / "fig6.json").read_text())
  assert numbers["run"]["cached"] is False and numbers["run"]["cells"] == 3  # + the default
  assert len(first.criteria) == 4 and first.verdict in (
      "reproduced",
      "partly",
      "not reproduced",
      "not comparable",
  )
  second = fig6.make(core.FigureContext("smoke", tmp_path / "out2", tmp_path / "runs"), TINY)
  again = json.loads((tmp_path / "out2" / "fig6.json").read_text())
  assert again["run"]["cached"] is True
  assert again["ratio"] == numbers["ratio"] and again["default_cell"] == numbers["default_cell"]
  assert [c.passed for c in second.criteria] == [c.passed for c in first.criteria]
  assert any("run cache" in s for s in second.setup)


def test_make_judges_the_original_setting_beside_ours(tmp_path, data_cache):  # noqa: F811
  orig = fig6.original_setting(TINY, d_ff=TINY.arch.d_ff)
  assert (orig.attention_mask, orig.attend_across, orig.dropout) == ("none", "batch", 0.1)
  ours = fig6.make(core.FigureContext("smoke", tmp_path / "a", tmp_path / "runs"), TINY)
  both = fig6.make(
      core.FigureContext("smoke", tmp_path / "b", tmp_path / "runs"),
      dataclasses.replace(TINY, original=orig),
  )
  numbers = json.loads((tmp_path / "b" / "fig6.json").read_text())
  assert numbers["run"]["cached"] is True  # ours: the same run (the variant is not in its key)
  assert numbers["original_setting"]["run"]["cached"] is False
  assert numbers["original_setting"]["setting"].endswith("read as [len, batch])")
  assert numbers["original_setting"]["ratio"] != numbers["ratio"]
  assert [c.passed for c in both.criteria] == [c.passed for c in ours.criteria]  # ours
  labels = [r.quantity for r in both.rows]
  assert labels[: len(ours.rows)] == [r.quantity for r in ours.rows]
  assert sum(lab.startswith("original setting: threshold") for lab in labels) == TINY.n_lr
  assert labels[-1] == "verdict in the original setting (the same criteria)"
  assert both.rows[-1].ours.startswith(numbers["original_setting"]["verdict"])


def test_full_profile_is_the_papers_grid_in_both_settings():
  cfg = fig6.CONFIGS["full"]
  arch = (cfg.arch.num_layers, cfg.arch.d_model, cfg.arch.d_ff, cfg.arch.num_heads)
  assert arch == (12, 768, 512, 12) and (cfg.n_lr, cfg.n_wd, cfg.steps) == (20, 20, None)
  assert cfg.original == fig6.original_setting(cfg) and cfg.original.arch.d_ff == 2048


def test_paper_size_experiment_is_the_full_profile_on_a_5x5_grid():
  experiment = load_experiment("fig6_paper_size")
  full, small = fig6.CONFIGS["full"], experiment.paper_size()
  assert (small.n_lr, small.n_wd, small.arch, small.steps) == (5, 5, full.arch, None)
  assert small.original == fig6.original_setting(small)
  # decade points: the paper's threshold interval (1e-3, 1e-2) has grid points at both ends
  assert {1e-3, 1e-2} <= set(np.round(grid_runs.wds(small), 12).tolist())
  assert experiment.paper_size(full=True, steps=3) == dataclasses.replace(
      full, steps=3, original=dataclasses.replace(full.original, steps=3)
  )


def test_training_flops_counts_matmuls_and_attention():
  cfg = dataclasses.replace(
      fig6.CONFIGS["smoke"],
      arch=small_lm_runs.Architecture(num_layers=3, d_model=8, d_ff=24, num_heads=2),
  )
  cells = grid_runs.grid_cells(cfg)[0].size
  # by hand: per layer q, k, v, o (4 x 8 x 8) and the MLP (2 x 8 x 24); the output layer
  matmul = 3 * (4 * 64 + 2 * 8 * 24) + 8 * cfg.vocab_words
  attention = 12 * 3 * cfg.max_len * 8  # QK^T and AV, forward and backward, per token
  tokens = cfg.batch_size * cfg.max_len
  expected = np.float64(cells) * 5 * tokens * (6 * matmul + attention)
  assert grid_runs.training_flops(cfg, steps=5) == expected
  assert grid_runs.training_flops(cfg) == grid_runs.training_flops(cfg, steps=cfg.steps)


def test_one_epoch_experiment_gives_the_original_setting_the_same_budget(monkeypatch):
  # the script sets XLA_FLAGS if unset: keep it from leaking into later subprocesses
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  cfg, quick = load_experiment("fig6_one_epoch").one_epoch_config(), fig6.CONFIGS["quick"]
  assert (cfg.steps, cfg.track_every) == (cfg.original.steps, cfg.original.track_every)
  assert (cfg.steps, cfg.track_every) == (None, 16)
  assert dataclasses.replace(cfg.original, steps=256, track_every=4) == quick.original
