"""The causal-LM path: word-level sentence data, the SmallLM adapter and evaluator, the trainer."""

import json

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_helpers import data_cache  # noqa: F401  (pytest fixture)
from normgrowth_jax import causal_lm, checkpoints, gin_utils, sinks, train
from normgrowth_jax.data import corpora, word_lm
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig, lm_loss

GIN = ["gin_configs/local/models/small_lm.gin", "gin_configs/local/runs/causal_lm.gin"]
TINY = [
    "MIXTURE_OR_TASK_NAME='ng_word_lm_botchan'",
    "NUM_LAYERS=1",
    "D_MODEL=16",
    "D_FF=16",
    "NUM_HEADS=2",
    "VOCAB_WORDS=300",
    "MAX_LEN=24",
    "BATCH_SIZE=4",
    "LOG_EVERY=1",
    "EVAL_SENTENCES=8",
    "TRACK_EVERY=1",
]


@pytest.fixture(autouse=True)
def _fresh_gin():
  gin.clear_config()
  yield
  gin.clear_config()


# ----------------------------------------------------------------------------- text


def test_raw_sentences_and_ptb_like_tokens():
  text = (
      "Mr. Brown's firm earned $1.5bn in 2004, up 7%. \"It's great,\" he said! "
      "Sales in the U.S. rose. J. Smith didn't agree?"
  )
  sents = word_lm.split_raw_sentences(text)
  assert sents == [
      "Mr. Brown's firm earned $1.5bn in 2004, up 7%.",
      '"It\'s great," he said!',
      "Sales in the U.S. rose.",
      "J. Smith didn't agree?",
  ]
  assert word_lm.ptb_like_tokens(sents[0]) == [
      "mr",
      "brown",
      "'s",
      "firm",
      "earned",
      "$",
      "N",
      "in",
      "N",
      "up",
      "N",
  ]
  assert word_lm.ptb_like_tokens(sents[2]) == ["sales", "in", "the", "u.s.", "rose"]
  # An initial keeps its period, as PTB writes it.
  assert word_lm.ptb_like_tokens(sents[3]) == ["j.", "smith", "did", "n't", "agree"]


def test_tokenized_corpora_keep_their_tokens():
  ptb = list(word_lm.corpus_sentences("ptb", ["the u.s. N <unk> rose\n", "\n", "Hi there\n"]))
  assert ptb == [["the", "u.s.", "N", "<unk>", "rose"], ["hi", "there"]]
  wiki = list(
      word_lm.corpus_sentences(
          "wikitext2", [" = Title = \n", " It was @-@ big . Then it fell ! And \n"]
      )
  )
  assert wiki == [["it", "was", "@-@", "big", "."], ["then", "it", "fell", "!"], ["and"]]


def test_vocab_encoding_padding_and_length_limit():
  sents = [["b", "a", "b"], ["c", "a", "b"], ["<unk>", "d"], ["a"] * 9]
  vocab = word_lm.build_vocab(sents, vocab_words=2)
  assert vocab == ("<pad>", "<eos>", "<unk>", "a", "b")  # a: 11, b: 3, then c/d cut
  rows, stats = word_lm.encode_sentences(sents, vocab, max_len=5)
  np.testing.assert_array_equal(rows, [[4, 3, 4, 1, 0], [2, 3, 4, 1, 0], [2, 2, 1, 0, 0]])
  assert stats["sentences"] == 3 and stats["dropped_too_long"] == 1
  assert stats["unk_rate"] == pytest.approx(3 / 8)  # c, <unk>, d of 8 words
  assert word_lm.num_ids(2) == 5


def test_ptb_files_feed_the_same_task(tmp_path):
  src = tmp_path / "ptb_src"
  src.mkdir()
  words = "the cat sat on the mat while the dog ran".split()
  for name, n in (("train", 40), ("valid", 6), ("test", 5)):
    rng = np.random.default_rng(len(name))
    lines = [" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(n)]
    (src / f"ptb.{name}.txt").write_text("\n".join(" " + l + " " for l in lines) + "\n")
  root = tmp_path / "cache"
  corpora.prepare_ptb(src, root, progress=False)
  data = word_lm.load("ptb", vocab_words=5, max_len=10, root=root)
  assert set(data.splits) == {"train", "validation", "test"}
  assert data.split("train").shape == (40, 10) and data.split("validation").shape[0] == 6
  assert data.vocab[3] == "the" and len(data.vocab) == 8
  first = (src / "ptb.train.txt").read_text().splitlines()[0].split()
  assert data.decode(data.split("train")[0]) == " ".join(
      w if w in data.vocab else "<unk>" for w in first
  )
  again = word_lm.load("ptb", vocab_words=5, max_len=10, root=root)  # from the cache
  np.testing.assert_array_equal(again.split("test"), data.split("test"))
  it = word_lm.batch_iterator(
      "ng_word_lm_ptb", "train", {"targets": 10}, 8, seed=3, vocab_words=5, root=root
  )
  epoch0 = [next(it)["decoder_target_tokens"] for _ in range(5)]  # 40 // 8 batches
  np.testing.assert_array_equal(
      np.sort(np.concatenate(epoch0), axis=0), np.sort(data.split("train"), axis=0)
  )


def test_wikitext2_files_feed_the_same_task(tmp_path):
  src = tmp_path / "wt2"
  src.mkdir()
  text = " = Heading = \n It was big . It fell ! \n\n Then it rose . \n"
  for name in ("train", "valid", "test"):
    (src / f"wiki.{name}.tokens").write_text(text)
  corpora.prepare_wikitext2(src, tmp_path / "cache", progress=False)
  data = word_lm.load("wikitext2", vocab_words=50, max_len=6, root=tmp_path / "cache")
  assert [data.decode(r) for r in data.split("validation")] == [
      "it was big .",
      "it fell !",
      "then it rose .",
  ]


def test_epoch_iterator_resumes_exactly():
  tokens = np.arange(30, dtype=np.int32).reshape(10, 3)
  full = word_lm.EpochIterator(tokens, batch_size=3, seed=1)
  batches = [next(full)["decoder_target_tokens"] for _ in range(8)]  # 3 per epoch
  resumed = word_lm.EpochIterator(tokens, batch_size=3, seed=1, start_batch=5)
  for b in batches[5:]:
    np.testing.assert_array_equal(next(resumed)["decoder_target_tokens"], b)
  assert resumed.position == 8
  np.testing.assert_array_equal(
      word_lm.epoch_batches(tokens, 3, seed=1, epoch=1).reshape(-1, 3), np.concatenate(batches[3:6])
  )
  with pytest.raises(ValueError, match="cannot fill"):
    word_lm.EpochIterator(tokens[:2], batch_size=3, seed=0)


def test_task_names_and_errors(tmp_path, monkeypatch):
  assert word_lm.corpus_of_task(word_lm.task_name("bbc")) == "bbc"
  with pytest.raises(ValueError, match="ng_word_lm_"):
    word_lm.corpus_of_task("ng_causal_lm_bbc_bytes")
  with pytest.raises(ValueError, match="targets"):
    word_lm.batch_iterator("ng_word_lm_bbc", "train", {"inputs": 8, "targets": 8}, 2, 0)
  monkeypatch.setenv("NORMGROWTH_DATA", str(tmp_path / "empty"))
  with pytest.raises(corpora.CorpusNotPreparedError, match="prepare"):
    word_lm.load("shakespeare")


# ----------------------------------------------------------------------------- adapter


def test_adapter_loss_matches_lm_loss_and_counts_pairs():
  model = SmallLM(
      SmallLMConfig(vocab_size=11, num_layers=1, d_model=8, d_ff=8, num_heads=2, max_len=6)
  )
  tokens = jnp.array([[5, 6, 7, 1, 0, 0], [4, 4, 9, 8, 3, 1]])
  init_fn, loss_fn = causal_lm.loss_adapter(model)
  params = init_fn(jax.random.PRNGKey(0), {"decoder_target_tokens": tokens})
  loss, aux = loss_fn(params, {"decoder_target_tokens": tokens}, None)
  out = model.apply({"params": params}, tokens)
  assert float(loss) == pytest.approx(float(lm_loss(out.logits, tokens, tokens != 0)), rel=1e-6)
  assert float(aux["weight_sum"]) == 3 + 5
  assert float(aux["loss"]) == pytest.approx(float(loss) * 8, rel=1e-6)
  ev = causal_lm.evaluate(model, params, np.asarray(tokens), batch_size=3)  # one padded batch
  assert ev["loss"] == pytest.approx(float(loss), rel=1e-5)
  assert ev["perplexity"] == pytest.approx(np.exp(ev["loss"]), rel=1e-6)
  assert ev["tokens"] == 10
  assert 0 < ev["saturation_limit"] <= 1 and 0 < ev["saturation_rho"] <= 1
  assert ev["saturation_rho"] == ev["saturation_rho/layers_0"]


# ----------------------------------------------------------------------------- trainer


def _train(model_dir, *bindings):
  gin.clear_config()
  gin_utils.parse_gin(GIN, [f"MODEL_DIR='{model_dir}'", *TINY, *bindings])
  return train.train(progress=False)


def _params(model_dir, step):
  import orbax.checkpoint as ocp

  mngr = ocp.CheckpointManager(model_dir / "checkpoints", item_names=("state",))
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return state["params"]


def test_trainer_trains_small_lm_and_resumes_bit_identically(tmp_path, data_cache):
  # The saturation columns are tested above and by Fig. 3's smoke run; here they are off, to
  # save their compilation three times over.
  fast = "causal_lm.dev_evaluator.saturation=False"
  # One straight run of 12 steps ...
  summary = _train(tmp_path / "a", "TRAIN_STEPS=12", "EVAL_EVERY=4", "CHECKPOINT_PERIOD=4", fast)
  assert summary["step"] == 12 and np.isfinite(summary["loss"])
  rows = sinks.read_jsonl(tmp_path / "a" / "eval.jsonl")
  assert [r["step"] for r in rows] == [0, 4, 8, 12]
  assert rows[-1]["loss"] < rows[0]["loss"]
  assert rows[0]["perplexity"] == pytest.approx(np.exp(rows[0]["loss"]), rel=1e-4)
  norms_rows = sinks.read_jsonl(tmp_path / "a" / "norms.jsonl")
  assert [r["step"] for r in norms_rows] == list(range(1, 13))
  assert "param_norm/encoder/layers_0" in norms_rows[-1]
  # ... equals 8 steps, a killed tail (rows written past the last checkpoint), then 4 more.
  _train(tmp_path / "b", "TRAIN_STEPS=8", "EVAL_EVERY=4", "CHECKPOINT_PERIOD=4", fast)
  with open(tmp_path / "b" / "eval.jsonl", "a") as f:
    f.write(json.dumps({"step": 10, "loss": -1.0}) + "\n")
  resumed = _train(tmp_path / "b", "TRAIN_STEPS=12", "EVAL_EVERY=4", "CHECKPOINT_PERIOD=4", fast)
  assert resumed["resumed_from"] == 8
  assert sinks.read_jsonl(tmp_path / "b" / "eval.jsonl") == rows
  assert sinks.read_jsonl(tmp_path / "b" / "norms.jsonl") == norms_rows
  a, b = _params(tmp_path / "a", 12), _params(tmp_path / "b", 12)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert checkpoints.Checkpointer(tmp_path / "b" / "checkpoints").all_steps() == [8, 12]
