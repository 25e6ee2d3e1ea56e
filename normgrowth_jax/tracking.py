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
  checkpoint values), ``anchor_angle/<g>`` per group, and ``anchor_step`` = a. This holds a
  copy of the filtered params;
* with ``learning_rate=`` (a number or the optimizer's optax schedule): ``learning_rate``, the
  rate update t applied, ``learning_rate(t)`` (t counts updates from 0, as optax's schedules).

All sums accumulate in float32 or better. The row of update t carries ``step = t + 1``: the
number of updates applied, i.e. the step number of theta_{t+1} (T5X's step after the update),
so a checkpoint at step s holds exactly the rows with step <= s.

:func:`step_row` is the same computation as a pure function of ``(theta_t, delta_t)`` or
``(theta_t, theta_{t+1})`` (used by the T5X adapter).

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

import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normgrowth_jax import norms

BASE_COLUMNS = (
    "step",
    "param_norm",
    "update_norm",
    "alignment",
    "direction_angle",
    "direction_cos",
    "nonfinite",
)
ANCHOR_COLUMNS = ("anchor_cos", "anchor_angle", "anchor_step")
LEARNING_RATE = "learning_rate"  # the column of track_norms(learning_rate=...)
GROUP_QUANTITIES = ("param_norm", "direction_angle")
LearningRate = Union[None, float, jax.Array, Callable[[jax.Array], jax.Array]]
_SEP = "|"  # stands for "/" in state keys: T5X splits state-dict keys on "/".


class NormTrace(NamedTuple):
  """State of :func:`track_norms` (the class name must not end in "State": T5X rule).

  Attributes:
    count: [] updates seen so far (int32; float32 after a T5X restore, dtype kept).
    num_rows: [] rows ever recorded; the next row goes to ``num_rows % history_size``.
    first_nonfinite: [] step of the first non-finite update or row, -1 if none.
    history: ``{column: [history_size]}``; "/" in column names is stored as "|".
    anchor: tuple of the filtered param leaves at the last anchor step; when the anchor is off
      (or no param passes the filter) a [] float32 placeholder, never ``()``.

  No field is ever an empty container: a checkpointer may drop a node without leaves (T5X's
  orbax checkpoints do), and the restored state must have the live state's structure.
  """

  count: jax.Array
  num_rows: jax.Array
  first_nonfinite: jax.Array
  history: dict
  anchor: Any


def _no_anchor() -> jax.Array:
  """``NormTrace.anchor`` without anchor leaves: one [] array, so the node is never empty
  (float32, the dtype T5X's restore cast gives it anyway)."""
  return jnp.zeros((), jnp.float32)


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
        raise ValueError(
            f"Group name {g!r} contains {_SEP!r}, which track_norms reserves; " "rename the group."
        )
      out.append((j, g))
  return out


def _columns(params, keep, group_fn, anchor: bool, learning_rate: bool = False) -> list[str]:
  cols = list(BASE_COLUMNS) + (list(ANCHOR_COLUMNS) if anchor else [])
  cols += [LEARNING_RATE] if learning_rate else []
  if group_fn is not None:
    for g in norms.group_names(params, group_fn, keep):
      cols += [f"{q}/{g}" for q in GROUP_QUANTITIES]
      if anchor:
        cols.append(f"anchor_angle/{g}")
  return cols


def _has_nonfinite(x) -> jax.Array:
  """[] bool: True when the leaf ``x`` holds a NaN or inf (False for integer leaves)."""
  if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
    return jnp.zeros((), bool)
  return ~jnp.all(jnp.isfinite(x))


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


class _Layout(NamedTuple):
  """Static description of the filtered leaves and their groups (from the param paths).

  A *part* is a filtered leaf, or one layer of a filtered scanned stack; sums are taken per
  part once, and columns combine the small per-part vectors (no reduction per group).

  Attributes:
    units: ``[(leaf index, group)]`` of the filtered leaves (group: None, str or Stacked).
    sizes: parts per unit (the layer count of a Stacked leaf, else 1).
    groups: sorted group names.
    member: [1 + len(groups), n_parts] bool; row 0 is every part, row 1 + i group i's parts.
  """

  units: list
  sizes: list
  groups: list
  member: np.ndarray


def _layout(params, keep, group_fn) -> _Layout:
  units = _units(params, keep, group_fn)
  leaves = jax.tree_util.tree_leaves(params)
  sizes, names = [], []
  for j, g in units:
    if isinstance(g, norms.Stacked):
      n = np.shape(leaves[j])[g.axis]
      names += [g.template.format(i) for i in range(n)]
    else:
      n = 1
      names.append(g)
    sizes.append(n)
  groups = sorted({g for g in names if g is not None})
  member = np.array(
      [[True] * len(names)] + [[g == name for g in names] for name in groups], bool
  ).reshape(1 + len(groups), len(names))
  return _Layout(units, sizes, groups, member)


def _low_precision(p, acc) -> bool:
  dt = jnp.result_type(p)
  return jnp.issubdtype(dt, jnp.floating) and jnp.finfo(dt).bits < jnp.finfo(acc).bits


def _new(p, u, new):
  """theta_{t+1} in float32 or better: ``new`` if given, else p + u rounded to p's dtype."""
  if new is None:
    return _applied(p, u)
  return norms.upcast(new, jnp.promote_types(norms.acc_dtype(p), norms.acc_dtype(u)))


def _part_sums(p, u, group, new=None, anchor=None) -> dict:
  """Sums of one filtered leaf, as vectors [n_parts] (n_layers for a Stacked leaf, else 1).

  ``tt``, ``td``, ``dd`` of (theta_t, delta_t); ``new_ss`` = ||theta_{t+1}||^2, which is
  ``tt + 2 td + dd`` unless theta_{t+1} is given or rounded to a narrower dtype (bf16), then
  summed; with ``anchor`` also ``a_tt``, ``a_td``, ``a_dd`` of (theta_a, theta_{t+1} - theta_a).
  """
  axis = group.axis if isinstance(group, norms.Stacked) else None
  vec = lambda v: jnp.reshape(v, (-1,))
  tt, td, dd = norms.pair_sums(p, u, axis)
  out = {"tt": vec(tt), "td": vec(td), "dd": vec(dd)}
  acc = jnp.promote_types(norms.acc_dtype(p), norms.acc_dtype(u))
  summed = new is not None or _low_precision(p, acc)
  if summed or anchor is not None:
    new = _new(p, u, new)
  if summed:
    out["new_ss"] = vec(norms._reduce(norms._sq, (new,), axis))  # pylint: disable=protected-access
  else:
    out["new_ss"] = vec(tt + 2 * td + dd)
  if anchor is not None:
    a_tt, a_td, a_dd = norms.pair_sums(anchor, new - norms.upcast(anchor, new.dtype), axis)
    out.update(a_tt=vec(a_tt), a_td=vec(a_td), a_dd=vec(a_dd))
  return out


def _row_stats(leaves, uleaves, lay: _Layout, new_leaves=None, anchors=None) -> dict:
  """Per-part statistics of the filtered leaves: ``{"pair": PairStats, "new_ss"[, "anchor"],
  "zero"}`` with fields [n_parts]. ``perp`` comes from the one-pass sums; only when some part's
  update is nearly parallel to its params does one ``lax.cond`` (for all parts together) run a
  second pass (:func:`norms.orthogonal_sum_of_squares`) for the parts that need it.

  ``"zero"`` is a [] float32 0 output by that cond (:func:`_zero_of` its results), so it comes
  after every read of the filtered theta_t (see :func:`_after`); being a cond output, XLA
  cannot inline its computation into the consumers."""
  new_leaves = new_leaves or [None] * len(leaves)
  sums = [
      _part_sums(leaves[j], uleaves[j], g, new_leaves[j], None if anchors is None else anchors[k])
      for k, (j, g) in enumerate(lay.units)
  ]
  keys = ("tt", "td", "dd", "new_ss") + (("a_tt", "a_td", "a_dd") if anchors is not None else ())
  cat = {
      k: jnp.concatenate([s[k] for s in sums]) if sums else jnp.zeros((0,), jnp.float32)
      for k in keys
  }
  c, cheap, ok = norms.one_pass_perp(cat["tt"], cat["td"], cat["dd"])
  prefixes = ("",) if anchors is None else ("", "a_")
  cs, cheaps, oks = [c], [cheap], [ok]
  if anchors is not None:
    c_a, cheap_a, ok_a = norms.one_pass_perp(cat["a_tt"], cat["a_td"], cat["a_dd"])
    cs, cheaps, oks = [c, c_a], [cheap, cheap_a], [ok, ok_a]

  def second_pass():
    outs = [[] for _ in prefixes]
    off = 0
    for k, ((j, g), n) in enumerate(zip(lay.units, lay.sizes)):
      axis = g.axis if isinstance(g, norms.Stacked) else None
      p, u = leaves[j], uleaves[j]
      pairs = [(p, u)]
      if anchors is not None:
        new = _new(p, u, new_leaves[j])
        pairs.append((anchors[k], new - norms.upcast(anchors[k], new.dtype)))
      for out, (t, d), cv in zip(outs, pairs, cs):
        cc = cv[off : off + n] if axis is not None else cv[off]
        out.append(jnp.reshape(norms.orthogonal_sum_of_squares(t, d, cc, axis), (-1,)))
      off += n
    perps = tuple(
        jnp.where(o, ch, jnp.concatenate(out).astype(ch.dtype))
        for out, ch, o in zip(outs, cheaps, oks)
    )
    return perps, _zero_of(*perps)

  if sums:
    all_ok = jnp.all(jnp.stack([jnp.all(o) for o in oks]))
    perps, zero = jax.lax.cond(all_ok, lambda: (tuple(cheaps), _zero_of(*cheaps)), second_pass)
  else:
    perps, zero = tuple(cheaps), jnp.zeros((), jnp.float32)
  out = {
      "pair": norms.PairStats(cat["tt"], cat["td"], cat["dd"], perps[0]),
      "new_ss": cat["new_ss"],
      "zero": zero,
  }
  if anchors is not None:
    out["anchor"] = norms.PairStats(cat["a_tt"], cat["a_td"], cat["a_dd"], perps[1])
  return out


def _combine(lay: _Layout, st: dict) -> dict:
  """Row values ``{column: []}`` from :func:`_row_stats`: all parts and each group at once."""
  member = lay.member
  g = norms.combine_by(st["pair"], member)
  angle = norms.angle_from_stats(g)
  new_ss = st["new_ss"]
  pnorm = jnp.sqrt(jnp.sum(jnp.where(member, new_ss[None, :], jnp.zeros((), new_ss.dtype)), axis=1))
  den = jnp.sqrt(g.tt[0] * g.dd[0])
  row = {
      "param_norm": pnorm[0],
      "update_norm": jnp.sqrt(g.dd[0]),
      "alignment": jnp.where(den > 0, g.td[0] / jnp.where(den > 0, den, 1), 0.0),
      "direction_angle": angle[0],
      "direction_cos": jnp.cos(angle[0]),
  }
  a_angle = None
  if "anchor" in st:  # with no filtered leaf: angle 0, as direction_angle
    a_angle = norms.angle_from_stats(norms.combine_by(st["anchor"], member))
    row["anchor_angle"] = a_angle[0]
    row["anchor_cos"] = jnp.cos(a_angle[0])
  for i, name in enumerate(lay.groups, start=1):
    row[f"param_norm/{name}"] = pnorm[i]
    row[f"direction_angle/{name}"] = angle[i]
    if a_angle is not None:
      row[f"anchor_angle/{name}"] = a_angle[i]
  return row


def _flag_nonfinite(row: dict, *flags) -> jax.Array:
  """[] bool: any flag, or any recorded value that is not finite (covers filtered params)."""
  bad = jnp.zeros((), bool)
  for f in flags:
    bad = bad | f
  for v in row.values():
    bad = bad | ~jnp.isfinite(v)
  return bad


def step_row(
    params, updates=None, *, new_params=None, param_filter="all", groups=None
) -> dict[str, jax.Array]:
  """The row :func:`track_norms` records for one update, as a pure function.

  Give either the update (``params`` = theta_t, ``updates`` = delta_t, as the hook sees them)
  or the params after it (``new_params`` = theta_{t+1}; then delta_t = theta_{t+1} - theta_t in
  float32 or better, and ``param_norm`` is the norm of ``new_params`` exactly). This is the
  computation the hook runs; the T5X adapter (:mod:`normgrowth_jax.t5x.quantities`) uses it.

  Args:
    params: theta_t, any pytree.
    updates: delta_t (same structure), or None when ``new_params`` is given.
    new_params: theta_{t+1} (same structure), or None when ``updates`` is given.
    param_filter: "all", "paper" or a callable ``(path, array) -> bool``.
    groups: None, "layers", ``{name: regex}`` or a group function (see :mod:`norms`).

  Returns:
    ``{"param_norm", "update_norm", "alignment", "direction_angle", "direction_cos",
    "param_norm/<g>", "direction_angle/<g>", "nonfinite"}`` as [] float32 (``nonfinite`` is 1.0
    when an update leaf, an unfiltered param leaf or a returned value is not finite). Traceable.

  Example:
    >>> import jax.numpy as jnp
    >>> old = {"encoder": {"layers_0": {"w": jnp.array([3.0, 0.0])}}}
    >>> new = {"encoder": {"layers_0": {"w": jnp.array([3.0, 4.0])}}}
    >>> row = step_row(old, new_params=new, param_filter="paper", groups="layers")
    >>> float(row["param_norm"]), float(row["update_norm"]), float(row["alignment"])
    (5.0, 4.0, 0.0)
  """
  if (updates is None) == (new_params is None):
    raise ValueError(
        "step_row needs exactly one of updates= (delta_t) or new_params= " "(theta_{t+1})."
    )
  keep = norms.resolve_param_filter(param_filter)
  group_fn = norms.resolve_groups(groups)
  norms.check_selection(params, param_filter, groups, where="step_row")
  leaves = jax.tree_util.tree_leaves(params)
  if new_params is not None:
    new_leaves = jax.tree_util.tree_leaves(new_params)
    if len(new_leaves) != len(leaves):
      raise ValueError("params and new_params must have the same structure.")
    uleaves = [
        n.astype(norms.acc_dtype(p)) - p.astype(norms.acc_dtype(p))
        for p, n in zip(leaves, new_leaves)
    ]
  else:
    uleaves = jax.tree_util.tree_leaves(updates)
    new_leaves = [None] * len(leaves)
    if len(uleaves) != len(leaves):
      raise ValueError("params and updates must have the same structure.")
  lay = _layout(params, keep, group_fn)
  row = _combine(lay, _row_stats(leaves, uleaves, lay, new_leaves))
  kept = {j for j, _ in lay.units}
  flags = [_has_nonfinite(u) for u in uleaves]
  flags += [_has_nonfinite(p) for j, p in enumerate(leaves) if j not in kept]
  row["nonfinite"] = _flag_nonfinite(row, *flags)
  return {k: jnp.asarray(v, jnp.float32) for k, v in row.items()}


def _probe(p, u) -> jax.Array:
  """[] sum of ``p * u`` in float32 or better: not finite when ``p`` or ``u`` holds a NaN or
  inf (or the products overflow, as the filtered leaves' own sums would). One fused reduction
  per leaf; a NaN/inf check of each array compiles to two passes with a boolean array each."""
  acc = jnp.promote_types(norms.acc_dtype(p), norms.acc_dtype(u))
  return jnp.sum(norms.upcast(p, acc) * norms.upcast(u, acc))


def _zero_of(*vals) -> jax.Array:
  """A float32 [] 0 that XLA cannot fold, computed from the arrays ``vals``."""
  s = jnp.zeros((), jnp.float32)
  for v in vals:
    s = s + jnp.sum(jnp.asarray(v).astype(jnp.float32))
  return jnp.where(jnp.isnan(s), 0.0, jnp.minimum(jnp.abs(s), 0.0))


def _after(u, zero):
  """``u`` unchanged (bit for bit), but computed from ``zero`` (the ``"zero"`` of
  :func:`_row_stats`, output after every read of theta_t): a real data dependency.

  The hook reads theta_t; the caller then overwrites theta_t in place (donated params). XLA
  only updates a buffer in place when every read of it provably comes first, and it proves
  that from data dependencies (``optimization_barrier`` is expanded away before copy
  insertion on CPU, and an always-true ``select`` gets folded). Without this, a read of a leaf
  that the model's own gradient does not need (e.g. the embedding's non-finite check) costs a
  full copy of that leaf for the whole step. ``zero`` is added to the bit pattern of ``u``
  (integer add: exact for NaN, inf, -0.0 and denormals, which float arithmetic on XLA CPU
  would flush); it fuses into the apply. All leaves share one ``zero``: per-leaf zeros cost
  a dozen HLO ops per leaf, which made the T5-base train step compile 1.7x slower.
  """
  dt = jnp.result_type(u)
  if not jnp.issubdtype(dt, jnp.floating):
    return u
  bits = jnp.dtype(f"uint{8 * jnp.dtype(dt).itemsize}")
  return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(u, bits) + zero.astype(bits), dt)


def _zeros_like_output(fn):
  shapes = jax.eval_shape(fn)
  return lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _settings(size: int, columns) -> str:
  groups = sorted(c[len("param_norm/") :] for c in columns if c.startswith("param_norm/"))
  shown = ", ".join(groups[:3]) + (f", ... ({len(groups)} in all)" if len(groups) > 3 else "")
  anchor = ", anchor columns" if "anchor_cos" in columns else ""
  rate = f", {LEARNING_RATE} column" if LEARNING_RATE in columns else ""
  return f"history_size={size}, groups [{shown or 'none'}]{anchor}{rate}"


def _check_trace(trace, size: int, columns) -> None:
  """Raises ValueError (one line) when ``trace`` (a NormTrace, its state dict or checkpoint
  metadata with shapes) has another buffer length or column set than ``size``/``columns``."""
  hist = _get(trace, "history")
  have_cols = sorted(_column(k) for k in hist)
  have_size = int(np.shape(hist["step"])[0])
  if have_size != size or have_cols != sorted(columns):
    raise ValueError(
        f"track_norms: the restored norm trace was recorded with {_settings(have_size, have_cols)}"
        f" but this hook is configured with {_settings(size, columns)}; resume with the run's "
        "own track_norms settings (history_size, param_filter, groups, anchor_every, "
        "learning_rate; a trainer run without the learning_rate column: "
        "make_optimizer.record_learning_rate=False) or start the new settings in a new "
        "model_dir."
    )


def check_resumable(stored_opt_state, fresh_opt_state) -> None:
  """Refuses to resume when a stored trace's buffer length or column set differs from a fresh one.

  Args:
    stored_opt_state: the optimizer state as stored (arrays, a state dict, or a checkpoint's
      metadata tree whose leaves have ``.shape``), holding the NormTraces of the run.
    fresh_opt_state: the state ``opt.init(params)`` gives with the current settings.

  Raises:
    ValueError: one line naming both settings and the fix (the same as ``update`` raises when
      it is handed such a state).

  Example:
    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.ones(3)}
    >>> old = track_norms(history_size=16).init(params)
    >>> check_resumable(old, track_norms(history_size=8).init(params))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: track_norms: the restored norm trace was recorded with history_size=16, groups [none] but this hook is configured with history_size=8, groups [none]; ...
  """
  stored, fresh = find_traces(stored_opt_state), find_traces(fresh_opt_state)
  for (_, a), (_, b) in zip(stored, fresh):
    hist = _get(b, "history")
    _check_trace(a, int(np.shape(hist["step"])[0]), [_column(k) for k in hist])


def track_norms(
    param_filter="all",
    groups=None,
    every: int = 1,
    history_size: int = 8192,
    anchor_every: Optional[int] = None,
    sink=None,
    stream_every_rows: int = 1,
    learning_rate: LearningRate = None,
) -> optax.GradientTransformation:
  """Pass-through optax transformation that records the parameter-norm trajectory.

  Put it last in ``optax.chain`` and call ``update(grads, state, params)`` with params.

  Memory: the hook keeps no copy of the params (unless ``anchor_every`` is set). Every
  returned update leaf depends on one scalar output after all of the hook's reads of theta_t
  (see :func:`_after`), so the caller's ``apply_updates`` runs after them: XLA then updates
  donated params in place without copying them.

  Args:
    param_filter: "all", "paper" (encoder, non-scalar, no embeddings) or a callable
      ``(path, array) -> bool`` choosing which params count (see :mod:`normgrowth_jax.norms`).
    groups: None, "layers" (one group per transformer layer, scanned stacks split per layer),
      a mapping ``{name: regex}`` or a group function ``(path, array) -> name | Stacked | None``.
      Groups only see params that pass ``param_filter``.
    every: record a row when ``step % every == 0`` (and at the first non-finite step).
    history_size: preallocated rows (a ring buffer; see the module docstring). The history
      costs ``history_size * n_columns * 4`` bytes (8192 rows x 19 columns: 0.6 MB).
    anchor_every: if set, also record the cosine/angle to an anchor copy of the params,
      refreshed every ``anchor_every`` steps (holds a copy of the filtered params).
    sink: optional object with ``write_rows(columns: dict[str, np.ndarray])`` (see
      :mod:`normgrowth_jax.sinks`), called from jit through ``jax.debug.callback`` once per
      ``stream_every_rows`` recorded rows with those rows; it must return quickly.
    stream_every_rows: rows per sink call (>1 batches host transfers; the last partial batch
      is written by the sink's ``flush(opt_state)``/``close(opt_state)`` from the state).
    learning_rate: None, or the optimizer's rate (a number or an optax schedule): then rows
      also hold ``learning_rate``, the rate update t applied (``learning_rate(t)``, float32).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`NormTrace`.

  Example:
    >>> params, schedule = {"w": jnp.ones(2)}, optax.linear_schedule(1.0, 0.0, 4)
    >>> opt = optax.chain(optax.sgd(schedule), track_norms(learning_rate=schedule))
    >>> state = opt.init(params)
    >>> state = opt.update(params, opt.update(params, state, params)[1], params)[1]
    >>> read_trace(state)["learning_rate"].tolist()  # schedule(0), schedule(1)
    [1.0, 0.75]
  """
  _check_hook_arguments(every, history_size, anchor_every, stream_every_rows)
  hook = _Hook(
      keep=norms.resolve_param_filter(param_filter),
      group_fn=norms.resolve_groups(groups),
      param_filter=param_filter,
      groups=groups,
      every=every,
      history_size=history_size,
      anchor_every=anchor_every,
      sink=sink,
      stream_every_rows=stream_every_rows,
      learning_rate=learning_rate,
  )
  return optax.GradientTransformation(
      functools.partial(_init_trace, hook), functools.partial(_update_trace, hook)
  )


class _Hook(NamedTuple):
  """:func:`track_norms`'s settings, with the param filter and groups resolved."""

  keep: Callable
  group_fn: Optional[Callable]
  param_filter: Any
  groups: Any
  every: int
  history_size: int
  anchor_every: Optional[int]
  sink: Any
  stream_every_rows: int
  learning_rate: LearningRate

  @property
  def use_anchor(self) -> bool:
    return self.anchor_every is not None

  def columns(self, params) -> list[str]:
    return _columns(
        params, self.keep, self.group_fn, self.use_anchor, self.learning_rate is not None
    )


def _check_hook_arguments(every, history_size, anchor_every, stream_every_rows) -> None:
  if every < 1 or history_size < 1:
    raise ValueError(f"every ({every}) and history_size ({history_size}) must be >= 1.")
  if anchor_every is not None and anchor_every < 1:
    raise ValueError(f"anchor_every must be None or >= 1, got {anchor_every}.")
  if stream_every_rows < 1 or history_size % stream_every_rows:
    raise ValueError(
        f"stream_every_rows ({stream_every_rows}) must be >= 1 and divide "
        f"history_size ({history_size})."
    )


def _init_trace(hook: _Hook, params) -> NormTrace:
  """The empty trace: zeroed history columns and, with the anchor, a copy of theta_0."""
  norms.check_selection(params, hook.param_filter, hook.groups, where="track_norms")
  history = {
      _state_key(c): jnp.zeros(
          (hook.history_size,), jnp.int32 if c in ("step", "anchor_step") else jnp.float32
      )
      for c in hook.columns(params)
  }
  anchor = _no_anchor()
  units = _units(params, hook.keep, hook.group_fn)
  if hook.use_anchor and units:
    leaves = jax.tree_util.tree_leaves(params)
    anchor = tuple(jnp.array(leaves[j]) for j, _ in units)
  return NormTrace(
      count=jnp.zeros((), jnp.int32),
      num_rows=jnp.zeros((), jnp.int32),
      first_nonfinite=-jnp.ones((), jnp.int32),
      history=history,
      anchor=anchor,
  )


def _update_trace(hook: _Hook, updates, state: NormTrace, params=None):
  """The hook's update: ``(updates unchanged, state with the row of update t written)``."""
  if params is None:
    raise ValueError("track_norms needs the params: call opt.update(updates, state, params).")
  # A restored state from other settings: refuse at trace time, before a row is written.
  _check_trace(state, hook.history_size, hook.columns(params))
  lay = _layout(params, hook.keep, hook.group_fn)
  leaves = jax.tree_util.tree_leaves(params)
  uleaves, utree = jax.tree_util.tree_flatten(updates)
  if len(uleaves) != len(leaves):
    raise ValueError("track_norms: updates and params must have the same structure.")
  t = state.count.astype(jnp.int32)
  step = t + 1
  anchor, anchor_step = _refreshed_anchor(hook, lay, leaves, state.anchor, t)
  # A filtered leaf's non-finite update or param shows in its sums (so in the row); other
  # leaves get a flag. With every > 1 the updates are checked each step (a first non-finite
  # step is recorded) and everything else runs only on recording steps, under one cond.
  kept = {j for j, _ in lay.units}
  others = [j for j in range(len(leaves)) if j not in kept]
  bad_update, do = _recording_step(hook.every, uleaves, state.first_nonfinite, step)
  st, probes = _measure(leaves, uleaves, lay, others, anchor if hook.use_anchor else None, do)
  out_leaves = _ordered_after_reads(uleaves, others, probes, st["zero"])
  flags = [~jnp.isfinite(v) for v in probes]
  row = _combine(lay, st)
  nonfinite = _flag_nonfinite(row, bad_update, *flags)
  row.update(_row_counters(hook, step, nonfinite, anchor_step, t))
  idx = state.num_rows.astype(jnp.int32) % hook.history_size
  history = _write_row(state.history, row, idx, do)
  new_state = _next_trace(hook, state, history, anchor, do, nonfinite, step)
  return jax.tree_util.tree_unflatten(utree, out_leaves), new_state


def _refreshed_anchor(hook: _Hook, lay: _Layout, leaves, anchor, t):
  """``(anchor, anchor_step)`` for update t: with the anchor on, theta_t is copied in at every
  multiple of ``anchor_every`` (anchor_step: that multiple); else ``(anchor, None)``."""
  if not hook.use_anchor:
    return anchor, None
  if lay.units:
    refresh = (t % hook.anchor_every) == 0
    anchor = jax.lax.cond(
        refresh,
        lambda: tuple(leaves[j].astype(a.dtype) for (j, _), a in zip(lay.units, anchor)),
        lambda: anchor,
    )
  return anchor, (t // hook.anchor_every) * hook.anchor_every


def _recording_step(every: int, uleaves, first_nonfinite, step):
  """``(bad_update, do)``: with ``every`` > 1 whether an update leaf is not finite and whether
  this step records (a multiple of ``every``, or the first non-finite update); with
  ``every`` = 1 ``(False, None)``: every step records, the sums show any NaN/inf."""
  bad_update = jnp.zeros((), bool)
  if every == 1:
    return bad_update, None
  for u in uleaves:
    bad_update = bad_update | _has_nonfinite(u)
  return bad_update, ((step % every) == 0) | ((first_nonfinite < 0) & bad_update)


def _measure(leaves, uleaves, lay: _Layout, others, anchors, do):
  """``(row stats, probes)``: :func:`_row_stats` of the filtered leaves and a :func:`_probe`
  of each leaf in ``others``; under one cond on ``do`` (zeros when False) unless it is None."""

  def measure():
    probes = [_probe(leaves[j], uleaves[j]) for j in others]
    st = _row_stats(leaves, uleaves, lay, anchors=anchors)
    return st, probes

  if do is None:
    return measure()
  return jax.lax.cond(do, measure, _zeros_like_output(measure))


def _ordered_after_reads(uleaves, others, probes, zero):
  """The update leaves, each tied after every read of theta_t (see :func:`_after`): the
  filtered leaves' through the stats' ``zero``, each leaf in ``others`` through its probe."""
  zeros = dict(zip(others, map(_zero_of, probes)))
  return [_after(u, zeros.get(j, zero)) for j, u in enumerate(uleaves)]


def _row_counters(hook: _Hook, step, nonfinite, anchor_step, t) -> dict:
  """The row's columns besides the measured ones: step, nonfinite, anchor_step, learning_rate."""
  out = {"step": step, "nonfinite": nonfinite.astype(jnp.float32)}
  if anchor_step is not None:
    out["anchor_step"] = anchor_step
  if hook.learning_rate is not None:
    out[LEARNING_RATE] = _rate_of_update(hook.learning_rate, t)
  return out


def _rate_of_update(learning_rate: LearningRate, t) -> jax.Array:
  """[] float32: the rate update t applied, ``learning_rate(t)`` for a schedule.

  Example:
    >>> float(_rate_of_update(lambda count: 1.0 / (1 + count), jnp.int32(3)))
    0.25
  """
  rate = learning_rate(t) if callable(learning_rate) else learning_rate
  return jnp.asarray(rate, jnp.float32)


def _write_row(history: dict, row: dict, idx, do) -> dict:
  """``history`` with ``row`` in slot ``idx`` (the slot kept as it was when ``do`` is False;
  ``do`` None: always written)."""
  out = {}
  for key, col in history.items():
    val = jnp.asarray(row[_column(key)]).astype(col.dtype)
    if do is not None:
      val = jnp.where(do, val, col[idx])
    out[key] = jax.lax.dynamic_update_slice(col, val[None], (idx,))
  return out


def _next_trace(hook: _Hook, state: NormTrace, history, anchor, do, nonfinite, step) -> NormTrace:
  """The trace after update t (its row written into ``history`` when ``do``, None: always),
  streaming the rows to the sink when a block of them is complete."""
  recorded = True if do is None else do
  num_rows = _bump(state.num_rows, jnp.asarray(recorded).astype(jnp.int32))
  first = jnp.where(
      recorded & nonfinite & (state.first_nonfinite < 0), step, state.first_nonfinite
  ).astype(state.first_nonfinite.dtype)
  if hook.sink is not None:
    _emit(hook, history, num_rows, recorded)
  return NormTrace(
      count=_bump(state.count),
      num_rows=num_rows,
      first_nonfinite=first,
      history=history,
      anchor=anchor,
  )


def _emit(hook: _Hook, history: dict, num_rows, recorded) -> None:
  """Sends the last ``stream_every_rows`` rows to the sink once that many were recorded."""
  k = hook.stream_every_rows
  n = num_rows.astype(jnp.int32)
  start = (n - k) % hook.history_size
  block = {_column(key): jax.lax.dynamic_slice(col, (start,), (k,)) for key, col in history.items()}
  send = lambda b: jax.debug.callback(hook.sink.write_rows, b)
  if k == 1 and recorded is True:
    send(block)
  else:
    jax.lax.cond(recorded & (n % k == 0), send, lambda b: None, block)


# ----------------------------------------------------------------------------- reading


def _is_trace(x) -> bool:
  if isinstance(x, NormTrace):
    return True
  if isinstance(x, Mapping):
    h = x.get("history")
    return (
        "count" in x
        and "num_rows" in x
        and isinstance(h, Mapping)
        and "step" in h
        and "param_norm" in h
    )
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
    raise ValueError(
        "No NormTrace found in the optimizer state: put track_norms(...) last "
        "in the optax chain (or pass which= matching its path)."
    )
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
