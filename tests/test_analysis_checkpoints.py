"""Post-hoc checkpoint quantities on T5X-layout, T5X-Orbax and embedded-trainer checkpoints.

The T5X legacy writer below follows T5X's documented on-disk format (read from upstream
t5x/checkpoints.py, not copied): ``checkpoint_<step>/checkpoint`` is flax msgpack of
``{"version": 3, "optimizer": state_dict}``; partitioned arrays are zarr arrays written by
TensorStore at ``checkpoint_<step>/<path with "/" -> ".">`` with a *relative* kvstore path in
the spec stored in the msgpack; unpartitioned arrays (step, trace) are inline.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization

from normgrowth_jax import checkpoints as trainer_ckpt
from normgrowth_jax import tracking
from normgrowth_jax.analysis import checkpoints as ac
from normgrowth_jax.analysis import trajectory as at

STEPS = (0, 5, 10)


def _params(step, rng):
  """A tiny T5X-named param tree that drifts with step (float32)."""
  base = np.random.default_rng(0)
  drift = rng.normal(size=1)  # consumed so that steps differ
  del drift

  def w(*shape, seed):
    return (
        np.random.default_rng(seed).normal(size=shape) * (1 + 0.05 * step)
        + 0.01 * step * np.random.default_rng(seed + 100 + step).normal(size=shape)
    ).astype(np.float32)

  del base
  return {
      "encoder": {
          "layers_0": {
              "attention": {"query": {"kernel": w(4, 6, seed=1)}},
              "pre_attention_layer_norm": {"scale": w(4, seed=2)},
          },
          "layers_1": {"mlp": {"wo": {"kernel": w(6, 4, seed=3)}}},
          "relpos_bias": {"rel_embedding": w(2, 8, seed=4)},
      },
      "decoder": {"layers_0": {"mlp": {"wo": {"kernel": w(6, 4, seed=5)}}}},
      "token_embedder": {"embedding": w(10, 4, seed=6)},
  }


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    p = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flat(v, p + "/"))
    else:
      out[p] = v
  return out


def _paper_keep(path):
  segs = path.split("/")
  return segs[0] == "encoder" and not any("embed" in s for s in segs)


def _write_t5x_legacy(model_dir, step, params, state_extra):
  ckpt_dir = os.path.join(model_dir, f"checkpoint_{step}")
  os.makedirs(ckpt_dir)

  def to_spec(path, arr):
    name = "target." + path.replace("/", ".")
    spec = {
        "driver": "zarr",
        "dtype": arr.dtype.name,
        "kvstore": {"driver": "file", "path": name},
        "metadata": {
            "compressor": {"id": "gzip"},
            "shape": list(arr.shape),
            "chunks": list(arr.shape),
        },
    }
    absolute = dict(spec, kvstore={"driver": "file", "path": os.path.join(ckpt_dir, name)})
    ts.open(absolute, create=True, open=True).result().write(arr).result()
    return spec

  def walk(tree, prefix=""):
    return {
        k: walk(v, f"{prefix}{k}/") if isinstance(v, dict) else to_spec(prefix + k, v)
        for k, v in tree.items()
    }

  state = {"step": np.int32(step), "param_states": state_extra}
  # T5X's Checkpointer msgpack-serializes the already state-dict'ed tree, spec dicts as JSON
  # (lists stay lists).
  blob = serialization.msgpack_serialize(
      {"version": 3, "optimizer": {"target": walk(params), "state": state}}
  )
  with open(os.path.join(ckpt_dir, "checkpoint"), "wb") as f:
    f.write(blob)


def _reference(params_by_step):
  """float64 NumPy reference of every checkpoint-level quantity."""
  flat = [
      {k: v.astype(np.float64) for k, v in _flat(p).items() if _paper_keep(k)}
      for p in params_by_step
  ]
  norm = [np.sqrt(sum(np.sum(v * v) for v in f.values())) for f in flat]
  pairs = []
  for a, b in zip(flat[:-1], flat[1:]):
    va = np.concatenate([a[k].ravel() for k in sorted(a)])
    vb = np.concatenate([b[k].ravel() for k in sorted(a)])
    d = vb - va
    pairs.append(
        {
            "update_norm": np.linalg.norm(d),
            "alignment": d @ va / (np.linalg.norm(d) * np.linalg.norm(va)),
            "direction_cos": va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)),
        }
    )
  layer1 = [np.sqrt(np.sum(f["encoder/layers_1/mlp/wo/kernel"] ** 2)) for f in flat]
  return norm, pairs, layer1


def _check(out, params_by_step):
  norm, pairs, layer1 = _reference(params_by_step)
  assert out["step"].tolist() == list(STEPS)
  np.testing.assert_allclose(out["param_norm"], norm, rtol=1e-12)
  np.testing.assert_allclose(out["param_norm/encoder/layers_1"], layer1, rtol=1e-12)
  assert "param_norm/decoder/layers_0" not in out  # paper filter: encoder only
  assert out["pair_step"].tolist() == [0, 5] and out["pair_next_step"].tolist() == [5, 10]
  for q in ("update_norm", "alignment", "direction_cos"):
    np.testing.assert_allclose(out[q], [p[q] for p in pairs], rtol=1e-10, err_msg=q)
  np.testing.assert_allclose(np.cos(out["direction_angle"]), out["direction_cos"], rtol=1e-12)
  assert set(k for k in out if k.startswith("direction_cos/")) == {
      "direction_cos/encoder/layers_0",
      "direction_cos/encoder/layers_1",
  }


def test_t5x_legacy_layout_quantities_and_trace(tmp_path):
  rng = np.random.default_rng(1)
  ps = [_params(s, rng) for s in STEPS]
  # The trace as T5X saves an OptaxWrapper/TrackedOptimizer state: NamedTuple -> state dict.
  tx = optax.chain(optax.sgd(0.1), tracking.track_norms(history_size=8))
  p0 = jax.tree.map(jnp.asarray, ps[0])
  opt_state = tx.init(p0)
  for _ in range(3):
    _, opt_state = tx.update(jax.tree.map(jnp.ones_like, p0), opt_state, p0)
  trace_sd = serialization.to_state_dict(jax.tree.map(np.asarray, opt_state[1]))
  for s, p in zip(STEPS, ps):
    _write_t5x_legacy(
        str(tmp_path), s, p, {"base": {"dummy": np.zeros(2, np.float32)}, "norm_trace": trace_sd}
    )
  os.makedirs(tmp_path / "checkpoint_15.tmp-123")  # an unfinished save is ignored
  refs = ac.list_checkpoints(str(tmp_path))
  assert [(r.step, r.layout) for r in refs] == [(s, "t5x") for s in STEPS]
  got = ac.read_params(refs[1], "paper")
  assert sorted(got) == sorted(k for k in _flat(ps[1]) if _paper_keep(k))
  np.testing.assert_array_equal(
      got["encoder/layers_1/mlp/wo/kernel"], ps[1]["encoder"]["layers_1"]["mlp"]["wo"]["kernel"]
  )
  _check(ac.checkpoint_trajectory(str(tmp_path)), ps)
  trace = at.read_checkpoint_trace(str(tmp_path))
  assert trace["step"].tolist() == [1, 2, 3]
  np.testing.assert_allclose(trace["param_norm"], tracking.read_trace(opt_state)["param_norm"])


def test_t5x_gcs_spec_is_read_locally(tmp_path):
  """A checkpoint written to gs:// (gcs kvstore) and copied down still reads."""
  ckpt = tmp_path / "checkpoint_3"
  ckpt.mkdir()
  arr = np.arange(12, dtype=np.float32).reshape(3, 4)
  name = "target.encoder.layers_0.w"
  ts.open(
      {
          "driver": "zarr",
          "kvstore": {"driver": "file", "path": str(ckpt / name)},
          "metadata": {"shape": [3, 4], "chunks": [3, 4], "dtype": "<f4"},
      },
      create=True,
  ).result().write(arr).result()
  spec = {
      "driver": "zarr",
      "dtype": "float32",
      "path": name,
      "kvstore": {"driver": "gcs", "bucket": "t5x-dummy-bucket"},
      "metadata": {"shape": [3, 4], "chunks": [3, 4]},
  }
  blob = serialization.msgpack_serialize(
      {
          "version": 3,
          "optimizer": {
              "target": {"encoder": {"layers_0": {"w": spec}}},
              "state": {"step": np.int32(3)},
          },
      }
  )
  (ckpt / "checkpoint").write_bytes(blob)
  got = ac.read_params(ac.list_checkpoints(str(tmp_path))[0], "all")
  np.testing.assert_array_equal(got["encoder/layers_0/w"], arr)


def test_t5x_orbax_layout(tmp_path):
  rng = np.random.default_rng(2)
  ps = [_params(s, rng) for s in STEPS]
  ck = ocp.PyTreeCheckpointer()
  for s, p in zip(STEPS, ps):
    ck.save(
        str(tmp_path / f"checkpoint_{s}" / "state"),
        {"target": p, "state": {"step": np.int32(s), "param_states": {"v": np.ones(3)}}},
    )
  refs = ac.list_checkpoints(str(tmp_path))
  assert [(r.step, r.layout) for r in refs] == [(s, "t5x_orbax") for s in STEPS]
  _check(ac.checkpoint_trajectory(str(tmp_path)), ps)


def test_embedded_trainer_layout_and_trace(tmp_path, monkeypatch):
  """The trainer keeps MODEL_DIR/checkpoints/<step>; a relative MODEL_DIR must work too."""
  rng = np.random.default_rng(3)
  ps = [_params(s, rng) for s in STEPS]
  tx = optax.chain(
      optax.sgd(0.01), tracking.track_norms(param_filter="paper", groups="layers", history_size=16)
  )
  ck = trainer_ckpt.Checkpointer(
      str(tmp_path / "run" / "checkpoints"), save_every=5, keep=10, async_save=False
  )
  opt_state = tx.init(jax.tree.map(jnp.asarray, ps[0]))
  for s, p in zip(STEPS, ps):
    if s:
      _, opt_state = tx.update(
          jax.tree.map(jnp.ones_like, p), opt_state, jax.tree.map(jnp.asarray, p)
      )
    state = {"params": jax.tree.map(jnp.asarray, p), "opt_state": opt_state, "step": jnp.asarray(s)}
    ck.save(s, state, data_position=s, seed=0)
  ck.close()
  monkeypatch.chdir(tmp_path)
  refs = ac.list_checkpoints("run")
  assert [(r.step, r.layout) for r in refs] == [(s, "orbax") for s in STEPS]
  _check(ac.checkpoint_trajectory("run"), ps)
  trace = at.read_checkpoint_trace("run")
  want = tracking.read_trace(opt_state)
  assert trace["step"].tolist() == want["step"].tolist() == [1, 2]
  np.testing.assert_allclose(
      trace["param_norm/encoder/layers_0"], want["param_norm/encoder/layers_0"]
  )


def test_pair_quantities_tiny_angle_and_scanned_stack():
  """A 1e-9 relative update: the angle keeps full precision; scanned stacks split per layer."""
  rng = np.random.default_rng(4)
  a = {"encoder/layers/w": rng.normal(size=(3, 5, 4))}  # [layers, ...] scanned stack
  d = rng.normal(size=(3, 5, 4)) * 1e-9
  b = {"encoder/layers/w": a["encoder/layers/w"] + d}
  q = ac.pair_quantities(a, b, groups="layers")
  va, vd = a["encoder/layers/w"].ravel(), d.ravel()
  perp = vd - (vd @ va) / (va @ va) * va
  want = np.arctan2(np.linalg.norm(perp), np.linalg.norm(va) + vd @ va / np.linalg.norm(va))
  # b = a + d is rounded in float64, so compare at that rounding's relative level.
  assert q["direction_angle"] == pytest.approx(want, rel=1e-5)
  assert {k for k in q if k.startswith("update_norm/")} == {
      f"update_norm/encoder/layers_{i}" for i in range(3)
  }
  np.testing.assert_allclose(q["update_norm/encoder/layers_2"], np.linalg.norm(d[2]), rtol=1e-5)


def test_missing_directory_and_mismatched_checkpoints(tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoints"):
    ac.list_checkpoints(str(tmp_path))
  with pytest.raises(ValueError, match="different parameters"):
    ac.pair_quantities({"a": np.ones(2)}, {"b": np.ones(2)})
