"""The vmapped lr x wd grid trainer: each cell equals its own separate run, the hook's trace
under vmap, chunking, divergence isolation, and the threshold interpolation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normgrowth_jax import causal_lm, grid, norms, optimizers, tracking
from normgrowth_jax import train as train_lib
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

STEPS, EVERY = 6, 2
DIVERGES = 1e30  # an AdamW step of this size overflows float32 in the next forward pass


def _setup(use_bias: bool, lr, wd, block_steps):
  model = SmallLM(
      SmallLMConfig(
          vocab_size=23,
          num_layers=1,
          d_model=8,
          d_ff=8,
          num_heads=2,
          max_len=7,
          norm="postnorm",
          use_bias=use_bias,
      )
  )
  init_fn, loss_fn = causal_lm.loss_adapter(model)
  rng = np.random.default_rng(0)
  batches = rng.integers(1, 23, (STEPS, 3, 7)).astype(np.int32)
  batches[:, :, 5:] = 0  # padding, masked by the loss
  params = init_fn(jax.random.PRNGKey(0), {"decoder_target_tokens": batches[0]})
  lr, wd = np.asarray(lr), np.asarray(wd)
  trainer = grid.GridTrainer(loss_fn, track_every=EVERY, block_steps=block_steps)
  # Cells equal separate runs to float32 rounding; TF32 (a GPU's default) rounds more, which the
  # key bias's Adam steps of noise (below) carry into the other parameters.
  with jax.default_matmul_precision("float32"):
    result = trainer.run(params, lr, wd, batches, keep_params=True)
    separate = _separate_runs(loss_fn, params, batches, lr, wd)
  return dict(
      loss_fn=loss_fn,
      params=params,
      batches=batches,
      lr=lr,
      wd=wd,
      trainer=trainer,
      result=result,
      separate=separate,
  )


def _separate_runs(loss_fn, params, batches, lrs, wds):
  """Each cell the trainer's way, on its own: ``optimizers.make_optimizer`` (AdamW + the hook)
  and ``train.make_train_step``, jitted per step (no vmap, no scan), a Python loop over the
  batches. lr and wd are arguments of the step, so one compilation serves every cell. Returns
  per cell (params, opt_state, the norm of the params after every step)."""

  def tx(lr, wd):
    return optimizers.make_optimizer(
        base=lambda learning_rate: optimizers.adamw_paper(learning_rate, weight_decay=wd),
        learning_rate=lr,
        param_filter="paper",
        groups=None,
        track_every=EVERY,
        history_size=STEPS,
    )

  @jax.jit
  def step(state, batch, lr, wd):
    state, _ = train_lib.make_train_step(loss_fn, tx(lr, wd))(state, batch, jax.random.PRNGKey(0))
    return state, norms.global_norm(state["params"], "paper")

  out = []
  for a, b in zip(lrs, wds):
    a, b = jnp.float32(a), jnp.float32(b)
    state = {"params": params, "opt_state": tx(a, b).init(params), "step": jnp.zeros((), jnp.int32)}
    norms_t = []
    for batch in batches:
      state, n = step(state, {"decoder_target_tokens": jnp.asarray(batch)}, a, b)
      norms_t.append(float(n))
    out.append((state["params"], state["opt_state"], np.array(norms_t)))
  return out


@pytest.fixture(scope="module")
def setup():
  """Biasless (every parameter has a real gradient), five cells (the last one diverges), two
  blocks of 3 steps."""
  return _setup(
      False, [1e-3, 3e-2, 1e-3, 1e-1, DIVERGES], [1e-4, 1e-4, 1e-1, 3e-2, 0.0], block_steps=3
  )


@pytest.fixture(scope="module")
def with_bias():
  """The figure's model, with every bias, two cells, blocks of 4 and 2 steps (the remainder
  block is a second program)."""
  return _setup(True, [1e-3, 1e-1], [1e-1, 3e-2], block_steps=4)


def _finite_cells(setup):
  return [i for i, a in enumerate(setup["lr"]) if a != DIVERGES]


def _assert_cells_equal_separate_runs(setup, skip=()):
  r = setup["result"]
  for i in _finite_cells(setup):
    want = setup["separate"][i][0]
    got = grid.cell_slice(r.final_params, i)
    for (path, x), y in zip(norms.named_leaves(got), jax.tree.leaves(want)):
      if any(path.endswith(s) for s in skip):
        assert np.max(np.abs(x - np.asarray(y))) <= 2 * setup["lr"][i] * STEPS, f"{i} {path}"
      else:
        np.testing.assert_allclose(
            x, np.asarray(y), rtol=5e-5, atol=2e-6, err_msg=f"cell {i} {path}"
        )


def test_each_vmapped_cell_equals_its_separate_run(setup):
  _assert_cells_equal_separate_runs(setup)


@pytest.mark.parametrize("width", [None, 2])
def test_every_vmap_width_gives_each_cells_separate_run(setup, width):
  """All cells vmapped at once (None: the accelerators' default) and ``lax.map`` over groups of
  2 vmapped cells (5 cells: two groups and a remainder) equal the separate runs as the default
  (CPU: one cell after another) does."""
  tr = setup["trainer"]
  assert tr.vmap_width == (1 if jax.default_backend() == "cpu" else None)
  other = grid.GridTrainer(setup["loss_fn"], track_every=EVERY, block_steps=3, vmap_width=width)
  with jax.default_matmul_precision("float32"):
    result = other.run(
        setup["params"], setup["lr"], setup["wd"], setup["batches"], keep_params=True
    )
  _assert_cells_equal_separate_runs(dict(setup, result=result))
  assert result.diverged.tolist() == setup["result"].diverged.tolist()
  for i in _finite_cells(setup):
    np.testing.assert_allclose(
        result.traces[i]["param_norm"], setup["result"].traces[i]["param_norm"], rtol=2e-5
    )


def test_with_biases_every_cell_equals_its_separate_run_but_the_key_bias(with_bias):
  """The attention key bias has an exact gradient of 0 (softmax ignores a constant added to a
  query's scores), so Adam normalises rounding noise (~1e-9) into steps of size ~lr whose signs
  depend on the order of float operations: it is held to that bound instead."""
  loss_fn, params, batches = with_bias["loss_fn"], with_bias["params"], with_bias["batches"]
  with jax.default_matmul_precision("float32"):  # TF32 (a GPU's default) leaves ~1e-6 of noise
    g = jax.jit(
        jax.grad(lambda p: loss_fn(p, {"decoder_target_tokens": jnp.asarray(batches[0])}, None)[0])
    )(params)
  assert float(jnp.max(jnp.abs(g["encoder"]["layers_0"]["attention"]["key"]["bias"]))) < 1e-6
  _assert_cells_equal_separate_runs(with_bias, skip=("attention/key/bias",))


def test_cells_actually_differ(setup):
  """The comparison above would pass trivially if lr or wd were ignored."""
  r = setup["result"]
  cells = _finite_cells(setup)
  leaves = [np.asarray(x) for x in jax.tree.leaves(r.final_params)]
  for i in cells[1:]:
    assert max(float(np.max(np.abs(x[0] - x[i]))) for x in leaves) > 1e-5
  assert len(set(np.round(r.norm_final[cells], 6))) == len(cells)
  assert np.all(r.norm_init == r.norm_init[0])  # one shared initialisation


def test_hook_trace_under_vmap_is_each_cells_trajectory(setup):
  r = setup["result"]
  for i in _finite_cells(setup):
    _, opt_state, norms_t = setup["separate"][i]
    tr = r.traces[i]
    assert tr["step"].tolist() == list(range(EVERY, STEPS + 1, EVERY))
    np.testing.assert_allclose(tr["param_norm"], norms_t[EVERY - 1 :: EVERY], rtol=2e-5)
    want = tracking.read_trace(opt_state)
    for col in ("param_norm", "update_norm", "alignment"):
      np.testing.assert_allclose(tr[col], want[col], rtol=1e-4, atol=1e-6, err_msg=col)
    assert r.norm_final[i] == pytest.approx(tr["param_norm"][-1], rel=1e-6)
  assert r.losses.shape == (STEPS, len(setup["lr"]))


def test_a_diverging_cell_is_flagged_and_leaves_the_others_alone(setup):
  """The cells above compared equal to their separate runs with this cell in the grid."""
  r = setup["result"]
  k = len(setup["lr"]) - 1
  assert r.diverged.tolist() == [False] * k + [True]
  assert np.all(r.diverged_at[:k] == -1) and 1 <= r.diverged_at[k] <= STEPS
  assert np.all(np.isfinite(r.losses[:, :k])) and not np.all(np.isfinite(r.losses[:, k]))
  assert r.diverged_at[k] == tracking.first_nonfinite_step(setup["separate"][k][1])


def test_chunks_and_separate_programs_give_the_same_grid(setup):
  r, tr = setup["result"], setup["trainer"]
  with jax.default_matmul_precision("float32"):  # as the fixture ran the grid
    chunked = tr.run(setup["params"], setup["lr"], setup["wd"], setup["batches"], chunk_cells=2)
    sep = tr.run_separately(
        setup["params"], setup["lr"][1:2], setup["wd"][1:2], setup["batches"]
    )  # lr and wd compiled in as constants
  assert chunked.chunk_cells == 2 and chunked.lr.tolist() == setup["lr"].tolist()
  k = len(setup["lr"]) - 1
  np.testing.assert_allclose(chunked.norm_final[:k], r.norm_final[:k], rtol=1e-5)
  np.testing.assert_allclose(chunked.losses[:, :k], r.losses[:, :k], rtol=1e-5)
  assert chunked.diverged.tolist() == r.diverged.tolist()
  assert sep.norm_final[0] == pytest.approx(r.norm_final[1], rel=1e-5)
  assert [len(t["step"]) for t in sep.traces] == [STEPS // EVERY]


@pytest.mark.cpu_only  # on one H200, XLA:GPU reported less memory for 2 cells than for 1
def test_memory_analysis_grows_with_cells(setup):
  tr, b, p = setup["trainer"], setup["batches"], setup["params"]
  assert tr.cells_that_fit(p, b, budget_bytes=10**12, max_cells=7) == 7
  one, two = tr.memory_analysis(p, 1, b), tr.memory_analysis(p, 2, b)  # cached by now
  assert two["total"] > one["total"] > 0
  assert tr.cells_that_fit(p, b, budget_bytes=one["total"] + 10) == 1
  assert tr.cells_that_fit(p, b, budget_bytes=2 * two["total"]) >= 2


def test_grid_helpers():
  assert grid.log_grid(1e-5, 1e-1, 9)[4] == 1e-3
  assert grid.log_grid(1e-5, 1e-1, 20)[0] == 1e-5 and grid.log_grid(1e-5, 1e-1, 20)[-1] == 0.1
  lr, wd = grid.cells([1e-3], [1e-2, 1e-1], extra=[(1e-3, 1e-2), (1e-2, 1e-2)])
  assert lr.tolist() == [1e-3, 1e-3, 1e-2] and wd.tolist() == [1e-2, 1e-1, 1e-2]
  assert grid.find_cell(lr, wd, 1e-2, 1e-2) == 2 and grid.find_cell(lr, wd, 1.0, 1.0) is None
  with pytest.raises(ValueError):
    grid.log_grid(1e-1, 1e-5, 3)


@pytest.mark.parametrize(
    "y, kind, wd",
    [
        ([0.3, 0.1, -0.1, -0.5], "crossing", 10**-2.5),
        ([0.4, 0.2, 0.0, -0.5], "crossing", 10**-2.0),  # 0 counts as "not growing"
        ([0.3, float("nan"), -0.1, -0.5], "crossing", 10 ** (-4 + 2 * 0.75)),  # NaN skipped
        ([0.3, 0.2, 0.1, 0.05], "grows throughout", None),
        ([-0.3, -0.2, -0.1, -0.05], "shrinks throughout", None),
        ([-0.3, -0.2, 0.1, 0.05], "inverted", None),
        ([float("nan")] * 3 + [0.1], "diverged", None),
    ],
)
def test_threshold_along_wd(y, kind, wd):
  t = grid.threshold_along_wd([1e-4, 1e-3, 1e-2, 1e-1], y, lr=1e-3)
  assert t.kind == kind and t.lr == 1e-3
  if wd is None:
    assert t.wd is None
  else:
    assert math.log10(t.wd) == pytest.approx(math.log10(wd), abs=1e-9)


def test_threshold_reports_extra_sign_changes_and_bounds():
  t = grid.threshold_along_wd([1e-4, 1e-3, 1e-2, 1e-1], [0.2, -0.1, 0.1, -0.3])
  assert t.kind == "crossing" and t.sign_changes == 3 and 1e-4 < t.wd < 1e-3
  wds = [1e-4, 1e-1]
  assert grid.Threshold(1e-3, None, "grows throughout").bound(wds) > 1e-1
  assert grid.Threshold(1e-3, None, "shrinks throughout").bound(wds) < 1e-4
  assert grid.Threshold(1e-3, None, "diverged").bound(wds) is None


def test_thresholds_from_a_result():
  lr, wd = grid.cells([1e-3, 1e-2], [1e-4, 1e-3, 1e-2])
  ratio = np.array([1.2, 1.1, 0.9, 1.3, 0.9, 0.8])
  r = grid.GridResult(
      lr=lr,
      wd=wd,
      norm_init=np.ones(6),
      norm_final=ratio,
      losses=np.zeros((1, 6)),
      diverged_at=-np.ones(6, int),
      traces=[{}] * 6,
  )
  ths = grid.thresholds(r, [1e-3, 1e-2], [1e-4, 1e-3, 1e-2])
  assert [t.kind for t in ths] == ["crossing", "crossing"]
  assert 1e-3 < ths[0].wd < 1e-2 and 1e-4 < ths[1].wd < 1e-3


SHARDED = """
import jax, numpy as np
from normgrowth_jax import causal_lm, grid
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig
model = SmallLM(SmallLMConfig(vocab_size=20, num_layers=1, d_model=8, d_ff=8, num_heads=2,
                              max_len=6, use_bias=False))
init_fn, loss_fn = causal_lm.loss_adapter(model)
b = np.random.default_rng(0).integers(1, 20, (4, 4, 6)).astype(np.int32)
params = init_fn(jax.random.PRNGKey(0), {"decoder_target_tokens": b[0]})
lr, wd = np.array([1e-3, 1e-1, 1e-2]), np.array([1e-4, 1e-2, 0.0])
kw = dict(block_steps=4, track_every=2)  # every > 1: the hook's lax.cond inside shard_map
two = grid.GridTrainer(loss_fn, **kw).run(params, lr, wd, b)
one = grid.GridTrainer(loss_fn, devices=jax.local_devices()[:1], **kw).run(params, lr, wd, b)
vmapped = grid.GridTrainer(loss_fn, vmap_width=None, **kw).run(params, lr, wd, b)
assert len(jax.local_devices()) == 2 and two.chunk_cells == 4 and one.chunk_cells == 3
for r in (two, vmapped):
  np.testing.assert_allclose(r.norm_final, one.norm_final, rtol=1e-5)
  np.testing.assert_allclose(r.losses, one.losses, rtol=1e-5)
assert [t["step"].tolist() for t in two.traces] == [[2, 4]] * 3
print("OK")
"""


@pytest.mark.cpu_only
def test_cells_sharded_over_two_host_devices_equal_one_device():
  """With two (host) devices the cell axis is split between them (3 cells padded to 4), cells
  one after another on each device (CPU's default) or vmapped."""
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-c", SHARDED],
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-2000:]
