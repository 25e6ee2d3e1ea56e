"""The paper's small LMs: one architecture, one model builder, and the trainer runs of a family.

Figs. 3, 4 and 6 all use the paper's small causal LM (12 layers, d_model 768, FF 512, 12 heads;
pre-norm x + LN(F(x)) or post-norm LN(x + F(x))). Each figure's config embeds an
:class:`Architecture` (Figs. 4, 6) or a whole :class:`RunConfig` (Fig. 3 and its long variant),
and every model is built by :func:`model`. A :class:`RunConfig` is a family of embedded-trainer
runs (``causal_lm`` on ``word_lm`` sentences, AdamW): one per norm x attention mask x seed,
configured by the gin files :data:`GIN_FILES` and :func:`bindings`, cached by ``runs``.
``PROFILES`` holds the family each profile trains (Fig. 3 measures it, Fig. 2 draws its
correct-mask models).

Example:
  >>> run = PROFILES["smoke"]
  >>> run_name("postnorm", "causal", 0), run.arch.describe()
  ('fig3-postnorm-causal-seed0', '1 layers, d_model 16, FF 16, 2 heads')
  >>> model(run.arch, vocab_size=10, max_len=8, norm="postnorm").config.num_heads
  2
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp

from normgrowth_jax import sinks
from normgrowth_jax.analysis import checkpoints as ckpt_reader
from normgrowth_jax.data import corpora, word_lm
from normgrowth_jax.figures import runs
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

GIN_FILES = ("gin_configs/local/models/small_lm.gin", "gin_configs/local/runs/causal_lm.gin")
NORMS = {"prenorm_paper": "pre-norm", "postnorm": "post-norm"}
MASKS = {"causal": "correct mask", "original_leaky": "original mask"}
PAPER_KEY = {"prenorm_paper": "prenorm", "postnorm": "postnorm"}  # keys of figures/paper.py


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The small LM's size; the default is the paper's."""

  num_layers: int = 12
  d_model: int = 768
  d_ff: int = 512
  num_heads: int = 12

  def describe(self) -> str:
    return (
        f"{self.num_layers} layers, d_model {self.d_model}, FF {self.d_ff}, "
        f"{self.num_heads} heads"
    )

  @property
  def is_paper_size(self) -> bool:
    return self == Architecture()


def model(arch: Architecture, vocab_size: int, max_len: int, **switches) -> SmallLM:
  """The SmallLM of ``arch``; ``switches`` are the other `SmallLMConfig` fields (norm, mask,
  activation, dropout, ...)."""
  return SmallLM(
      SmallLMConfig(
          vocab_size=vocab_size,
          num_layers=arch.num_layers,
          d_model=arch.d_model,
          d_ff=arch.d_ff,
          num_heads=arch.num_heads,
          max_len=max_len,
          **switches,
      )
  )


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """A family of small-LM trainer runs: data, model, training budget and evaluations.

  ``steps`` fixes the training length; with ``steps=None`` it is ``epochs`` epochs of the
  corpus's training sentences (batch ``batch_size``). ``evals`` dev evaluations (and
  checkpoints) are spread evenly; ``rho`` is the evaluator's saturation scale.
  """

  corpus: str = "bbc"
  vocab_words: int = 10_000
  max_len: int = 83
  arch: Architecture = Architecture()
  batch_size: int = 16
  steps: Optional[int] = None
  epochs: float = 5.0
  evals: int = 5
  eval_sentences: Optional[int] = None
  seeds: tuple = (0, 1, 2)
  rho: float = 1000.0
  learning_rate: float = 1e-3
  weight_decay: float = 0.01
  track_every: int = 1
  norms: tuple = tuple(NORMS)
  masks: tuple = tuple(MASKS)


PROFILES = {
    "smoke": RunConfig(
        corpus="botchan",
        vocab_words=300,
        max_len=24,
        arch=Architecture(num_layers=1, d_model=16, d_ff=16, num_heads=2),
        steps=16,
        evals=1,
        eval_sentences=16,
        seeds=(0,),
        track_every=4,
        norms=("prenorm_paper",),
    ),
    "quick": RunConfig(
        vocab_words=2000,
        max_len=40,
        arch=Architecture(num_layers=4, d_model=64, d_ff=128, num_heads=4),
        steps=600,
        evals=4,
        eval_sentences=200,
        seeds=(0, 1, 2),
        track_every=10,
    ),
    "full": RunConfig(),
}


def load_data(run: RunConfig) -> word_lm.WordLMData:
  """The word-level sentences (a built-in corpus is fetched and prepared once)."""
  if run.corpus in corpora.BUILTIN_CORPORA:
    corpora.prepare(run.corpus, progress=False)
  return word_lm.load(run.corpus, run.vocab_words, run.max_len)


def train_steps(run: RunConfig, data: Optional[word_lm.WordLMData] = None) -> int:
  if run.steps is not None:
    return run.steps
  data = data or load_data(run)
  return int(round(run.epochs * word_lm.steps_per_epoch(len(data.split("train")), run.batch_size)))


def epochs(run: RunConfig, steps: int, data: word_lm.WordLMData) -> float:
  return steps / word_lm.steps_per_epoch(len(data.split("train")), run.batch_size)


def variants(run: RunConfig) -> list[tuple[str, str]]:
  """(norm, mask) of every variant, masks outermost."""
  return [(n, m) for m in run.masks for n in run.norms]


def variant_label(norm: str, mask: str) -> str:
  return f"{NORMS[norm]}, {MASKS[mask]}"


def keys(run: RunConfig) -> list[tuple[str, str, int]]:
  """(norm, mask, seed) of every run."""
  return [(norm, mask, seed) for norm, mask in variants(run) for seed in run.seeds]


def run_name(norm: str, mask: str, seed: int) -> str:
  return f"fig3-{norm}-{mask}-seed{seed}"


def _eval_every(steps: int, run: RunConfig) -> int:
  return max(1, steps // run.evals)


def bindings(run: RunConfig, norm: str, mask: str, seed: int, steps: int) -> list[str]:
  """The gin overrides of one run (on top of ``GIN_FILES``)."""
  every = _eval_every(steps, run)
  a = run.arch
  return [
      f"MIXTURE_OR_TASK_NAME='{word_lm.task_name(run.corpus)}'",
      f"TRAIN_STEPS={steps}",
      f"NUM_LAYERS={a.num_layers}",
      f"D_MODEL={a.d_model}",
      f"D_FF={a.d_ff}",
      f"NUM_HEADS={a.num_heads}",
      f"VOCAB_WORDS={run.vocab_words}",
      f"MAX_LEN={run.max_len}",
      f"NORM='{norm}'",
      f"ATTENTION_MASK='{mask}'",
      f"SEED={seed}",
      f"BATCH_SIZE={run.batch_size}",
      f"LEARNING_RATE={run.learning_rate}",
      f"WEIGHT_DECAY={run.weight_decay}",
      f"EVAL_EVERY={every}",
      f"EVAL_SENTENCES={run.eval_sentences}",
      f"RHO={run.rho}",
      f"CHECKPOINT_PERIOD={every}",
      f"KEEP_CHECKPOINTS={run.evals + 2}",
      f"TRACK_EVERY={run.track_every}",
      "LOG_EVERY=50",
  ]


def spec(run: RunConfig, norm: str, mask: str, seed: int, steps: int) -> runs.RunSpec:
  return runs.RunSpec(
      run_name(norm, mask, seed), GIN_FILES, tuple(bindings(run, norm, mask, seed, steps)), steps
  )


def specs(run: RunConfig, steps: Optional[int] = None) -> list[runs.RunSpec]:
  """Every run of the family, in :func:`keys`' order."""
  steps = train_steps(run) if steps is None else steps
  return [spec(run, *k, steps) for k in keys(run)]


def train_all(ctx, run: RunConfig, steps: int) -> dict:
  """Trains (or finds in the run cache) every run: {(norm, mask, seed): run directory}."""
  return dict(zip(keys(run), runs.train_specs(ctx, specs(run, steps))))


def run_model(run: RunConfig, norm: str, mask: str) -> SmallLM:
  """The SmallLM a run trains (what its gin bindings build)."""
  return model(
      run.arch, word_lm.num_ids(run.vocab_words), run.max_len, norm=norm, attention_mask=mask
  )


def init_params(run: RunConfig, norm: str, mask: str, seed: int):
  """A run's initial parameters, drawn exactly as ``train.train`` draws them."""
  from normgrowth_jax import causal_lm, train  # pylint: disable=g-import-not-at-top

  init_fn, _ = causal_lm.loss_adapter(run_model(run, norm, mask))
  return train.initial_params(init_fn, seed, {"targets": run.max_len}, run.batch_size)


def restore_params(run_dir: Path, step: int):
  """The parameters of checkpoint ``step`` of a run (``run_dir`` may be relative)."""
  refs = {r.step: r for r in ckpt_reader.list_checkpoints(run_dir)}
  if step not in refs:
    raise FileNotFoundError(f"{run_dir} has no checkpoint {step}; it has {sorted(refs)}.")
  return jax.tree.map(jnp.asarray, ckpt_reader.read_state_tree(refs[step], ("params",)))


def checkpoint_steps(run_dir: Path) -> list[int]:
  """The steps of a run's checkpoints on disk, ascending."""
  d = Path(run_dir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def best_step(eval_rows: list[dict], available: list[int]) -> int:
  """The evaluated step > 0 with the lowest dev loss among those with a checkpoint."""
  cands = [
      r for r in eval_rows if r["step"] > 0 and r["step"] in available and r.get("loss") is not None
  ]
  if not cands:
    raise ValueError(f"no evaluated checkpoint among steps {available}")
  return min(cands, key=lambda r: (r["loss"], r["step"]))["step"]


def best_checkpoint(run_dir: Path) -> int:
  """A run's evaluated checkpoint with the lowest dev loss."""
  rows = sinks.read_jsonl(str(Path(run_dir) / "eval.jsonl"))
  return best_step(rows, checkpoint_steps(run_dir))


def prune_checkpoints(run_dir: Path, keep: set) -> list[int]:
  """Deletes a finished run's checkpoints other than ``keep`` (e.g. {best, last}); returns the
  deleted steps. At the paper's size each checkpoint (params + Adam moments) is ~0.6 GB."""
  gone = [s for s in checkpoint_steps(run_dir) if s not in keep]
  for s in gone:
    shutil.rmtree(Path(run_dir) / "checkpoints" / str(s))
  return gone
