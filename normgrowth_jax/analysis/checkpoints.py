"""Checkpoint-level trajectory quantities from a run's saved checkpoints, one at a time.

Reads three layouts from a model directory (local path; copy gs:// runs down first):

* ``t5x``: T5X's legacy checkpointer, ``checkpoint_<step>/checkpoint`` is a msgpack file
  ``{"version": 3, "optimizer": {"target": params, "state": ...}}`` (flax serialization);
  each array is stored inline, or as a dict TensorStore spec (zarr, ``kvstore.path`` relative
  to the checkpoint directory, e.g. ``target.encoder.layers_0.mlp.wi_0.kernel``).
* ``t5x_orbax``: T5X's default (``use_orbax=True``) checkpoints, ``checkpoint_<step>/state``
  is an Orbax PyTree checkpoint of the same state dict (params under ``target``).
* ``orbax``: the embedded trainer (``normgrowth_jax.checkpoints``), ``<step>/state`` is an
  Orbax checkpoint with params under ``params``.

Only the leaves passing the parameter filter are read, one checkpoint at a time; at most two
consecutive checkpoints' filtered leaves are in memory, so a 104-checkpoint T5-base run needs
about 2 x 340 MB with the paper filter. All quantities are float64 (``jax.enable_x64``) and
reuse :mod:`normgrowth_jax.norms` (the same stable angle as the per-step hook).

For consecutive checkpoints theta_a (step s_a) and theta_b (step s_b), delta = theta_b -
theta_a: ``update_norm`` ||delta||, ``alignment`` cos(delta, theta_a), ``direction_angle``
(stable) and ``direction_cos`` cos(theta_a, theta_b), globally and per group.

Example:
  >>> import numpy as np
  >>> a = {"encoder/layers_0/w": np.array([3.0, 0.0])}
  >>> b = {"encoder/layers_0/w": np.array([3.0, 4.0])}
  >>> q = pair_quantities(a, b, groups="layers")
  >>> float(q["update_norm"]), float(q["alignment"]), round(float(q["direction_cos"]), 6)
  (4.0, 0.0, 0.6)
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import numpy as np

from normgrowth_jax import norms

FlatParams = dict  # {"/"-joined path relative to the params root: np.ndarray}

_T5X_DIR = re.compile(r"^checkpoint_(\d+)$")
_STEP_DIR = re.compile(r"^(\d+)$")
PARAM_ROOTS = {"t5x": "target", "t5x_orbax": "target", "orbax": "params"}


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
  """One saved checkpoint: its step, directory and layout ("t5x", "t5x_orbax" or "orbax")."""

  step: int
  path: str
  layout: str


def _is_orbax_dir(path: str) -> bool:
  return os.path.isdir(path) and any(
      os.path.exists(os.path.join(path, f))
      for f in ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "checkpoint")
  )


def list_checkpoints(model_dir: str) -> list[CheckpointRef]:
  """Complete checkpoints under ``model_dir`` in step order (temporary dirs are skipped).

  Raises:
    FileNotFoundError: no checkpoint of a known layout exists.
  """
  model_dir = os.path.abspath(os.fspath(model_dir))  # orbax needs absolute paths
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(
        f"{model_dir} is not a directory (copy gs:// runs down first: "
        "gcloud storage cp -r gs://.../MODEL_DIR .)."
    )
  refs = []
  # The embedded trainer's MODEL_DIR keeps its checkpoints in MODEL_DIR/checkpoints/<step>.
  trainer_dir = os.path.join(model_dir, "checkpoints")
  for parent in [model_dir] + ([trainer_dir] if os.path.isdir(trainer_dir) else []):
    for name in os.listdir(parent):
      full = os.path.join(parent, name)
      m = _T5X_DIR.match(name)
      if m and os.path.isdir(full):
        state = os.path.join(full, "state")
        if os.path.isfile(os.path.join(full, "checkpoint")):
          refs.append(CheckpointRef(int(m.group(1)), full, "t5x"))
        elif _is_orbax_dir(state):
          refs.append(CheckpointRef(int(m.group(1)), state, "t5x_orbax"))
        continue
      m = _STEP_DIR.match(name)
      if m and _is_orbax_dir(os.path.join(full, "state")):
        refs.append(CheckpointRef(int(m.group(1)), os.path.join(full, "state"), "orbax"))
  if not refs:
    raise FileNotFoundError(
        f"No checkpoints in {model_dir}: expected T5X checkpoint_<step>/checkpoint, "
        "checkpoint_<step>/state (T5X Orbax) or [checkpoints/]<step>/state (normgrowth_jax "
        "trainer)."
    )
  return sorted(refs, key=lambda r: r.step)


# ----------------------------------------------------------------------------- reading


def _placeholder(shape, dtype):
  """A zero-byte array of the right shape for filters/groups (which look at ndim/shape)."""
  return np.broadcast_to(np.zeros((), dtype), tuple(shape))


def _is_ts_spec(x) -> bool:
  return isinstance(x, dict) and "driver" in x and ("kvstore" in x or "path" in x)


def _flatten(tree, prefix=()) -> Iterator[tuple[tuple, Any]]:
  if isinstance(tree, dict) and not _is_ts_spec(tree):
    for k, v in tree.items():
      yield from _flatten(v, prefix + (str(k),))
  else:
    yield prefix, tree


def _json_lists(x):
  """Undoes flax's list -> {"0": ..} state-dict encoding inside a spec, if it happened."""
  if isinstance(x, dict):
    if x and all(isinstance(k, str) and k.isdigit() for k in x):
      return [_json_lists(x[str(i)]) for i in range(len(x))]
    return {k: _json_lists(v) for k, v in x.items()}
  return x


def _local_ts_spec(spec: dict, ckpt_dir: str) -> dict:
  """A TensorStore spec whose (relative, possibly gcs) kvstore points into ``ckpt_dir``."""
  spec = _json_lists(dict(spec))
  kv = dict(spec.get("kvstore", {}))
  rel = kv.get("path") or spec.pop("path", None)
  if rel is None:
    raise ValueError(f"TensorStore spec without a path: {spec}")
  # T5X writes the array's directory with a trailing "/" ("target.encoder.x.kernel/").
  rel = rel.rstrip("/")
  if kv.get("driver") == "gcs":
    rel = rel.split("/")[-1]  # gs://bucket/.../checkpoint_N/<name>: keep the array name
  spec["kvstore"] = {"driver": "file", "path": os.path.join(ckpt_dir, os.path.basename(rel))}
  return spec


def _read_ts(spec: dict) -> np.ndarray:
  import tensorstore as ts  # orbax depends on it

  return np.asarray(ts.open(spec, open=True).result().read().result())


def _t5x_leaves(ref: CheckpointRef):
  """[(path under the state dict, shape, dtype, loader)] of a legacy T5X checkpoint."""
  from flax import serialization

  with open(os.path.join(ref.path, "checkpoint"), "rb") as f:
    contents = serialization.msgpack_restore(f.read())
  if "optimizer" not in contents:
    raise ValueError(f"{ref.path}/checkpoint is not a T5X checkpoint (no 'optimizer' key).")
  out = []
  for key, x in _flatten(contents["optimizer"]):
    if _is_ts_spec(x):
      spec = _local_ts_spec(x, ref.path)
      meta = x.get("metadata", {})
      shape = tuple(int(s) for s in meta.get("shape", ()))
      dtype = np.dtype(x.get("dtype", "float32")) if x.get("dtype") != "bfloat16" else np.float32
      out.append((key, shape, dtype, lambda spec=spec: _read_ts(spec)))
    elif isinstance(x, (np.ndarray, np.generic, int, float)):
      arr = np.asarray(x)
      out.append((key, arr.shape, arr.dtype, lambda arr=arr: arr))
  return out


def _orbax_metadata(path: str) -> dict:
  import orbax.checkpoint as ocp

  md = ocp.PyTreeCheckpointer().metadata(path)
  tree = getattr(md, "item_metadata", md)
  tree = getattr(tree, "tree", tree)
  return tree


def _orbax_read(path: str, keys: Sequence[tuple]) -> dict[tuple, np.ndarray]:
  """Partial restore of the given leaf keys as NumPy arrays."""
  import orbax.checkpoint as ocp

  item, args = {}, {}
  for key in keys:
    node_i, node_a = item, args
    for k in key[:-1]:
      node_i = node_i.setdefault(k, {})
      node_a = node_a.setdefault(k, {})
    node_i[key[-1]] = 0
    node_a[key[-1]] = ocp.RestoreArgs(restore_type=np.ndarray)
  restored = ocp.PyTreeCheckpointer().restore(
      path, args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True)
  )
  return {key: np.asarray(v) for key, v in _flatten(restored)}


def _orbax_leaves(ref: CheckpointRef):
  out = []
  for key, m in _flatten(_orbax_metadata(ref.path)):
    shape = tuple(getattr(m, "shape", ()) or ())
    dtype = np.dtype(getattr(m, "dtype", np.float32) or np.float32)
    out.append((key, shape, dtype, lambda key=key: _orbax_read(ref.path, [key])[key]))
  return out


def _leaves(ref: CheckpointRef):
  return _t5x_leaves(ref) if ref.layout == "t5x" else _orbax_leaves(ref)


def read_params(ref: CheckpointRef, param_filter="all") -> FlatParams:
  """The filtered parameters of one checkpoint as ``{path: np.ndarray}`` (native dtype).

  Paths are relative to the params root ("encoder/layers_0/mlp/wi_0/kernel"): T5X's
  ``target/`` and the embedded trainer's ``params/`` prefixes are dropped (a Flax
  ``params/params/`` collection level is dropped too). Only the filtered leaves are read.
  """
  keep = norms.resolve_param_filter(param_filter)
  root = PARAM_ROOTS[ref.layout]
  chosen = []
  for key, shape, dtype, load in _leaves(ref):
    if not key or key[0] != root:
      continue
    rel = key[1:]
    if rel and rel[0] == "params" and len(rel) > 1 and ref.layout == "orbax":
      rel = rel[1:]
    path = "/".join(rel)
    if keep(path, _placeholder(shape, dtype)):
      chosen.append((key, path, load))
  if not chosen:
    raise ValueError(f"No parameters under {root!r} pass the filter in {ref.path}.")
  if ref.layout == "t5x":
    return {path: load() for _, path, load in chosen}
  arrays = _orbax_read(ref.path, [k for k, _, _ in chosen])  # one restore call per checkpoint
  return {path: arrays[key] for key, path, _ in chosen}


def read_state_tree(ref: CheckpointRef, prefix: Sequence[str] = ()) -> Any:
  """The nested state (or its ``prefix`` subtree) of one checkpoint, as NumPy arrays.

  Used to read the norm trace from the optimizer state without loading the params.
  """
  prefix = tuple(prefix)
  if ref.layout == "t5x":
    tree: dict = {}
    for key, _, _, load in _t5x_leaves(ref):
      if key[: len(prefix)] != prefix:
        continue
      node = tree
      for k in key[:-1]:
        node = node.setdefault(k, {})
      node[key[-1]] = load()
    for k in prefix:
      tree = tree.get(k, {})
    return tree
  import orbax.checkpoint as ocp

  sub = _orbax_metadata(ref.path)
  for k in prefix:
    sub = sub[k]
  is_meta = lambda m: hasattr(m, "shape") or m is None  # noqa: E731
  item = jax.tree_util.tree_map(lambda m: 0, sub, is_leaf=is_meta)
  args = jax.tree_util.tree_map(
      lambda m: ocp.RestoreArgs(restore_type=np.ndarray), sub, is_leaf=is_meta
  )
  for k in reversed(prefix):
    item, args = {k: item}, {k: args}
  restored = ocp.PyTreeCheckpointer().restore(
      ref.path, args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True)
  )
  for k in prefix:
    restored = restored[k]
  return restored


# ----------------------------------------------------------------------------- quantities


def _group_of(group_fn, path, x):
  return None if group_fn is None else group_fn(path, x)


# One compiled call per leaf shape (not one per primitive op): XLA drops the unused outputs.
_pair_stats = jax.jit(norms.unit_pair_stats, static_argnames="axis")
_sum_sq = jax.jit(lambda x, axis=None: norms.unit_pair_stats(x, x, axis).tt, static_argnames="axis")


def param_norms(params: FlatParams, groups="layers") -> dict[str, float]:
  """``{"param_norm": ..., "param_norm/<g>": ...}`` (float64) of already-filtered params."""
  group_fn = norms.resolve_groups(groups)
  total, by_group = 0.0, {}
  with jax.enable_x64(True):
    for path in sorted(params):
      x = np.asarray(params[path], np.float64)
      g = _group_of(group_fn, path, x)
      if isinstance(g, norms.Stacked):
        per = np.asarray(_sum_sq(x, axis=g.axis))
        for i, v in enumerate(per):
          name = g.template.format(i)
          by_group[name] = by_group.get(name, 0.0) + float(v)
        total += float(per.sum())
      else:
        v = float(_sum_sq(x))
        total += v
        if g is not None:
          by_group[g] = by_group.get(g, 0.0) + v
  out = {"param_norm": float(np.sqrt(total))}
  out.update({f"param_norm/{g}": float(np.sqrt(v)) for g, v in sorted(by_group.items())})
  return out


def filtered_param_norms(params, param_filter="paper", groups="layers") -> dict[str, float]:
  """:func:`param_norms` of a nested params tree under ``param_filter`` (float64).

  Example (the paper's filter leaves the embeddings out):
    >>> import numpy as np
    >>> filtered_param_norms({"encoder": {"layers_0": {"mlp": {"kernel": np.full((2, 2), 0.5)}}},
    ...                       "token_embedder": {"embedding": np.ones((3, 2))}})
    {'param_norm': 1.0, 'param_norm/encoder/layers_0': 1.0}
  """
  keep = norms.resolve_param_filter(param_filter)
  flat = {path: np.asarray(x) for path, x in norms.named_leaves(params)}
  return param_norms({k: v for k, v in flat.items() if keep(k, v)}, groups)


def pair_quantities(theta_a: FlatParams, theta_b: FlatParams, groups="layers") -> dict:
  """Checkpoint-to-checkpoint quantities (float64) of two filtered param dicts.

  Returns:
    ``update_norm``, ``alignment`` = cos(delta, theta_a), ``direction_angle`` (radians, from
    delta's component orthogonal to theta_a) and ``direction_cos`` = cos(theta_a, theta_b),
    each also as ``<quantity>/<group>``.
  """
  if set(theta_a) != set(theta_b):
    diff = sorted(set(theta_a) ^ set(theta_b))[:5]
    raise ValueError(f"Checkpoints hold different parameters, e.g. {diff}.")
  group_fn = norms.resolve_groups(groups)
  by_group: dict[str, list] = {}
  parts = []
  with jax.enable_x64(True):
    for path in sorted(theta_a):
      a = np.asarray(theta_a[path], np.float64)
      d = np.asarray(theta_b[path], np.float64) - a
      g = _group_of(group_fn, path, a)
      if isinstance(g, norms.Stacked):
        st = jax.tree_util.tree_map(np.asarray, _pair_stats(a, d, axis=g.axis))
        for i in range(a.shape[g.axis]):
          piece = norms.PairStats(*(f[i] for f in st))
          parts.append(piece)
          by_group.setdefault(g.template.format(i), []).append(piece)
      else:
        st = jax.tree_util.tree_map(np.asarray, _pair_stats(a, d))
        parts.append(st)
        if g is not None:
          by_group.setdefault(g, []).append(st)
    out = _stats_quantities(_combine(parts), "")
    for g in sorted(by_group):
      out.update(_stats_quantities(_combine(by_group[g]), f"/{g}"))
  return out


def _combine(parts):
  """norms.combine_pair_stats on host float64 scalars (jitted once per number of parts)."""
  return jax.tree_util.tree_map(np.asarray, jax.jit(norms.combine_pair_stats)(parts))


def _stats_quantities(s: norms.PairStats, suffix: str) -> dict[str, float]:
  angle = float(jax.jit(norms.angle_from_stats)(s))
  tt, td, dd = float(s.tt), float(s.td), float(s.dd)
  den = np.sqrt(tt * dd)
  return {
      f"update_norm{suffix}": float(np.sqrt(dd)),
      f"alignment{suffix}": td / den if den > 0 else 0.0,
      f"direction_angle{suffix}": angle,
      f"direction_cos{suffix}": float(np.cos(angle)),
  }


def checkpoint_trajectory(
    model_dir: str,
    param_filter="paper",
    groups="layers",
    steps: Optional[Sequence[int]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> dict:
  """Post-hoc Fig. 1 / Fig. 5 data from a run's checkpoints, streaming one at a time.

  Args:
    model_dir: a T5X MODEL_DIR or an embedded-trainer checkpoint directory.
    param_filter: "paper" (the paper's App. A convention), "all" or a callable.
    groups: "layers", None, ``{name: regex}`` or a group function.
    steps: only these checkpoint steps (default: all).
    progress: optional callback called with each step after it is processed.

  Returns:
    ``{"step": [n], "param_norm": [n], "param_norm/<g>": [n], "pair_step": [n-1] (s_a),
    "pair_next_step": [n-1] (s_b), "update_norm", "alignment", "direction_angle",
    "direction_cos" (+ "/<g>") : [n-1]}`` as float64 / int64 NumPy arrays.
  """
  refs = list_checkpoints(model_dir)
  if steps is not None:
    wanted = set(int(s) for s in steps)
    refs = [r for r in refs if r.step in wanted]
  rows, pairs = [], []
  prev, prev_step = None, None
  for ref in refs:
    cur = read_params(ref, param_filter)
    rows.append({"step": ref.step, **param_norms(cur, groups)})
    if prev is not None:
      pairs.append(
          {"pair_step": prev_step, "pair_next_step": ref.step, **pair_quantities(prev, cur, groups)}
      )
    prev, prev_step = cur, ref.step  # the older checkpoint is released here
    if progress is not None:
      progress(ref.step)
  out = _columns(rows)
  out.update(_columns(pairs) if pairs else {})
  return out


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
  keys = list(dict.fromkeys(k for r in rows for k in r))
  out = {}
  for k in keys:
    vals = [r.get(k, np.nan) for r in rows]
    out[k] = np.asarray(vals, np.int64 if k.endswith("step") else np.float64)
  return out
