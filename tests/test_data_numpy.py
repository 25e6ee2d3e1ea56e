"""The TensorFlow-free data path against the seqio one: same features, statistics, resumption.

The seqio/TF side is ``pipeline.make_batch_iterator`` on the same prepared botchan split,
unshuffled, so both read the same raw segments in the same order: causal-LM batches must be
equal, span corruption and prefix LM must undo to the same segments, with per-example noise
and span counts equal (they depend on the length only) and the random parts (span lengths,
split points) drawn from the same distributions.
"""

import os
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest

from data_helpers import data_cache  # noqa: F401  (session fixture)
from data_helpers import reconstruct_spans
from normgrowth_jax import gin_utils, sinks
from normgrowth_jax import train  # noqa: F401  (registers the train.train configurable)
from normgrowth_jax.data import numpy_pipeline as npp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SC, PLM, CLM = (
    "ng_span_corruption_botchan_bytes",
    "ng_prefix_lm_botchan_bytes",
    "ng_causal_lm_botchan_bytes",
)
SC_LENGTHS = {"inputs": 64, "targets": 16}  # random_spans_helper(64) = (70, 14)
PLM_LENGTHS = {"inputs": 32, "targets": 32}
BLOCK_TF = textwrap.dedent("""\
    import sys
    for name in ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text"):
      sys.modules[name] = None
    """)


def _examples(batches):
  """Unpadded ``{"inputs"?, "targets"}`` rows of every batch (pad id 0 never occurs in text)."""
  out = []
  for b in batches:
    for i in range(len(b["decoder_target_tokens"])):
      row = {"targets": b["decoder_target_tokens"][i][b["decoder_target_tokens"][i] != 0]}
      if "encoder_input_tokens" in b:
        row["inputs"] = b["encoder_input_tokens"][i][b["encoder_input_tokens"][i] != 0]
      out.append(row)
  return out


def _both(task, lengths, seed=3, batch_size=32, split="train"):
  """(seqio batches, NumPy batches): one unshuffled epoch of ``split`` each."""
  from normgrowth_jax.data import pipeline  # TensorFlow: only for the reference

  kw = dict(shuffle=False, num_epochs=1)
  ref = list(pipeline.make_batch_iterator(task, split, lengths, batch_size, seed, **kw))
  ours = list(npp.batches(task, split, lengths, batch_size, seed, **kw))
  return ref, ours


@pytest.fixture(scope="module")
def span_batches(data_cache):  # noqa: F811
  return _both(SC, SC_LENGTHS)


@pytest.fixture(scope="module")
def prefix_batches(data_cache):  # noqa: F811
  return _both(PLM, PLM_LENGTHS)


def test_imports_without_tensorflow_or_seqio():
  code = BLOCK_TF + (
      "import normgrowth_jax.data.numpy_pipeline, normgrowth_jax.train\n"
      "import normgrowth_jax.data as d; d.numpy_pipeline\n"
      "assert not any(m.startswith(('tensorflow.', 'seqio.')) for m in sys.modules)\n"
  )
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_byte_tokens_are_seqio_byte_vocabulary():
  from normgrowth_jax.data import vocab

  v = vocab.get_vocabulary("bytes")
  text = "Naïve café — 東京\n\t~"
  assert npp.encode_bytes(text).tolist() == v.encode(text)
  assert (npp.PAD_ID, npp.EOS_ID, npp.UNK_ID) == (v.pad_id, v.eos_id, v.unk_id)
  assert npp.BYTE_VOCAB_SIZE == v.vocab_size == 359


def test_causal_lm_batches_equal_seqio(data_cache):  # noqa: F811
  ref, ours = _both(CLM, {"targets": 48}, batch_size=16, split="validation")
  assert len(ref) == len(ours) > 4
  for r, o in zip(ref, ours):
    assert list(r) == list(o)  # same features in the same order
    for k in r:
      assert o[k].dtype == r[k].dtype == np.int32
      np.testing.assert_array_equal(o[k], r[k])


def test_span_corruption_undoes_to_the_seqio_segments(span_batches):
  ref, ours = span_batches
  assert [list(b) for b in ours] == [list(b) for b in ref]
  assert all(
      o[k].shape == r[k].shape and o[k].dtype == r[k].dtype for r, o in zip(ref, ours) for k in r
  )
  ref, ours = _examples(ref), _examples(ours)
  assert len(ref) == len(ours) > 3000
  for r, o in zip(ref, ours):
    raw = reconstruct_spans(r["inputs"][:-1], r["targets"][:-1], 359)
    np.testing.assert_array_equal(reconstruct_spans(o["inputs"][:-1], o["targets"][:-1], 359), raw)
    # Noise and span counts are functions of the segment length: equal per example.
    assert o["inputs"].size == r["inputs"].size and o["targets"].size == r["targets"].size
  # Full segments (70 tokens) fill the inputs exactly, EOS included.
  assert sum(o["inputs"].size == 64 for o in ours) > 0.9 * len(ours)


def _span_stats(examples):
  """(noise fraction, noise span lengths, non-noise run lengths) over all examples, checking
  each example's sentinels (358, 357, ... in both features) and EOS."""
  noise = total = 0
  spans, runs = [], []
  for x in examples:
    assert x["inputs"][-1] == x["targets"][-1] == 1  # EOS
    inputs, targets = x["inputs"][:-1], x["targets"][:-1]
    starts, in_starts = np.flatnonzero(targets >= 259), np.flatnonzero(inputs >= 259)
    if targets.size == 1:  # a one-token segment (end of a group): no noise, targets <s0> only
      assert targets[0] == 358 and inputs.size == 1
      total += 1
      continue
    sentinels = 358 - np.arange(starts.size)  # <extra_id_0>, <extra_id_1>, ...
    np.testing.assert_array_equal(targets[starts], sentinels)
    np.testing.assert_array_equal(inputs[in_starts], sentinels)
    assert starts[0] == 0 and in_starts[-1] == inputs.size - 1  # non-noise first, noise last
    spans += (np.diff(np.append(starts, targets.size)) - 1).tolist()
    runs += (np.diff(np.concatenate([[-1], in_starts])) - 1).tolist()
    noise += targets.size - starts.size
    total += targets.size + inputs.size - 2 * starts.size
  return noise / total, np.array(spans), np.array(runs)


def test_span_statistics_match_seqio(span_batches):
  ref, ours = (_span_stats(_examples(b)) for b in span_batches)
  assert ours[0] == pytest.approx(ref[0], abs=1e-9)  # noise counts are equal per example
  assert ours[0] == pytest.approx(10 / 70, abs=0.003)  # round(70 * 0.15) = 10 (half to even)
  assert len(ours[1]) == len(ref[1])
  assert ours[1].min() == ref[1].min() == 1
  assert ours[1].mean() == pytest.approx(ref[1].mean(), abs=1e-9)  # spans per example are equal
  for lengths in (1, 2, 3, 4, 5, 6):  # the distribution of span lengths, beyond its mean
    assert np.mean(ours[1] == lengths) == pytest.approx(np.mean(ref[1] == lengths), abs=0.015)
  for lengths in (1, 5, 10, 17, 25):
    assert np.mean(ours[2] <= lengths) == pytest.approx(np.mean(ref[2] <= lengths), abs=0.015)


def test_prefix_lm_matches_seqio(prefix_batches):
  ref, ours = prefix_batches
  assert [list(b) for b in ours] == [list(b) for b in ref]
  ref, ours = _examples(ref), _examples(ours)
  assert len(ref) == len(ours) > 3000
  max_inputs, max_targets = PLM_LENGTHS["inputs"] - 1, PLM_LENGTHS["targets"] - 1
  fractions = {}
  for name, examples in (("ref", ref), ("ours", ours)):
    k, n = [], []
    for x in examples:
      assert x["inputs"][-1] == x["targets"][-1] == 1
      k.append(x["inputs"].size - 1)
      n.append(x["inputs"].size + x["targets"].size - 2)
    k, n = np.array(k), np.array(n)
    low, high = np.maximum(1, n - max_targets), np.minimum(n - 1, max_inputs)
    assert np.all((low <= k) & (k <= high))
    fractions[name] = (k - low) / np.maximum(high - low, 1)  # uniform on [0, 1]
  for r, o in zip(ref, ours):  # the same segments, cut elsewhere
    np.testing.assert_array_equal(
        np.concatenate([o["inputs"][:-1], o["targets"][:-1]]),
        np.concatenate([r["inputs"][:-1], r["targets"][:-1]]),
    )
  for q in (0.1, 0.25, 0.5, 0.75, 0.9):
    assert np.quantile(fractions["ours"], q) == pytest.approx(
        np.quantile(fractions["ref"], q), abs=0.03
    )


@pytest.mark.parametrize(
    "task,lengths", [(SC, SC_LENGTHS), (PLM, PLM_LENGTHS), (CLM, {"targets": 48})]
)
def test_deterministic_and_resumable_across_epochs(task, lengths):
  text = npp.builtin_text("validation")[:8000]  # an epoch is a few batches
  kw = dict(texts=text)
  full = npp.batches(task, "train", lengths, 16, seed=5, **kw)
  first = [next(full) for _ in range(40)]
  n_segments = len(full.segments)
  assert 40 * 16 > 2 * n_segments and full.position == 40  # two epochs and more
  again = [next(npp.batches(task, "train", lengths, 16, seed=5, **kw)) for _ in range(1)]
  for k in first[0]:
    np.testing.assert_array_equal(again[0][k], first[0][k])
  for start in (1, 7, 33):
    resumed = npp.batches(task, "train", lengths, 16, seed=5, start_batch=start, **kw)
    for b in first[start : start + 3]:
      r = next(resumed)
      for k in b:
        np.testing.assert_array_equal(r[k], b[k])
    assert resumed.position == start + 3
  other = next(npp.batches(task, "train", lengths, 16, seed=6, **kw))
  assert not np.array_equal(other["decoder_target_tokens"], first[0]["decoder_target_tokens"])
  # A new epoch reshuffles and (span corruption, prefix LM) redraws the noise.
  it = npp.batches(task, "train", lengths, 16, seed=5, **kw)
  assert it.example(0, 0)["targets"].tolist() != it.example(1, 0)["targets"].tolist()


def test_validation_is_one_ordered_epoch_with_its_last_partial_batch():
  text = "\n".join(f"line {i} of a small text" for i in range(200))
  it = npp.batches(CLM, "validation", {"targets": 40}, 7, seed=0, texts={"validation": text})
  rows = np.concatenate([b["decoder_target_tokens"] for b in it])
  assert len(rows) == len(it.segments) and len(rows) % 7
  stream = rows[rows != 0]
  expected = npp.encode_bytes("".join(f"line {i} of a small text\n" for i in range(200)))
  np.testing.assert_array_equal(stream[stream != 1], expected)
  assert (stream == 1).sum() == 200  # one EOS per line


def test_sources_and_errors(tmp_path, data_cache):  # noqa: F811
  path = tmp_path / "t.txt"
  path.write_text("Some text in a file.\n" * 50)
  from_file = next(npp.batches(CLM, "train", {"targets": 32}, 4, 0, source=str(path)))
  from_texts = next(npp.batches(CLM, "train", {"targets": 32}, 4, 0, texts=path.read_text()))
  np.testing.assert_array_equal(
      from_file["decoder_target_tokens"], from_texts["decoder_target_tokens"]
  )
  corpus = next(
      npp.batches(
          "ng_causal_lm_anything_bytes", "validation", {"targets": 32}, 4, 0, source="botchan"
      )
  )
  np.testing.assert_array_equal(
      corpus["decoder_target_tokens"],
      next(npp.batches(CLM, "validation", {"targets": 32}, 4, 0))["decoder_target_tokens"],
  )
  with pytest.raises(ValueError, match="byte vocabulary only"):
    npp.batches("ng_span_corruption_bbc_spm32k", "train", SC_LENGTHS, 4, 0)
  with pytest.raises(ValueError, match="mixture"):
    npp.batches("ng_span_corruption_offline_bytes", "train", SC_LENGTHS, 4, 0)
  with pytest.raises(ValueError, match="targets >= 58"):
    npp.batches(SC, "train", {"inputs": 256, "targets": 32}, 4, 0)
  with pytest.raises(ValueError, match="causal_lm takes"):
    npp.batches(CLM, "train", SC_LENGTHS, 4, 0)
  with pytest.raises(FileNotFoundError, match="prepare"):
    npp.batches("ng_causal_lm_shakespeare_bytes", "train", {"targets": 32}, 4, 0, root=tmp_path)


def test_gin_selects_it():
  gin.clear_config()
  try:
    gin_utils.parse_gin(
        ["gin_configs/local/t5_tiny_bbc_adafactor.gin"],
        ["train.train.data_fn=@numpy_data.batches", "numpy_data.batches.source='builtin'"],
    )
    assert gin.query_parameter("train.train.data_fn").selector == "numpy_data.batches"
    assert gin.query_parameter("numpy_data.batches.source") == "builtin"
  finally:
    gin.clear_config()


@pytest.mark.slow  # measured ~45 s on 2 CPU cores (a T5 tiny compile)
def test_train_runs_without_tensorflow(tmp_path):
  """``python -m normgrowth_jax.train`` with TensorFlow and seqio unimportable."""
  (tmp_path / "site").mkdir()
  (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_TF)
  run = tmp_path / "run"
  cmd = [
      sys.executable,
      "-m",
      "normgrowth_jax.train",
      "--gin_file=gin_configs/local/t5_tiny_bbc_adafactor.gin",
      f"--gin.MODEL_DIR={run}",
      "--gin.TRAIN_STEPS=3",
      "--gin.CHECKPOINT_PERIOD=3",
      "--gin.BATCH_SIZE=4",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
      "--gin.LOG_EVERY=1",
      "--gin.train.train.data_fn=@numpy_data.batches",
      "--gin.numpy_data.batches.source=builtin",
      "--gin.train.train.tensorboard=False",
  ]
  env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = sinks.read_jsonl(run / "metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2, 3] and np.isfinite([r["loss"] for r in rows]).all()
