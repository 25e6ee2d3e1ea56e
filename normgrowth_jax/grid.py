"""Learning-rate x weight-decay grids trained as one compiled program (the paper's Fig. 6).

Every cell of the grid is an ordinary run of the embedded trainer's step
(``train.make_train_step``: loss, gradient, optimizer, ``optax.apply_updates``) with the paper's
AdamW and the norm hook built by ``optimizers.make_optimizer`` (``tracking.track_norms`` last
in the chain). Here the learning rate and the weight decay are traced arrays, one per cell, and
the cells lie on a leading [cells] axis: each cell has its own parameters, optimizer state (Adam
moments, the injected learning rate) and norm trace, and every cell sees the same batches.
Steps run in blocks under ``lax.scan`` (one dispatch per block, state donated). Within a block
the cells are either one ``jax.vmap`` axis (``vmap_width=None``, the default on accelerators) or
run one after another by ``lax.map``, each through the whole block (``vmap_width=1``, the
default on CPU, where a vmapped grid is slower per step than separate runs: every op then
streams all cells' activations, e.g. 50 cells' logits of 250 MB, through the caches that one
cell's fit in); ``vmap_width=w`` maps over groups of w vmapped cells. The cells are split into
chunks of ``chunk_cells`` so the program fits in memory (the last chunk is padded with copies of
its last cell, so one compilation serves every chunk). With several devices (GPUs, or host
devices from ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on CPU) the cell axis of a
chunk is split over them (``shard_map``): on CPU that is how the program uses more than one
core, since XLA runs these small per-cell matrices on one thread.

What the original did instead: one process per cell (20 x 20 = 400 of them), each compiled and
run alone. :meth:`GridTrainer.run_separately` does that here (lr and wd baked in as constants,
one compilation per cell), for the tests and ``benchmarks/bench_grid.py``.

Conventions: the norm is the paper's (App. A: encoder, non-scalar, embeddings excluded:
``param_filter="paper"``); ``norm_init`` is ||theta_0||, ``norm_final`` ||theta_T|| after the
last step, and the trace of cell i (``GridResult.traces[i]``, as ``tracking.read_trace``
returns it) holds ||theta_t|| every ``track_every`` steps. A cell whose loss or update became
NaN/inf keeps training on its NaN values (the other cells are untouched); ``diverged_at[i]``
is its first non-finite step (the hook's ``first_nonfinite``), -1 if none.

Example (two cells, one tiny model, three steps):
  >>> import jax, numpy as np
  >>> from normgrowth_jax import causal_lm
  >>> from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig
  >>> model = SmallLM(SmallLMConfig(vocab_size=20, num_layers=1, d_model=8, d_ff=8,
  ...                               num_heads=2, max_len=6))
  >>> init_fn, loss_fn = causal_lm.loss_adapter(model)
  >>> batches = np.random.default_rng(0).integers(1, 20, (3, 4, 6)).astype(np.int32)
  >>> params = init_fn(jax.random.PRNGKey(0), {"decoder_target_tokens": batches[0]})
  >>> lr, wd = cells([1e-3], [1e-4, 1e-1])
  >>> result = GridTrainer(loss_fn).run(params, lr, wd, batches)
  >>> result.norm_final.shape, result.losses.shape, len(result.traces[0]["param_norm"])
  ((2,), (3, 2), 3)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from normgrowth_jax import norms, optimizers, tracking
from normgrowth_jax import train as train_lib

TOKENS = "decoder_target_tokens"


# ----------------------------------------------------------------------------- the grid


def log_grid(lo: float = 1e-5, hi: float = 1e-1, n: int = 20) -> np.ndarray:
  """``n`` values from ``lo`` to ``hi``, evenly spaced in log10, ascending (float64, rounded
  to 12 significant digits).

  Example:
    >>> log_grid(1e-5, 1e-1, 5).tolist()
    [1e-05, 0.0001, 0.001, 0.01, 0.1]
  """
  if not (0 < lo < hi) or n < 1:
    raise ValueError(f"log_grid needs 0 < lo < hi and n >= 1, got {lo}, {hi}, {n}.")
  if n == 1:
    return np.asarray([lo], np.float64)
  values = 10.0 ** np.linspace(math.log10(lo), math.log10(hi), n)
  return np.asarray([float(f"{v:.12g}") for v in values])  # 1e-3, not 0.0009999999999999998


def cells(
    lrs: Sequence[float], wds: Sequence[float], extra: Sequence[tuple[float, float]] = ()
) -> tuple[np.ndarray, np.ndarray]:
  """Per-cell (learning rate, weight decay): the product ``lrs x wds`` (lr-major), then each
  ``extra`` pair that is not already on the grid (e.g. PyTorch's default cell).

  Example:
    >>> lr, wd = cells([1e-3, 1e-2], [0.0, 1e-2], extra=[(1e-3, 1e-2), (1e-3, 5e-3)])
    >>> list(zip(lr.tolist(), wd.tolist()))
    [(0.001, 0.0), (0.001, 0.01), (0.01, 0.0), (0.01, 0.01), (0.001, 0.005)]
  """
  lr = [float(a) for a in lrs for _ in wds]
  wd = [float(b) for _ in lrs for b in wds]
  for a, b in extra:
    if not any(np.isclose(a, x, rtol=1e-9) and np.isclose(b, y, rtol=1e-9) for x, y in zip(lr, wd)):
      lr.append(float(a))
      wd.append(float(b))
  return np.asarray(lr, np.float64), np.asarray(wd, np.float64)


def padded_cells(n: int, width: int) -> np.ndarray:
  """Indices 0..n-1 padded with copies of the last to a multiple of ``width`` (the devices the
  cell axis is sharded over), so one compiled program serves every chunk.

  Example:
    >>> padded_cells(3, 2).tolist()
    [0, 1, 2, 2]
  """
  return np.concatenate([np.arange(n), np.full(-n % width, n - 1)])


def find_cell(lr: np.ndarray, wd: np.ndarray, at_lr: float, at_wd: float) -> Optional[int]:
  """Index of the cell (at_lr, at_wd) (relative tolerance 1e-6), or None."""
  hit = np.flatnonzero(np.isclose(lr, at_lr, rtol=1e-6) & np.isclose(wd, at_wd, rtol=1e-6))
  return int(hit[0]) if len(hit) else None


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class GridResult:
  """What :meth:`GridTrainer.run` returns, one entry per cell (in the order given).

  Attributes:
    lr, wd: [cells] float64, the cells' hyperparameters.
    norm_init: [cells] ||theta_0|| (paper filter; the same for every cell when they share the
      initialisation).
    norm_final: [cells] ||theta_T|| (NaN for a diverged cell).
    losses: [steps, cells] training loss of every step (the loss of theta_{t-1} at step t).
    diverged_at: [cells] int, the first step whose loss or update was not finite, -1 if none.
    traces: per cell, the hook's rows (``tracking.read_trace``: ``step``, ``param_norm``, ...).
    final_params: the cells' final params stacked on a leading [cells] axis (numpy), only with
      ``keep_params=True``.
    wall_s: seconds, compilation included; compile_s: seconds of the first block of each
      distinct program (compile + one block).
    chunk_cells: the cells per compiled program.
  """

  lr: np.ndarray
  wd: np.ndarray
  norm_init: np.ndarray
  norm_final: np.ndarray
  losses: np.ndarray
  diverged_at: np.ndarray
  traces: list
  final_params: Any = None
  wall_s: float = 0.0
  compile_s: float = 0.0
  chunk_cells: int = 0

  @property
  def delta_norm(self) -> np.ndarray:
    """||theta_T|| - ||theta_0|| per cell (NaN where diverged)."""
    return self.norm_final - self.norm_init

  @property
  def ratio(self) -> np.ndarray:
    """||theta_T|| / ||theta_0|| per cell (NaN where diverged)."""
    return self.norm_final / self.norm_init

  @property
  def diverged(self) -> np.ndarray:
    return (self.diverged_at >= 0) | ~np.isfinite(self.norm_final)


def concat_results(parts: Sequence[GridResult]) -> GridResult:
  """The chunks' results as one :class:`GridResult`, cells in order."""
  params = None
  if all(p.final_params is not None for p in parts):
    params = jax.tree.map(lambda *xs: np.concatenate(xs), *[p.final_params for p in parts])
  return GridResult(
      lr=np.concatenate([p.lr for p in parts]),
      wd=np.concatenate([p.wd for p in parts]),
      norm_init=np.concatenate([p.norm_init for p in parts]),
      norm_final=np.concatenate([p.norm_final for p in parts]),
      losses=np.concatenate([p.losses for p in parts], axis=1),
      diverged_at=np.concatenate([p.diverged_at for p in parts]),
      traces=[t for p in parts for t in p.traces],
      final_params=params,
      wall_s=sum(p.wall_s for p in parts),
      compile_s=sum(p.compile_s for p in parts),
      chunk_cells=max(p.chunk_cells for p in parts),
  )


def cell_slice(tree, i: int):
  """Cell ``i`` of a tree whose leaves carry a leading [cells] axis (numpy)."""
  return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def cell_traces(opt_state, n: Optional[int] = None) -> list[dict]:
  """``tracking.read_trace`` of every cell of a vmapped optimizer state (first ``n`` cells)."""
  opt_state = jax.device_get(opt_state)
  found = tracking.find_traces(opt_state)
  if len(found) != 1:
    raise ValueError(
        f"Expected one NormTrace in the grid's optimizer state, found {[p for p, _ in found]}."
    )
  trace = found[0][1]
  total = int(np.shape(trace.count)[0]) if np.ndim(trace.count) else 1
  return [tracking.read_trace(cell_slice(trace, i)) for i in range(n or total)]


def _first_nonfinite(opt_state) -> np.ndarray:
  trace = tracking.find_traces(jax.device_get(opt_state))[0][1]
  return np.rint(np.asarray(trace.first_nonfinite)).astype(np.int64).reshape(-1)


# ----------------------------------------------------------------------------- the trainer


def _batch_dict(batch) -> dict:
  return dict(batch) if isinstance(batch, Mapping) else {TOKENS: batch}


def _num_steps(batches) -> int:
  return int(np.shape(_batch_dict(batches)[TOKENS])[0])


def _take(batches, start: int, stop: int) -> dict:
  return {k: np.asarray(v[start:stop]) for k, v in _batch_dict(batches).items()}


def resolve_vmap_width(width: Union[int, str, None], platform: str) -> Optional[int]:
  """``GridTrainer``'s ``vmap_width``: "auto" is 1 on CPU (measured fastest there: a vmapped
  grid runs every op over all cells' activations, which leave the caches) and None (vmap all
  cells) on accelerators.

  Example:
    >>> [resolve_vmap_width(w, p) for w, p in [("auto", "cpu"), ("auto", "gpu"), (4, "cpu")]]
    [1, None, 4]
  """
  if width == "auto":
    return 1 if platform == "cpu" else None
  if width is not None and (isinstance(width, str) or int(width) < 1):
    raise ValueError(f"vmap_width must be None, 'auto' or an int >= 1, got {width!r}.")
  return None if width is None else int(width)


def default_memory_budget(fraction: float = 0.5) -> int:
  """Bytes a grid program may use: ``fraction`` of the accelerator's memory, or of the host's
  physical memory on CPU."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  (CPU backends may not implement it)
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(fraction * stats["bytes_limit"])
  return int(fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


class GridTrainer:
  """Trains cells of a learning-rate x weight-decay grid of AdamW runs in one program.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)`` from a trainer adapter
      (e.g. ``causal_lm.loss_adapter(model)[1]``).
    base: ``base(learning_rate=..., weight_decay=...) -> optax transformation`` (the paper's
      AdamW with PyTorch's other defaults).
    track_every: the hook's recording period (every cell records ||theta_t|| then).
    param_filter, groups: the hook's norm convention (default: the paper's, no groups).
    block_steps: steps per compiled ``lax.scan`` block.
    history_size: rows kept per cell (None: enough for the whole run).
    rng_seed: the dropout rng (unused by deterministic models); the same for every cell.
    devices: the devices the cell axis is sharded over (default: every local device; on CPU
      that is one unless ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` was set before
      JAX started). A chunk is padded to a multiple of their number.
    vmap_width: how a device runs its cells: None vmaps them all at once; an int w runs them
      in ``lax.map`` over groups of w vmapped cells (1: one cell after another, each the
      unbatched per-cell program, still one compilation); "auto" (the default): 1 on CPU,
      None elsewhere. See :func:`resolve_vmap_width`.
  """

  def __init__(
      self,
      loss_fn: Callable,
      base: Callable = optimizers.adamw_paper,
      *,
      track_every: int = 1,
      param_filter="paper",
      groups=None,
      block_steps: int = 16,
      history_size: Optional[int] = None,
      rng_seed: int = 0,
      devices: Optional[Sequence[Any]] = None,
      vmap_width: Union[int, str, None] = "auto",
  ):
    if block_steps < 1 or track_every < 1:
      raise ValueError(f"block_steps ({block_steps}) and track_every ({track_every}) must be >= 1.")
    self.loss_fn = loss_fn
    self.base = base
    self.track_every = track_every
    self.param_filter = param_filter
    self.groups = groups
    self.block_steps = block_steps
    self.history_size = history_size
    self.rng = jax.random.PRNGKey(rng_seed)
    self.devices = list(devices) if devices is not None else jax.local_devices()
    self.vmap_width = resolve_vmap_width(vmap_width, self.devices[0].platform)
    self.mesh = Mesh(np.asarray(self.devices), ("cells",))
    self._programs: dict = {}  # (steps, vmapped, consts, sharded) -> jitted (init, block, norms)
    self._memory: dict = {}  # (cells, steps, batch shapes) -> XLA's byte counts

  # -- one cell ------------------------------------------------------------------------------

  def optimizer(self, lr, wd, steps: int) -> optax.GradientTransformation:
    """One cell's optimizer: ``make_optimizer(base(wd), lr)``; lr and wd may be traced."""
    history = self.history_size or (steps // self.track_every + 2)
    return optimizers.make_optimizer(
        base=functools.partial(self.base, weight_decay=wd),
        learning_rate=lr,
        param_filter=self.param_filter,
        groups=self.groups,
        track_every=self.track_every,
        history_size=history,
    )

  def _init_cell(self, params, lr, wd, steps):
    tx = self.optimizer(lr, wd, steps)
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  def _step_cell(self, state, lr, wd, batch, steps):
    tx = self.optimizer(lr, wd, steps)
    return train_lib.make_train_step(self.loss_fn, tx)(state, batch, self.rng)

  def _block_cell(self, state, lr, wd, batches, steps):
    """One cell through a block of steps (``lax.scan``): (state, losses [k])."""

    def body(s, b):
      s, m = self._step_cell(s, lr, wd, b, steps)
      return s, m["loss"]

    return jax.lax.scan(body, state, batches)

  def _block_cells(self, state, lr, wd, batches, steps):
    """The cells on a leading axis through a block: (state, losses [k, cells]); vmapped or in
    ``lax.map`` over groups of ``vmap_width`` (every cell sees the same batches)."""
    one = lambda x: self._block_cell(*x, batches, steps)
    w = self.vmap_width
    if w is None:
      state, losses = jax.vmap(one)((state, lr, wd))
    else:
      state, losses = jax.lax.map(one, (state, lr, wd), batch_size=None if w == 1 else w)
    return state, losses.T

  # -- compiled programs ---------------------------------------------------------------------

  def _program(
      self, steps: int, vmapped: bool, consts: Optional[tuple] = None, sharded: bool = False
  ):
    """(init, block, norms) jitted. ``vmapped``: over a [cells] axis with traced lr, wd (split
    over ``self.mesh`` if ``sharded``); otherwise one cell with lr, wd the Python constants
    ``consts`` (compiled for those values)."""
    key = (steps, vmapped, consts, sharded)
    if key in self._programs:
      return self._programs[key]
    if vmapped:

      def init(params, lr, wd):
        return jax.vmap(lambda a, b: self._init_cell(params, a, b, steps))(lr, wd)

      block = functools.partial(self._block_cells, steps=steps)
      if sharded:
        # no collectives inside; check_vma=False lets the hook's lax.cond return constants
        block = jax.shard_map(
            block,
            mesh=self.mesh,
            in_specs=(P("cells"),) * 3 + (P(),),
            out_specs=(P("cells"), P(None, "cells")),
            check_vma=False,
        )
    else:
      c_lr, c_wd = consts

      def init(params, lr, wd):
        del lr, wd
        return self._init_cell(params, c_lr, c_wd, steps)

      def block(state, lr, wd, batches):
        del lr, wd
        return self._block_cell(state, c_lr, c_wd, batches, steps)

    def final_norms(params):
      f = lambda p: norms.global_norm(p, self.param_filter)
      return jax.vmap(f)(params) if vmapped else f(params)

    out = (jax.jit(init), jax.jit(block, donate_argnums=(0,)), jax.jit(final_norms))
    self._programs[key] = out
    return out

  def memory_analysis(self, params, n_cells: int, batches) -> dict:
    """XLA's byte counts of the compiled grid block for ``n_cells`` cells (one device).

    Returns ``{"argument", "output", "temp", "alias", "total"}`` (``total`` = argument +
    output + temp - alias: what the program holds at its peak, by XLA's own accounting).
    """
    steps = _num_steps(batches)
    k = min(self.block_steps, steps)
    b = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((k,) + np.shape(x)[1:], np.asarray(x).dtype),
        _batch_dict(batches),
    )
    key = (n_cells, steps, tuple(sorted((n, x.shape) for n, x in b.items())))
    if key not in self._memory:
      init, block, _ = self._program(steps, True)
      lr = jnp.full((n_cells,), 1e-3, jnp.float32)
      state = jax.eval_shape(init, params, lr, lr)
      m = block.lower(state, lr, lr, b).compile().memory_analysis()
      out = {
          "argument": m.argument_size_in_bytes,
          "output": m.output_size_in_bytes,
          "temp": m.temp_size_in_bytes,
          "alias": m.alias_size_in_bytes,
      }
      out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
      self._memory[key] = out
    return dict(self._memory[key])

  def cells_that_fit(
      self, params, batches, budget_bytes: Optional[int] = None, max_cells: Optional[int] = None
  ) -> int:
    """How many cells one program may hold within ``budget_bytes`` (default: half the memory).

    Extrapolates XLA's accounting of 1- and 2-cell programs (two small compilations).
    """
    budget = budget_bytes or default_memory_budget()
    one = self.memory_analysis(params, 1, batches)["total"]
    two = self.memory_analysis(params, 2, batches)["total"]
    per_cell = max(two - one, 1)
    fixed = max(one - per_cell, 0)
    n = max(1, int((budget - fixed) // per_cell)) * len(self.devices)  # budget per device
    return min(n, max_cells) if max_cells else n

  # -- running -------------------------------------------------------------------------------

  def start(
      self, params, lr, wd, steps: int, *, vmapped: bool = True, n_real: Optional[int] = None
  ) -> "GridRun":
    """A run of the cells (lr[i], wd[i]) for ``steps`` steps, advanced block by block with
    :meth:`GridRun.advance` (what :meth:`run` does; benchmarks interleave runs this way).

    ``vmapped=False`` runs one cell with lr and wd compiled in as constants (its own program).
    ``n_real``: the first n cells are real, the rest padding (dropped from the result).
    """
    return GridRun(self, params, lr, wd, steps, vmapped, n_real)

  def _run_program(self, params, lr, wd, batches, vmapped, keep_params, progress, n_real):
    run = self.start(params, lr, wd, _num_steps(batches), vmapped=vmapped, n_real=n_real)
    for start in range(0, run.steps, self.block_steps):
      stop = min(start + self.block_steps, run.steps)
      run.advance(_take(batches, start, stop))
      if progress is not None:
        progress(stop - start)
    return run.result(keep_params)

  def run(
      self,
      params,
      lr: Sequence[float],
      wd: Sequence[float],
      batches,
      *,
      chunk_cells: Union[int, str, None] = None,
      keep_params: bool = False,
      progress: Optional[Callable[[int], None]] = None,
      on_chunk: Optional[Callable[[int, GridResult], None]] = None,
      done_chunks: Optional[Mapping[int, GridResult]] = None,
  ) -> GridResult:
    """Trains every cell (lr[i], wd[i]) from ``params`` on ``batches``, in one program.

    Args:
      params: the initialisation every cell starts from (one tree, no cell axis).
      lr, wd: [cells] learning rates and weight decays.
      batches: [steps, batch, len] token ids (or a dict of such arrays, trainer feature
        names); every cell sees the same batches in the same order.
      chunk_cells: cells per compiled program: None (all at once), an int, or "auto" (as
        many as :meth:`cells_that_fit` allows in half the memory).
      keep_params: also return every cell's final params (memory: cells x model).
      progress: ``progress(steps)`` after each block (steps of the chunk being trained).
      on_chunk: ``on_chunk(index, result)`` after each chunk (e.g. to save it).
      done_chunks: ``{index: result}`` of chunks already trained (resuming): skipped.

    Returns:
      A :class:`GridResult` over all cells, in order.
    """
    lr = np.asarray(lr, np.float64).reshape(-1)
    wd = np.asarray(wd, np.float64).reshape(-1)
    if lr.shape != wd.shape or not lr.size:
      raise ValueError(
          f"lr and wd must be non-empty and of one length, got {lr.shape}, {wd.shape}."
      )
    n = lr.size
    if chunk_cells == "auto":
      chunk_cells = self.cells_that_fit(params, batches, max_cells=n)
    size = n if chunk_cells is None else max(1, min(int(chunk_cells), n))
    parts = []
    for c, start in enumerate(range(0, n, size)):
      if done_chunks and c in done_chunks:
        parts.append(done_chunks[c])
        if progress is not None:
          progress(_num_steps(batches))
        continue
      real = min(size, n - start)
      # every chunk padded to the first chunk's size, then to a multiple of the devices
      pad = start + padded_cells(size, len(self.devices)).clip(max=real - 1)
      part = self._run_program(params, lr[pad], wd[pad], batches, True, keep_params, progress, real)
      if on_chunk is not None:
        on_chunk(c, part)
      parts.append(part)
    return concat_results(parts)

  def run_separately(
      self,
      params,
      lr: Sequence[float],
      wd: Sequence[float],
      batches,
      *,
      keep_params: bool = False,
      traced: bool = False,
      progress: Optional[Callable[[int], None]] = None,
  ) -> GridResult:
    """The original's way: one run per cell, each its own program, in a loop.

    With ``traced=False`` (the default) lr and wd are compiled in as constants, so every cell
    compiles its own program (the original's one process per cell); ``traced=True`` compiles
    one single-cell program with lr and wd as arguments and reuses it.
    """
    lr = np.asarray(lr, np.float64).reshape(-1)
    wd = np.asarray(wd, np.float64).reshape(-1)
    parts = []
    for a, b in zip(lr, wd):
      part = self._run_program(
          params, np.asarray([a]), np.asarray([b]), batches, traced, keep_params, progress, 1
      )
      if not traced:  # do not keep 400 compiled programs alive
        self._programs.pop((_num_steps(batches), False, (float(a), float(b)), False), None)
      parts.append(part)
    return concat_results(parts)


class GridRun:
  """One chunk of cells in training: :meth:`advance` by a block of batches, then :meth:`result`.

  Attributes:
    steps: the run's length; step: the steps done; wall_s: seconds spent in this run so far
    (init, compilation, blocks); compile_s: seconds of init and of the first block of each
    block length (the calls that compile).
  """

  def __init__(
      self, trainer: GridTrainer, params, lr, wd, steps: int, vmapped: bool, n_real: Optional[int]
  ):
    t0 = time.perf_counter()
    self.trainer, self.steps, self.vmapped, self.step = trainer, int(steps), vmapped, 0
    self.lr = np.asarray(lr, np.float64).reshape(-1)
    self.wd = np.asarray(wd, np.float64).reshape(-1)
    self.n_real = n_real or self.lr.size
    consts = None if vmapped else (float(self.lr[0]), float(self.wd[0]))
    sharded = vmapped and len(trainer.devices) > 1 and self.lr.size % len(trainer.devices) == 0
    self._init, self._block, self._norms = trainer._program(  # pylint: disable=protected-access
        self.steps, vmapped, consts, sharded
    )
    self._lr = jnp.asarray(self.lr, jnp.float32)
    self._wd = jnp.asarray(self.wd, jnp.float32)
    self._put = lambda x: x
    if sharded:  # the cell axis split over the devices
      cells_sh, same = NamedSharding(trainer.mesh, P("cells")), NamedSharding(trainer.mesh, P())
      self._lr, self._wd = jax.device_put((self._lr, self._wd), cells_sh)
      params = jax.device_put(params, same)
      self._put = lambda x: jax.device_put(x, same)
    self.state = self._init(params, self._lr, self._wd)
    if sharded:
      self.state = jax.device_put(self.state, cells_sh)
    self.norm0 = np.asarray(self._norms(self.state["params"]), np.float64).reshape(-1)
    self._losses, self._seen = [], set()
    self.compile_s = self.wall_s = time.perf_counter() - t0

  def advance(self, batch_block) -> float:
    """Trains the next ``len(batch_block)`` steps ([k, batch, len] or a dict); returns seconds
    (the losses are fetched, so the work is done when it returns)."""
    t0 = time.perf_counter()
    block = _batch_dict(batch_block)
    k = _num_steps(block)
    if self.step + k > self.steps:
      raise ValueError(f"{k} more steps exceed the run's {self.steps} (at {self.step}).")
    self.state, loss = self._block(
        self.state, self._lr, self._wd, self._put({n: np.asarray(v) for n, v in block.items()})
    )
    self._losses.append(np.asarray(jax.device_get(loss)).reshape(k, -1))
    self.step += k
    dt = time.perf_counter() - t0
    if k not in self._seen:  # the first call of each block length compiles it
      self._seen.add(k)
      self.compile_s += dt
    self.wall_s += dt
    return dt

  def result(self, keep_params: bool = False) -> GridResult:
    """The cells' results (after the last block)."""
    t0 = time.perf_counter()
    n, vm = self.n_real, self.vmapped
    norm_final = np.asarray(self._norms(self.state["params"]), np.float64).reshape(-1)
    opt_state = self.state["opt_state"]
    if not vm:  # give the single run a [1] cell axis
      opt_state = jax.tree.map(lambda x: np.asarray(x)[None], jax.device_get(opt_state))
    final = None
    if keep_params:
      final = jax.tree.map(
          lambda x: np.asarray(x).reshape((-1,) + np.shape(x)[vm:])[:n],
          jax.device_get(self.state["params"]),
      )
    out = GridResult(
        lr=self.lr[:n],
        wd=self.wd[:n],
        norm_init=self.norm0[:n],
        norm_final=norm_final[:n],
        losses=np.concatenate(self._losses)[:, :n] if self._losses else np.zeros((0, n)),
        diverged_at=_first_nonfinite(opt_state)[:n],
        traces=cell_traces(opt_state, n),
        final_params=final,
        compile_s=self.compile_s,
        chunk_cells=int(self.lr.size),
    )
    self.wall_s += time.perf_counter() - t0
    out.wall_s = self.wall_s
    return out

  def state_bytes(self) -> int:
    """Bytes of the live state (params, optimizer state, traces) of every cell."""
    return int(sum(x.nbytes for x in jax.tree.leaves(self.state)))


# ----------------------------------------------------------------------------- thresholds


@dataclasses.dataclass(frozen=True)
class Threshold:
  """Where growth turns to shrinkage along weight decay, at one learning rate.

  Attributes:
    lr: the learning rate.
    wd: the interpolated weight decay of the first change from growth to shrinkage (scanning
      weight decay upward), or None (see ``kind``).
    kind: "crossing", "grows throughout" (above the largest wd), "shrinks throughout" (below
      the smallest), "inverted" (shrinks at small wd, grows at large: no threshold) or
      "diverged" (fewer than two finite cells).
    sign_changes: how many times the sign changes along weight decay (1 = a clean threshold).
  """

  lr: float
  wd: Optional[float]
  kind: str
  sign_changes: int = 0

  def bound(self, wds: Sequence[float]) -> Optional[float]:
    """The threshold as a number for ordering: the crossing, or just beyond the grid's ends."""
    if self.kind == "crossing":
      return self.wd
    if self.kind == "grows throughout":
      return float(np.max(wds)) * 10.0
    if self.kind == "shrinks throughout":
      return float(np.min(wds)) / 10.0
    return None


def threshold_along_wd(
    wds: Sequence[float], log_ratio: Sequence[float], lr: float = float("nan")
) -> Threshold:
  """The weight decay where ``log_ratio`` (log ||theta_T|| / ||theta_0||) turns from > 0 to
  <= 0, linearly interpolated in log10(wd); non-finite cells (diverged) are skipped.

  Example:
    >>> t = threshold_along_wd([1e-4, 1e-3, 1e-2, 1e-1], [0.3, 0.1, -0.1, -0.5])
    >>> t.kind, round(t.wd, 6)   # halfway between 1e-3 and 1e-2 in log10
    ('crossing', 0.003162)
  """
  wds = np.asarray(wds, np.float64)
  y = np.asarray(log_ratio, np.float64)
  order = np.argsort(wds)
  wds, y = wds[order], y[order]
  ok = np.isfinite(y)
  wds, y = wds[ok], y[ok]
  if len(y) < 2:
    return Threshold(float(lr), None, "diverged")
  grows = y > 0
  changes = int(np.sum(grows[1:] != grows[:-1]))
  down = np.flatnonzero(grows[:-1] & ~grows[1:])
  if len(down):
    j = int(down[0])
    x0, x1 = np.log10(wds[j]), np.log10(wds[j + 1])
    f = y[j] / (y[j] - y[j + 1])  # y[j] > 0 >= y[j + 1]
    return Threshold(float(lr), float(10.0 ** (x0 + f * (x1 - x0))), "crossing", changes)
  if np.all(grows):
    return Threshold(float(lr), None, "grows throughout", changes)
  if not np.any(grows):
    return Threshold(float(lr), None, "shrinks throughout", changes)
  return Threshold(float(lr), None, "inverted", changes)  # shrinks at small wd, grows above


def thresholds(result: GridResult, lrs: Sequence[float], wds: Sequence[float]) -> list:
  """:func:`threshold_along_wd` for every learning rate of the grid ``lrs x wds``."""
  out = []
  for a in lrs:
    idx = [find_cell(result.lr, result.wd, a, b) for b in wds]
    y = [
        np.log(result.ratio[i]) if i is not None and not result.diverged[i] else np.nan for i in idx
    ]
    out.append(threshold_along_wd(wds, y, a))
  return out
