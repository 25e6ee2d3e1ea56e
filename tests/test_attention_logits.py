"""attention_logits: logit margin and spread against a float64 NumPy loop, the analytic cases
(ties, one visible key, padding), and the scores SmallLM sows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normgrowth_jax import attention_logits as al
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig, causal_attention_mask


def _reference(scores, visible, query_mask):
  """float64 loops: per layer and head, the mean over real queries of margin and spread."""
  s = np.asarray(scores, np.float64)
  L, b, h, q, _ = s.shape
  vis = np.broadcast_to(visible, (b, h, q, s.shape[-1]))
  margin, spread = np.zeros((L, h)), np.zeros((L, h))
  for l in range(L):
    for j in range(h):
      m, sp = [], []
      for i in range(b):
        for t in range(q):
          if not query_mask[i, t]:
            continue
          v = s[l, i, j, t][vis[i, j, t]]
          if v.size >= 1:
            sp.append(v.std())
          if v.size >= 2:
            top = np.sort(v)[::-1]
            m.append(top[0] - top[1])
      margin[l, j] = np.mean(m) if m else 0.0
      spread[l, j] = np.mean(sp) if sp else 0.0
  return margin, spread


def test_matches_float64_reference_on_random_scores():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(3, 2, 4, 6, 6)) * rng.uniform(0.1, 5.0, size=(3, 1, 4, 1, 1))
  real = np.ones((2, 6), bool)
  real[1, 4:] = False
  visible = np.asarray(causal_attention_mask(jnp.asarray(real)))  # [b, 1, q, k]
  got = al.logit_stats(jnp.asarray(scores, jnp.float32), jnp.asarray(visible), jnp.asarray(real))
  margin, spread = _reference(scores, visible, real)
  np.testing.assert_allclose(np.asarray(got["margin"]), margin, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got["spread"]), spread, rtol=1e-5, atol=1e-6)
  # the first query of each sentence sees one key (no margin), padding queries do not count:
  # 5 + 3 queries
  assert np.asarray(got["queries"]).tolist() == [[8] * 4] * 3


def test_ties_give_zero_margin_and_a_lone_key_none():
  tied = jnp.zeros((1, 1, 1, 2, 3))
  tied = tied.at[..., 1, :].set(jnp.array([4.0, 4.0, 1.0]))
  vis = jnp.array([[True, False, False], [True, True, True]])
  st = al.logit_stats(tied, vis)
  assert float(st["margin"][0, 0]) == 0.0  # the only query with two keys is tied at the top
  assert int(st["queries"][0, 0]) == 1
  np.testing.assert_allclose(float(st["spread"][0, 0]), np.std([4.0, 4.0, 1.0]) / 2, rtol=1e-6)


def test_every_key_visible_by_default():
  s = jnp.array([[[[0.0, 3.0, 1.0]]]])
  st = al.logit_stats((s,))
  assert float(st["margin"][0, 0]) == pytest.approx(2.0)


def _model(mask="causal"):
  cfg = SmallLMConfig(
      vocab_size=30, num_layers=2, d_model=16, d_ff=16, num_heads=2, max_len=6, attention_mask=mask
  )
  m = SmallLM(cfg)
  tokens = jnp.array([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12]])
  params = m.init(jax.random.PRNGKey(0), tokens)["params"]
  return m, params, tokens


@pytest.mark.parametrize("mask", ["causal", "original_leaky"])
def test_sown_scores_are_the_softmax_input(mask):
  m, params, tokens = _model(mask)
  assert "intermediates" not in m.init(jax.random.PRNGKey(0), tokens)  # init leaves them out
  out, state = m.apply({"params": params}, tokens, mutable=["intermediates"])
  scores = al.sown_scores(state["intermediates"])
  assert len(scores) == 2
  real = tokens != 0
  vis = causal_attention_mask(real) if mask == "causal" else jnp.ones((1, 1, 6, 6), bool)
  for s, w in zip(scores, out.attention_weights):
    z = jnp.where(vis, s, -jnp.inf)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(z, axis=-1)), np.asarray(w), atol=1e-6)


def test_no_scores_without_mutable_intermediates():
  with pytest.raises(ValueError, match="mutable"):
    al.sown_scores({})


def test_qk_norms_against_numpy():
  _, params, _ = _model()
  got = al.qk_norms(params)
  for i, v in enumerate(got):
    a = params["encoder"][f"layers_{i}"]["attention"]
    want = np.linalg.norm(np.asarray(a["query"]["kernel"], np.float64)) * np.linalg.norm(
        np.asarray(a["key"]["kernel"], np.float64)
    )
    assert v == pytest.approx(want, rel=1e-12)
