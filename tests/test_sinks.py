"""Sinks: JSONL/TensorBoard streaming, resume without duplicates or gaps, 4 sharded devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normgrowth_jax import sinks, tracking


def _params():
  r = np.random.default_rng(0)
  return {
      "encoder": {
          "layers_0": {"w": jnp.asarray(r.normal(size=(8, 6)), jnp.float32)},
          "layers_1": {"w": jnp.asarray(r.normal(size=(8, 6)), jnp.float32)},
      }
  }


def _grads(t, params):
  r = np.random.default_rng(100 + t)
  return jax.tree.map(lambda x: jnp.asarray(r.normal(size=x.shape), x.dtype), params)


def _train(opt, params, state, start, stop):
  step = jax.jit(opt.update)
  for t in range(start, stop):
    u, state = step(_grads(t, params), state, params)
    params = optax.apply_updates(params, u)
  return params, state


@pytest.mark.parametrize("stream_every_rows", [1, 4])
def test_jsonl_resume_no_duplicates_no_gaps(tmp_path, stream_every_rows):
  path = str(tmp_path / "norms.jsonl")
  sink = sinks.JsonlSink(path)
  opt = optax.chain(
      optax.sgd(0.1),
      tracking.track_norms(
          groups="layers", sink=sink, history_size=8, stream_every_rows=stream_every_rows
      ),
  )
  params = _params()
  p6, s6 = _train(opt, params, opt.init(params), 0, 6)  # "checkpoint" at step 6
  _train(opt, p6, s6, 6, 11)  # run on to 11, then "crash"
  sink.flush()
  written = [r["step"] for r in sinks.read_jsonl(path)]
  assert written == list(range(1, 9 if stream_every_rows == 4 else 12))
  del sink

  sink = sinks.JsonlSink(path)  # a new process reopens the file ...
  sink.resume(6, s6)  # ... and restores the step-6 checkpoint
  opt = optax.chain(
      optax.sgd(0.1),
      tracking.track_norms(
          groups="layers", sink=sink, history_size=8, stream_every_rows=stream_every_rows
      ),
  )
  _, s14 = _train(opt, p6, s6, 6, 14)
  sink.close(s14)
  rows = sinks.read_jsonl(path)
  assert [r["step"] for r in rows] == list(range(1, 15))
  trace = tracking.read_trace(s14)  # the stream equals the state's trace (last 8 rows)
  for i, s in enumerate(trace["step"]):
    row = rows[s - 1]
    for k in ("param_norm", "direction_angle", "param_norm/encoder/layers_1"):
      np.testing.assert_allclose(row[k], trace[k][i], rtol=1e-6)


def _read_scalars(logdir, tag):
  """(step, value) pairs of a scalar tag from TFRecord event files (no TensorFlow needed)."""
  import struct
  from tensorboardX.proto import event_pb2

  out = []
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[pos : pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
      pos += 12 + n + 4
      for v in ev.summary.value:
        if v.tag == tag:
          out.append((ev.step, v.simple_value))
  return out


def test_tensorboard_and_multisink(tmp_path):
  logdir = str(tmp_path / "tb")
  sink = sinks.MultiSink(sinks.TensorBoardSink(logdir), sinks.JsonlSink(str(tmp_path / "n.jsonl")))
  opt = optax.chain(optax.sgd(0.1), tracking.track_norms(sink=sink, every=2))
  params = _params()
  _, state = _train(opt, params, opt.init(params), 0, 6)
  sink.close(state)
  events = _read_scalars(logdir, "norms/param_norm")
  assert [s for s, _ in events] == [2, 4, 6]
  np.testing.assert_allclose(
      [v for _, v in events], tracking.read_trace(state)["param_norm"], rtol=1e-6
  )
  rows = sinks.read_jsonl(str(tmp_path / "n.jsonl"))
  assert [r["step"] for r in rows] == [2, 4, 6]


_SHARDED = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from normgrowth_jax import sinks, tracking
    assert jax.device_count() == 4, jax.devices()
    r = np.random.default_rng(0)
    params = {"encoder": {"layers_0": {"w": jnp.asarray(r.normal(size=(8, 6)), jnp.float32)},
                          "layers_1": {"w": jnp.asarray(r.normal(size=(8, 6)), jnp.float32)}}}
    sharded = len(sys.argv) > 2
    if sharded:
      mesh = Mesh(np.array(jax.devices()), ("d",))
      params = jax.device_put(params, NamedSharding(mesh, P("d")))
    sink = sinks.JsonlSink(sys.argv[1])
    opt = optax.chain(optax.adam(1e-2), tracking.track_norms(groups="layers", sink=sink))
    state = opt.init(params)
    step = jax.jit(opt.update)
    for t in range(5):
      rg = np.random.default_rng(100 + t)
      g = jax.tree.map(lambda x: jnp.asarray(rg.normal(size=x.shape), x.dtype), params)
      if sharded:
        g = jax.device_put(g, NamedSharding(mesh, P("d")))
      u, state = step(g, state, params)
      params = optax.apply_updates(params, u)
    if sharded:
      assert len(params["encoder"]["layers_0"]["w"].sharding.device_set) == 4
    sink.close()
    tr = tracking.read_trace(state)
    print(json.dumps({k: np.asarray(v, float).tolist() for k, v in tr.items()}))
""")


@pytest.mark.slow
@pytest.mark.cpu_only
def test_sharded_four_devices_one_row_per_step(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
  out = {}
  for mode in ("single", "sharded"):
    path = str(tmp_path / f"{mode}.jsonl")
    args = [sys.executable, "-c", _SHARDED, path] + (["x"] if mode == "sharded" else [])
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out[mode] = (json.loads(res.stdout.strip().splitlines()[-1]), sinks.read_jsonl(path))
  (single, single_rows), (sharded, sharded_rows) = out["single"], out["sharded"]
  assert [r["step"] for r in sharded_rows] == [1, 2, 3, 4, 5]
  assert [r["step"] for r in single_rows] == [1, 2, 3, 4, 5]
  for k in single:
    np.testing.assert_allclose(sharded[k], single[k], rtol=1e-5, atol=1e-7, err_msg=k)
  for a, b in zip(sharded_rows, single_rows):
    np.testing.assert_allclose(
        a["param_norm/encoder/layers_1"], b["param_norm/encoder/layers_1"], rtol=1e-5
    )
