"""norms.py against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normgrowth_jax import norms


def _tree(seed=0, dtype=jnp.float32):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s), dtype)
  return {
      "params": {
          "encoder": {
              "layers_0": {"attention": {"query": {"kernel": f(8, 4)}}, "scale": f(4)},
              "layers": {"mlp": {"wi": {"kernel": f(3, 4, 5)}}},  # scanned: 3 layers
              "rel_embedding": f(4, 2),
              "token_embedder": {"embedding": f(10, 4)},
              "gain": jnp.asarray(1.5, dtype),
          },
          "decoder": {"layers_1": {"w": f(6)}, "block_2": {"w": f(2, 2)}},
          "bert": {"encoder": {"layer": {"4": {"w": f(3)}}}},
      }
  }


def _np(x):
  return np.asarray(x, np.float64)


def test_leaf_paths_and_filters():
  tree = _tree()
  paths = norms.leaf_paths(tree)
  assert "params/encoder/layers_0/attention/query/kernel" in paths
  assert "params/bert/encoder/layer/4/w" in paths
  kept = [p for p, x in norms.named_leaves(tree) if norms.paper_filter(p, x)]
  assert sorted(kept) == sorted(
      [
          "params/bert/encoder/layer/4/w",
          "params/encoder/layers/mlp/wi/kernel",
          "params/encoder/layers_0/attention/query/kernel",
          "params/encoder/layers_0/scale",
      ]
  )
  assert norms.resolve_param_filter("all")("x", 1.0)
  # T5's cross-attention lives in the decoder although its name starts with "encoder".
  assert not norms.paper_filter(
      "decoder/layers_0/encoder_decoder_attention/key/kernel", np.zeros((2, 2))
  )
  with pytest.raises(ValueError, match="Unknown param_filter"):
    norms.resolve_param_filter("encoder")


def test_layer_groups_names():
  tree = _tree()
  got = {p: norms.layer_groups(p, x) for p, x in norms.named_leaves(tree)}
  assert got["params/encoder/layers_0/scale"] == "encoder/layers_0"
  assert got["params/decoder/block_2/w"] == "decoder/block_2"
  assert got["params/bert/encoder/layer/4/w"] == "bert/encoder/layer/4"
  assert got["params/encoder/layers/mlp/wi/kernel"] == norms.Stacked("encoder/layers_{}", 0)
  assert got["params/encoder/gain"] is None
  assert norms.group_names(tree, norms.layer_groups, "paper") == [
      "bert/encoder/layer/4",
      "encoder/layers_0",
      "encoder/layers_1",
      "encoder/layers_2",
  ]
  axis1 = norms.make_layer_groups(stack_axis=1)
  assert axis1("encoder/layers/w", np.zeros((4, 3))) == norms.Stacked("encoder/layers_{}", 1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_sums_match_float64(dtype):
  a, b = _tree(0, dtype), _tree(1, dtype)
  la = [(p, _np(x)) for p, x in norms.named_leaves(a)]
  lb = [_np(x) for x in jax.tree_util.tree_leaves(b)]
  for filt in ("all", "paper"):
    keep = norms.PARAM_FILTERS[filt]
    ss = sum((x**2).sum() for p, x in la if keep(p, x))
    dot = sum((x * y).sum() for (p, x), y in zip(la, lb) if keep(p, x))
    np.testing.assert_allclose(float(norms.sum_of_squares(a, filt)), ss, rtol=1e-5)
    np.testing.assert_allclose(float(norms.tree_dot(a, b, filt)), dot, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(norms.global_norm(a, filt)), np.sqrt(ss), rtol=1e-5)
    assert norms.sum_of_squares(a, filt).dtype == jnp.float32


def test_grouped_sums_split_scanned_stack():
  a = _tree(3)
  got = norms.grouped_sum_of_squares(a, norms.layer_groups)
  wi = _np(a["params"]["encoder"]["layers"]["mlp"]["wi"]["kernel"])
  l0 = a["params"]["encoder"]["layers_0"]
  ref0 = (_np(l0["attention"]["query"]["kernel"]) ** 2).sum() + (_np(l0["scale"]) ** 2).sum()
  np.testing.assert_allclose(float(got["encoder/layers_0"]), ref0 + (wi[0] ** 2).sum(), rtol=1e-5)
  for i in (1, 2):
    np.testing.assert_allclose(float(got[f"encoder/layers_{i}"]), (wi[i] ** 2).sum(), rtol=1e-5)
  regex = norms.regex_groups({r"dec_\1": r"decoder/(?:layers|block)_(\d+)/"})
  got = norms.grouped_global_norm(a, regex)
  assert sorted(got) == ["dec_1", "dec_2"]
  np.testing.assert_allclose(
      float(got["dec_1"]), np.linalg.norm(_np(a["params"]["decoder"]["layers_1"]["w"])), rtol=1e-5
  )


def _t5_base_named(scan_layers):
  """Random params with T5-base's layout (12 + 12 layers, T5.1.1 names) at tiny widths."""
  from normgrowth_jax.models import t5  # pylint: disable=g-import-not-at-top

  cfg = t5.get_config(
      "base", vocab_size=16, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=6, scan_layers=scan_layers
  )
  tokens = jnp.ones((1, 3), jnp.int32)
  shapes = jax.eval_shape(t5.Transformer(cfg).init, jax.random.PRNGKey(0), tokens, tokens, tokens)[
      "params"
  ]
  r = np.random.default_rng(7)
  return jax.tree.map(lambda s: jnp.asarray(r.normal(size=s.shape), s.dtype), shapes)


def test_layer_groups_t5_base_twelve_layers():
  """Layers 10 and 11 are their own groups, unrolled (layers_10) and scanned (a stack of 12)."""
  from normgrowth_jax.models.t5_scan import scan_params  # pylint: disable=g-import-not-at-top

  params = _t5_base_named(scan_layers=False)
  want = [f"encoder/layers_{i}" for i in range(12)]
  assert norms.group_names(params, norms.layer_groups, "paper") == sorted(want)
  assert norms.layer_groups("encoder/layers_11/mlp/wo/kernel", np.zeros((6, 4))) == (
      "encoder/layers_11"
  )
  got = norms.grouped_sum_of_squares(params, norms.layer_groups, "paper")
  for i in range(12):
    ref = sum(
        (_np(x) ** 2).sum()
        for p, x in norms.named_leaves(params)
        if p.startswith(f"encoder/layers_{i}/")
    )
    np.testing.assert_allclose(float(got[f"encoder/layers_{i}"]), ref, rtol=1e-5)
  ungrouped = [
      p
      for p, x in norms.named_leaves(params)
      if norms.paper_filter(p, x) and norms.layer_groups(p, x) is None
  ]
  assert ungrouped == ["encoder/encoder_norm/scale"]
  # T5Config.scan_layers: encoder/layers/... with a leading axis of 12, split into the same groups
  scanned = scan_params(params)
  assert jax.tree.structure(scanned) == jax.tree.structure(_t5_base_named(scan_layers=True))
  assert norms.layer_groups("encoder/layers/mlp/wo/kernel", np.zeros((12, 6, 4))) == (
      norms.Stacked("encoder/layers_{}", 0)
  )
  got_s = norms.grouped_sum_of_squares(scanned, norms.layer_groups, "paper")
  assert sorted(got_s) == sorted(want)
  for g in want:
    np.testing.assert_allclose(float(got_s[g]), float(got[g]), rtol=1e-6)


def _ref_angle(theta, delta):
  """Kahan's formula in float64 (independent of the orthogonal-component method)."""
  u = theta / np.linalg.norm(theta)
  w = theta + delta
  v = w / np.linalg.norm(w)
  return 2 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v))


@pytest.mark.parametrize("rel", [1e-7, 1e-4, 0.3])
@pytest.mark.parametrize("parallel", [0.0, 0.999])
def test_stable_angle_tiny_updates(rel, parallel):
  r = np.random.default_rng(7)
  theta = {
      "a": r.normal(size=(50, 40)).astype(np.float32),
      "b": r.normal(size=300).astype(np.float32),
  }
  noise = {k: r.normal(size=v.shape) for k, v in theta.items()}
  flat_t = np.concatenate([_np(v).ravel() for v in theta.values()])
  flat_n = np.concatenate([v.ravel() for v in noise.values()])
  flat_d = parallel * flat_t / np.linalg.norm(flat_t) + (1 - parallel) * flat_n / np.linalg.norm(
      flat_n
  )
  flat_d *= rel * np.linalg.norm(flat_t) / np.linalg.norm(flat_d)
  delta = {
      "a": flat_d[:2000].reshape(50, 40).astype(np.float32),
      "b": flat_d[2000:].astype(np.float32),
  }
  d64 = np.concatenate([_np(v).ravel() for v in delta.values()])
  ref = _ref_angle(flat_t, d64)
  got = float(jax.jit(norms.stable_angle)(theta, delta))
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  # the naive float32 arccos is useless here (this is why stable_angle exists)
  if rel == 1e-7:
    naive = np.arccos(
        np.clip(np.float32(norms.cosine(theta, jax.tree.map(np.add, theta, delta))), -1, 1)
    )
    assert abs(naive - ref) > 0.1 * ref


def test_stable_angle_stacked_parts_combine():
  r = np.random.default_rng(2)
  theta = r.normal(size=(4, 30)).astype(np.float32)
  delta = (1e-6 * r.normal(size=(4, 30)) + 1e-6 * theta).astype(np.float32)
  parts = norms.unit_pair_stats(theta, delta, axis=0)
  split = [norms.PairStats(*(f[i] for f in parts)) for i in range(4)]
  got = float(norms.angle_from_stats(norms.combine_pair_stats(split)))
  np.testing.assert_allclose(got, _ref_angle(_np(theta).ravel(), _np(delta).ravel()), rtol=1e-5)
