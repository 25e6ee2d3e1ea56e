"""The norm-tracking optax hook: a pass-through transformation that records a trajectory.

``track_norms(...)`` goes *last* in an optax chain: it returns the updates unchanged and, on
recorded steps, computes from the current params theta_t and the final update delta_t

* ``param_norm``      ||theta_{t+1}|| with theta_{t+1} = optax.apply_updates(theta_t, delta_t)
                      (exactly the params the run holds next; bf16 params are rounded to bf16);
* ``update_norm``     ||delta_t||;
* ``alignment``       cos(delta_t, theta_t);
* ``direction_angle`` the angle between theta_t and theta_t + delta_t (radians), from delta's
                      component orthogonal to theta (accurate for 1e-7 relative updates),
                      and ``direction_cos`` = cos(direction_angle);
* ``param_norm/<g>``  and ``direction_angle/<g>`` per group g;
* ``nonfinite``       1.0 when the update or the params (filtered or not) hold a NaN/inf, or a
                      recorded number is not finite;
* with ``anchor_every=K``: ``anchor_cos`` / ``anchor_angle`` between theta_{t+1} and the anchor
  theta_a (a = the last multiple of K before t+1; so with every=K these are checkpoint-to-
  checkpoint values) and ``anchor_step`` = a. This holds a copy of the filtered params.

All sums accumulate in float32 or better. The row of update t carries ``step = t + 1``: the
number of updates applied, i.e. the step number of theta_{t+1} (T5X's step after the update),
so a checkpoint at step s holds exactly the rows with step <= s.

Recording: a row is written when ``step % every == 0``, and additionally at the first step
whose update holds a NaN/inf (so the caller can stop there; ``first_nonfinite_step`` gives it).
Everything happens inside jit; nothing goes to the host unless a ``sink`` is given.

History: ``history_size`` preallocated rows per column live in the state. When more rows are
recorded the history is a ring buffer: the oldest rows are overwritten, and
:func:`read_trace` returns the last ``history_size`` rows in step order. Pick
``history_size >= total_steps / every`` to keep a whole run (the default 8192 holds 524,288
steps at every=64; 524,288 steps at every=100 need 5,243 rows), or stream rows with a sink.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> from normgrowth_jax import tracking
  >>> params = {"w": jnp.ones((3,))}
  >>> opt = optax.chain(optax.sgd(0.1), tracking.track_norms(history_size=16))
  >>> state = opt.init(params)
  >>> for _ in range(3):
  ...   updates, state = opt.update({"w": jnp.ones((3,))}, state, params)
  ...   params = optax.apply_updates(params, updates)
  >>> trace = tracking.read_trace(state)
  >>> trace["step"].tolist(), [round(float(x), 4) for x in trace["param_norm"]]
  ([1, 2, 3], [1.5588, 1.3856, 1.2124])
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normgrowth_jax import norms

BASE_COLUMNS = ("step", "param_norm", "update_norm", "alignment", "direction_angle",
                "direction_cos", "nonfinite")
ANCHOR_COLUMNS = ("anchor_cos", "anchor_angle", "anchor_step")
GROUP_QUANTITIES = ("param_norm", "direction_angle")
_SEP = "|"  # stands for "/" in state keys: T5X splits state-dict keys on "/".


class NormTrace(NamedTuple):
  """State of :func:`track_norms` (the class name must not end in "State": T5X rule).

  Attributes:
    count: [] updates seen so far (int32; float32 after a T5X restore, dtype kept).
    num_rows: [] rows ever recorded; the next row goes to ``num_rows % history_size``.
    first_nonfinite: [] step of the first non-finite update or row, -1 if none.
    history: ``{column: [history_size]}``; "/" in column names is stored as "|".
    anchor: tuple of the filtered param leaves at the last anchor step, () when off.
  """
  count: jax.Array
  num_rows: jax.Array
  first_nonfinite: jax.Array
  history: dict
  anchor: tuple


def _state_key(column: str) -> str:
  return column.replace("/", _SEP)


def _column(key: str) -> str:
  return key.replace(_SEP, "/")


def _bump(x, by=1):
  """x + by in x's own dtype (keeps a float32-restored counter float32)."""
  return (x + by).astype(x.dtype)


def _units(params, keep, group_fn):
  """Static description of the filtered leaves: [(leaf index, group or None)]."""
  out = []
  for j, (path, x) in enumerate(norms.named_leaves(params)):
    if keep(path, x):
      g = group_fn(path, x) if group_fn is not None else None
      if isinstance(g, str) and _SEP in g:
        raise ValueError(f"Group name {g!r} contains {_SEP!r}, which track_norms reserves; "
                         "rename the group.")
      out.append((j, g))
  return out


def _columns(params, keep, group_fn, anchor: bool) -> list[str]:
  cols = list(BASE_COLUMNS) + (list(ANCHOR_COLUMNS) if anchor else [])
  if group_fn is not None:
    for g in norms.group_names(params, group_fn, keep):
      cols += [f"{q}/{g}" for q in GROUP_QUANTITIES]
  return cols


def _any_nonfinite(tree) -> jax.Array:
  """True when some leaf holds a NaN or inf (0 * x is NaN exactly for those)."""
  bad = jnp.zeros((), bool)
  for x in jax.tree_util.tree_leaves(tree):
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
      bad = bad | ~jnp.isfinite(jnp.sum((x * 0).astype(norms.acc_dtype(x))))
  return bad


def _applied(p, u):
  """optax.apply_updates for one leaf, rounded to p's dtype even inside jit.

  XLA may keep excess precision for a bf16 add that feeds a float32 reduction; reduce_precision
  forces the rounding the stored params get. Returns the float32-or-better value.
  """
  dt = jnp.result_type(p)
  acc = jnp.promote_types(norms.acc_dtype(p), norms.acc_dtype(u))
  x = norms.upcast(p, acc) + norms.upcast(u, acc)
  if jnp.issubdtype(dt, jnp.floating) and jnp.finfo(dt).bits < jnp.finfo(acc).bits:
    fi = jnp.finfo(dt)
    x = jax.lax.reduce_precision(x, exponent_bits=fi.nexp, mantissa_bits=fi.nmant)
  return x


def _split(stats: norms.PairStats, n: int) -> list[norms.PairStats]:
  return [norms.PairStats(*(f[i] for f in stats)) for i in range(n)]


def _row_values(params, updates, units, anchor, with_groups: bool):
  """Computes every recorded quantity; returns {column: scalar}."""
  leaves = jax.tree_util.tree_leaves(params)
  uleaves = jax.tree_util.tree_leaves(updates)
  new_leaves = [_applied(p, u) for p, u in zip(leaves, uleaves)]
  parts, new_ss = [], []          # per unit (leaf or stacked slice)
  by_group: dict[str, list] = {}
  anchor_parts = []
  for k, (j, g) in enumerate(units):
    axis = g.axis if isinstance(g, norms.Stacked) else None
    st = norms.unit_pair_stats(leaves[j], uleaves[j], axis)
    ss = norms._reduce(norms._sq, (new_leaves[j],), axis)
    if anchor:
      a = anchor[k]
      a_st = norms.unit_pair_stats(a, new_leaves[j] - norms.upcast(a, new_leaves[j].dtype), axis)
    if axis is None:
      pieces = [(st, ss, g)] if not anchor else [(st, ss, g, a_st)]
    else:
      n = leaves[j].shape[axis]
      sts = _split(st, n)
      a_sts = _split(a_st, n) if anchor else [None] * n
      pieces = [(sts[i], ss[i], g.template.format(i), a_sts[i]) for i in range(n)]
    for piece in pieces:
      parts.append(piece[0])
      new_ss.append(piece[1])
      if anchor:
        anchor_parts.append(piece[3])
      if with_groups and piece[2] is not None:
        by_group.setdefault(piece[2], []).append(piece[:2])
  tot = norms.combine_pair_stats(parts)
  angle = norms.angle_from_stats(tot)
  den = jnp.sqrt(tot.tt * tot.dd)
  row = {
      "param_norm": jnp.sqrt(sum(new_ss) if new_ss else jnp.zeros(())),
      "update_norm": jnp.sqrt(tot.dd),
      "alignment": jnp.where(den > 0, tot.td / jnp.where(den > 0, den, 1), 0.0),
      "direction_angle": angle,
      "direction_cos": jnp.cos(angle),
  }
  if anchor:
    a_angle = norms.angle_from_stats(norms.combine_pair_stats(anchor_parts))
    row["anchor_angle"] = a_angle
    row["anchor_cos"] = jnp.cos(a_angle)
  for g, items in by_group.items():
    row[f"param_norm/{g}"] = jnp.sqrt(sum(s for _, s in items))
    row[f"direction_angle/{g}"] = norms.angle_from_stats(
        norms.combine_pair_stats([p for p, _ in items]))
  return row


def track_norms(param_filter="all", groups=None, every: int = 1, history_size: int = 8192,
                anchor_every: Optional[int] = None, sink=None,
                stream_every_rows: int = 1) -> optax.GradientTransformation:
  """Pass-through optax transformation that records the parameter-norm trajectory.

  Put it last in ``optax.chain`` and call ``update(grads, state, params)`` with params.

  Args:
    param_filter: "all", "paper" (encoder, non-scalar, no embeddings) or a callable
      ``(path, array) -> bool`` choosing which params count (see :mod:`normgrowth_jax.norms`).
    groups: None, "layers" (one group per transformer layer, scanned stacks split per layer),
      a mapping ``{name: regex}`` or a group function ``(path, array) -> name | Stacked | None``.
      Groups only see params that pass ``param_filter``.
    every: record a row when ``step % every == 0`` (and at the first non-finite step).
    history_size: preallocated rows (a ring buffer; see the module docstring).
    anchor_every: if set, also record the cosine/angle to an anchor copy of the params,
      refreshed every ``anchor_every`` steps (holds a copy of the filtered params).
    sink: optional object with ``write_rows(columns: dict[str, np.ndarray])`` (see
      :mod:`normgrowth_jax.sinks`), called from jit through ``jax.debug.callback`` once per
      ``stream_every_rows`` recorded rows with those rows; it must return quickly.
    stream_every_rows: rows per sink call (>1 batches host transfers; the last partial batch
      is written by the sink's ``flush(opt_state)``/``close(opt_state)`` from the state).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`NormTrace`.
  """
  if every < 1 or history_size < 1:
    raise ValueError(f"every ({every}) and history_size ({history_size}) must be >= 1.")
  if anchor_every is not None and anchor_every < 1:
    raise ValueError(f"anchor_every must be None or >= 1, got {anchor_every}.")
  if stream_every_rows < 1 or history_size % stream_every_rows:
    raise ValueError(f"stream_every_rows ({stream_every_rows}) must be >= 1 and divide "
                     f"history_size ({history_size}).")
  keep = norms.resolve_param_filter(param_filter)
  group_fn = norms.resolve_groups(groups)
  use_anchor = anchor_every is not None

  def init_fn(params):
    cols = _columns(params, keep, group_fn, use_anchor)
    history = {_state_key(c): jnp.zeros((history_size,), jnp.int32 if c in (
        "step", "anchor_step") else jnp.float32) for c in cols}
    anchor = ()
    if use_anchor:
      leaves = jax.tree_util.tree_leaves(params)
      anchor = tuple(jnp.array(leaves[j]) for j, _ in _units(params, keep, group_fn))
    return NormTrace(count=jnp.zeros((), jnp.int32), num_rows=jnp.zeros((), jnp.int32),
                     first_nonfinite=-jnp.ones((), jnp.int32), history=history, anchor=anchor)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("track_norms needs the params: call opt.update(updates, state, params).")
    units = _units(params, keep, group_fn)
    t = state.count.astype(jnp.int32)
    step = t + 1
    bad_update = _any_nonfinite(updates)
    first_bad = (state.first_nonfinite < 0) & bad_update

    anchor, anchor_step = state.anchor, None
    if use_anchor:
      leaves = jax.tree_util.tree_leaves(params)
      refresh = (t % anchor_every) == 0
      anchor = jax.lax.cond(refresh, lambda: tuple(
          leaves[j].astype(a.dtype) for (j, _), a in zip(units, state.anchor)),
                            lambda: state.anchor)
      anchor_step = (t // anchor_every) * anchor_every

    def record(history, num_rows):
      row = _row_values(params, updates, units, anchor, group_fn is not None)
      kept = {j for j, _ in units}
      nonfinite = bad_update | _any_nonfinite(   # filtered params are covered by the row
          [x for j, x in enumerate(jax.tree_util.tree_leaves(params)) if j not in kept])
      for v in row.values():
        nonfinite = nonfinite | ~jnp.isfinite(v)
      row["step"] = step
      row["nonfinite"] = nonfinite.astype(jnp.float32)
      if use_anchor:
        row["anchor_step"] = anchor_step
      idx = (num_rows.astype(jnp.int32)) % history_size
      new_hist = {}
      for key, col in history.items():
        val = jnp.asarray(row[_column(key)]).astype(col.dtype)
        new_hist[key] = col.at[idx].set(val)
      new_rows = _bump(num_rows)
      if sink is not None:
        _emit(new_hist, new_rows)
      first = jnp.where(nonfinite & (state.first_nonfinite < 0), step,
                        state.first_nonfinite).astype(state.first_nonfinite.dtype)
      return new_hist, new_rows, first

    def _emit(hist, n_rows):
      k = stream_every_rows
      n = n_rows.astype(jnp.int32)

      def send():
        start = (n - k) % history_size
        block = {_column(key): jax.lax.dynamic_slice(col, (start,), (k,))
                 for key, col in hist.items()}
        jax.debug.callback(sink.write_rows, block)

      if k == 1:
        send()
      else:
        jax.lax.cond(n % k == 0, send, lambda: None)

    def skip(history, num_rows):
      return history, num_rows, state.first_nonfinite

    if every == 1:
      history, num_rows, first = record(state.history, state.num_rows)
    else:
      do = ((step % every) == 0) | first_bad
      history, num_rows, first = jax.lax.cond(do, record, skip, state.history, state.num_rows)
    new_state = NormTrace(count=_bump(state.count), num_rows=num_rows,
                          first_nonfinite=first, history=history, anchor=anchor)
    return updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- reading

def _is_trace(x) -> bool:
  if isinstance(x, NormTrace):
    return True
  if isinstance(x, Mapping):
    h = x.get("history")
    return ("count" in x and "num_rows" in x and isinstance(h, Mapping)
            and "step" in h and "param_norm" in h)
  return False


def find_traces(opt_state) -> list[tuple[str, Any]]:
  """All NormTrace nodes (or their state-dict forms) in a nested optimizer state.

  Walks any pytree (optax chain tuples, inject_hyperparams, MultiSteps, flax structs) and
  dicts, e.g. a T5X/flax state dict where the NamedTuple became ``{field: value}``.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_trace)
  return [(norms.path_str(p), x) for p, x in flat if _is_trace(x)]


def _get(trace, name):
  return getattr(trace, name) if isinstance(trace, NormTrace) else trace[name]


def read_trace(opt_state, which: Optional[str] = None) -> dict[str, np.ndarray]:
  """Recorded rows, in step order, of the trace found anywhere inside ``opt_state``.

  Args:
    opt_state: an optimizer state (or a state dict / restored checkpoint tree) holding one
      :class:`NormTrace`.
    which: if several traces exist, a substring of the wanted trace's path.

  Returns:
    ``{column: np.ndarray[n_rows]}`` with ``step`` (int64), ``param_norm``, ``update_norm``,
    ``alignment``, ``direction_angle``, ``direction_cos``, ``nonfinite`` (bool),
    ``param_norm/<group>``, ``direction_angle/<group>`` (+ anchor columns). After the ring
    buffer wrapped, only the last ``history_size`` rows remain (still in step order).
  """
  found = find_traces(opt_state)
  if which is not None:
    found = [(p, t) for p, t in found if which in p]
  if not found:
    raise ValueError("No NormTrace found in the optimizer state: put track_norms(...) last "
                     "in the optax chain (or pass which= matching its path).")
  if len(found) > 1:
    raise ValueError(f"Several NormTraces found at {[p for p, _ in found]}; pass which=.")
  trace = found[0][1]
  hist = {_column(k): np.asarray(v) for k, v in _get(trace, "history").items()}
  size = len(hist["step"])
  n = int(np.asarray(_get(trace, "num_rows")))
  order = np.arange(n) if n <= size else (np.arange(size) + n) % size
  out = {}
  for c, v in hist.items():
    v = v[order]
    if c in ("step", "anchor_step"):
      v = np.rint(v).astype(np.int64)
    elif c == "nonfinite":
      v = v > 0.5
    out[c] = v
  return out


def first_nonfinite_step(opt_state, which: Optional[str] = None) -> Optional[int]:
  """Step of the first non-finite update or recorded value, or None if there was none."""
  found = find_traces(opt_state)
  if which is not None:
    found = [(p, t) for p, t in found if which in p]
  if len(found) != 1:
    raise ValueError(f"Expected one NormTrace, found {[p for p, _ in found]}; pass which=.")
  v = int(np.rint(np.asarray(_get(found[0][1], "first_nonfinite"))))
  return None if v < 0 else v
