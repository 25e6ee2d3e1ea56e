"""Fig. 3: saturated attention heads of the paper's small LMs, correct vs the original mask.

The paper trains small causal LMs (pre-norm x + LN(F(x)) and post-norm LN(x + F(x))) on PTB,
reports that all of them grow in norm and reach saturation ~1.00 at rho = 1000, and shows in
Fig. 3 the histogram over all 144 heads of "# positions attended" (weight > 1e-5) in the
saturated models: one mode at 1 position (argmax heads), one at ~41 of the padded length 83
("mean heads"). The original's mask multiplied future scores by 0 (instead of -inf) and left
padding visible, and its statistics ran over every query and key of the padded batch; a head
whose visible scores are all negative then spreads over the future and padding, which averages
to (83 - 1) / 2 = 41 positions too.

We train each of {pre-norm, post-norm} x {correct mask, original mask} with several seeds
through the embedded trainer (``causal_lm``, word-level sentences of ``word_lm``), record the
encoder norm, dev loss/perplexity and the saturation (rho = 1000 and the exact limit) over
training, pick each run's best checkpoint on dev loss, and measure its saturated heads on 200
dev sentences: for correct-mask models over real queries and real keys, for original-mask
models as the original computed it (over the padded length). Two figures:

* ``fig3.png``: histograms over heads (rows: # positions attended, split-attention
  probability; columns: pre-/post-norm x correct/original mask), rho = 1000 bars and exact-limit
  outlines, the paper's histogram (coarse bins) in grey;
* ``fig3_training.png``: encoder norm, dev loss (with the unigram loss), saturation at
  rho = 1000 and in the exact limit along training, the paper's values for comparison.

Fig. 2 measures these trained models against their own initialisation when they are cached
(:func:`saturation_subjects`).

Example (the criteria on synthetic head statistics):
  >>> import numpy as np
  >>> heads = {"num_attended": np.array([1.0, 1.0, 41.0, 41.0]),
  ...          "split_fraction": np.array([0.0, 0.0, 0.98, 0.98])}
  >>> round(head_fractions(heads, 83)["argmax"], 2), round(head_fractions(heads, 83)["half"], 2)
  (0.5, 0.5)
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import saturation as sat
from normgrowth_jax import sinks
from normgrowth_jax.analysis import checkpoints as ckpt_reader
from normgrowth_jax.data import corpora, word_lm
from normgrowth_jax.figures import core, paper, plotting, runs
from normgrowth_jax.figures.verdict import check
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

NAME = "fig3"
TITLE = "Saturated attention heads of small LMs (correct vs original mask) and their training"
GIN_FILES = ("gin_configs/local/models/small_lm.gin", "gin_configs/local/runs/causal_lm.gin")
NORMS = {"prenorm_paper": "pre-norm", "postnorm": "post-norm"}
MASKS = {"causal": "correct mask", "original_leaky": "original mask"}
PAPER_KEY = {"prenorm_paper": "prenorm", "postnorm": "postnorm"}
ARGMAX_MAX = 1.5     # a head attending < 1.5 positions on average is an argmax head
SPLIT_LOW, SPLIT_HIGH = 0.01, 0.9
UNIGRAM_MARGIN = 0.1  # nats: a dev loss within this of the unigram loss learned only unigrams


@dataclasses.dataclass(frozen=True)
class Fig3Config:
  """One profile: the data, the model, the training budget and the analysis.

  ``steps`` fixes the training length; with ``steps=None`` it is ``epochs`` epochs of the
  corpus's training sentences (batch ``batch_size``). ``evals`` dev evaluations (and
  checkpoints) are spread evenly; each run's best one on dev loss is analysed.
  """
  corpus: str = "bbc"
  vocab_words: int = 10_000
  max_len: int = 83
  num_layers: int = 12
  d_model: int = 768
  d_ff: int = 512
  num_heads: int = 12
  batch_size: int = 16
  steps: Optional[int] = None
  epochs: float = 5.0
  evals: int = 5
  eval_sentences: Optional[int] = None
  attention_sentences: int = 200
  seeds: tuple = (0, 1, 2)
  rho: float = 1000.0
  learning_rate: float = 1e-3
  weight_decay: float = 0.01
  track_every: int = 1
  norms: tuple = tuple(NORMS)
  masks: tuple = tuple(MASKS)


CONFIGS = {
    "smoke": Fig3Config(corpus="botchan", vocab_words=300, max_len=24, num_layers=1, d_model=16,
                        d_ff=16, num_heads=2, steps=16, evals=1, eval_sentences=16,
                        attention_sentences=16, seeds=(0,), track_every=4,
                        norms=("prenorm_paper",)),
    "quick": Fig3Config(vocab_words=2000, max_len=40, num_layers=4, d_model=64, d_ff=128,
                        num_heads=4, steps=600, evals=4, eval_sentences=200, seeds=(0, 1, 2),
                        track_every=10),
    "full": Fig3Config(),
}


# ----------------------------------------------------------------------------- runs

def load_data(cfg: Fig3Config) -> word_lm.WordLMData:
  """The word-level sentences (a built-in corpus is fetched and prepared once)."""
  if cfg.corpus in corpora.BUILTIN_CORPORA:
    corpora.prepare(cfg.corpus, progress=False)
  return word_lm.load(cfg.corpus, cfg.vocab_words, cfg.max_len)


def train_steps(cfg: Fig3Config, data: Optional[word_lm.WordLMData] = None) -> int:
  if cfg.steps is not None:
    return cfg.steps
  data = data or load_data(cfg)
  return int(round(cfg.epochs * word_lm.steps_per_epoch(len(data.split("train")),
                                                         cfg.batch_size)))


def _eval_every(steps: int, cfg: Fig3Config) -> int:
  return max(1, steps // cfg.evals)


def run_name(norm: str, mask: str, seed: int) -> str:
  return f"fig3-{norm}-{mask}-seed{seed}"


def bindings(cfg: Fig3Config, norm: str, mask: str, seed: int, steps: int) -> list[str]:
  """The gin overrides of one run (on top of ``GIN_FILES``)."""
  every = _eval_every(steps, cfg)
  return [f"MIXTURE_OR_TASK_NAME='{word_lm.task_name(cfg.corpus)}'", f"TRAIN_STEPS={steps}",
          f"NUM_LAYERS={cfg.num_layers}", f"D_MODEL={cfg.d_model}", f"D_FF={cfg.d_ff}",
          f"NUM_HEADS={cfg.num_heads}", f"VOCAB_WORDS={cfg.vocab_words}",
          f"MAX_LEN={cfg.max_len}", f"NORM='{norm}'", f"ATTENTION_MASK='{mask}'",
          f"SEED={seed}", f"BATCH_SIZE={cfg.batch_size}", f"LEARNING_RATE={cfg.learning_rate}",
          f"WEIGHT_DECAY={cfg.weight_decay}", f"EVAL_EVERY={every}",
          f"EVAL_SENTENCES={cfg.eval_sentences}", f"RHO={cfg.rho}",
          f"CHECKPOINT_PERIOD={every}", f"KEEP_CHECKPOINTS={cfg.evals + 2}",
          f"TRACK_EVERY={cfg.track_every}", "LOG_EVERY=50"]


def variants(cfg: Fig3Config):
  return [(n, m) for m in cfg.masks for n in cfg.norms]


def work(cfg: Fig3Config) -> int:
  return len(variants(cfg)) * len(cfg.seeds)  # one unit per run measured (run_specs: training)


def model(cfg: Fig3Config, norm: str, mask: str) -> SmallLM:
  """The SmallLM the runs train (the same values as the gin bindings)."""
  return SmallLM(SmallLMConfig(vocab_size=word_lm.num_ids(cfg.vocab_words),
                               num_layers=cfg.num_layers, d_model=cfg.d_model, d_ff=cfg.d_ff,
                               num_heads=cfg.num_heads, max_len=cfg.max_len, norm=norm,
                               attention_mask=mask))


def init_params(cfg: Fig3Config, norm: str, mask: str, seed: int):
  """A run's initial parameters, drawn exactly as ``train.train`` draws them."""
  from normgrowth_jax import causal_lm, train  # pylint: disable=g-import-not-at-top
  init_fn, _ = causal_lm.loss_adapter(model(cfg, norm, mask))
  init_rng, _ = jax.random.split(jax.random.PRNGKey(seed))
  return jax.jit(init_fn)(init_rng, train.dummy_batch({"targets": cfg.max_len}, cfg.batch_size))


def restore_params(run_dir: Path, step: int):
  """The parameters of checkpoint ``step`` of a run (``run_dir`` may be relative)."""
  refs = {r.step: r for r in ckpt_reader.list_checkpoints(run_dir)}
  if step not in refs:
    raise FileNotFoundError(f"{run_dir} has no checkpoint {step}; it has {sorted(refs)}.")
  return jax.tree.map(jnp.asarray, ckpt_reader.read_state_tree(refs[step], ("params",)))


def best_step(eval_rows: list[dict], available: list[int]) -> int:
  """The evaluated step > 0 with the lowest dev loss among those with a checkpoint."""
  cands = [r for r in eval_rows if r["step"] > 0 and r["step"] in available
           and r.get("loss") is not None]
  if not cands:
    raise ValueError(f"no evaluated checkpoint among steps {available}")
  return min(cands, key=lambda r: (r["loss"], r["step"]))["step"]


def prune_checkpoints(run_dir: Path, keep: set) -> list[int]:
  """Deletes a finished run's checkpoints other than ``keep`` (e.g. {best, last}); returns the
  deleted steps. At the paper's size each checkpoint (params + Adam moments) is ~0.6 GB."""
  import shutil  # pylint: disable=g-import-not-at-top
  gone = [s for s in checkpoint_steps(run_dir) if s not in keep]
  for s in gone:
    shutil.rmtree(Path(run_dir) / "checkpoints" / str(s))
  return gone


def checkpoint_steps(run_dir: Path) -> list[int]:
  """The steps of a run's checkpoints on disk, ascending."""
  d = Path(run_dir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


# ----------------------------------------------------------------------------- analysis

@functools.lru_cache(maxsize=None)
def _attention_fn(cfg: Fig3Config, norm: str, mask: str):
  """jitted ``(params, tokens) -> (rho weights, limit weights)``, [layers, b, h, q, k] each,
  traced under the saturation measurements' float32-exact matmul precision."""
  m = model(cfg, norm, mask)

  @jax.jit
  def weights(params, tokens):
    real = tokens != word_lm.PAD_ID
    with jax.default_matmul_precision(sat.MATMUL_PRECISION):
      at_rho = m.apply({"params": sat.scale_params(params, cfg.rho)}, tokens, real)
      limit = m.apply({"params": params}, tokens, real, saturated=True)
    return jnp.stack(at_rho.attention_weights), jnp.stack(limit.attention_weights)

  return weights


def _future_weight(w: jax.Array, real: jax.Array) -> jax.Array:
  """Per layer and head: mean over real queries of the weight on later positions (and pad)."""
  length = w.shape[-1]
  later = jnp.triu(jnp.ones((length, length), bool), k=1)  # [q, k]: k > q
  per_query = jnp.sum(jnp.where(later, w, 0.0), axis=-1)  # [L, b, h, q]
  qm = real[None, :, None, :].astype(w.dtype)
  return jnp.sum(per_query * qm, axis=(1, 3)) / jnp.maximum(jnp.sum(qm, axis=(1, 3)), 1)


def head_statistics(weights: jax.Array, tokens: np.ndarray) -> dict:
  """Per layer and head, both conventions (see the module doc), as NumPy [layers, heads].

  ``real``: over real queries, counting real keys (ours); ``padded``: over every query and key
  of the padded batch (the original's). Plus ``future_weight`` (weight on later positions).
  """
  real = jnp.asarray(tokens) != word_lm.PAD_ID
  out = {"real": sat.attention_stats(weights, mask=real),
         "padded": sat.attention_stats(weights, mask=None)}
  out = {conv: {k: np.asarray(v) for k, v in s.items()} for conv, s in out.items()}
  out["future_weight"] = np.asarray(_future_weight(weights, real))
  return out


def analyse_run(cfg: Fig3Config, norm: str, mask: str, run_dir: Path,
                tokens: np.ndarray) -> dict:
  """Curves (eval, norms) and the best checkpoint's saturated head statistics of one run."""
  eval_rows = sinks.read_jsonl(str(Path(run_dir) / "eval.jsonl"))
  norm_rows = sinks.read_jsonl(str(Path(run_dir) / "norms.jsonl"))
  available = checkpoint_steps(run_dir)
  step = best_step(eval_rows, available)
  if runs.is_finished(run_dir):  # only the best (analysed, Fig. 2) and the last are needed
    prune_checkpoints(run_dir, {step, max(available)})
  params = restore_params(run_dir, step)
  w_rho, w_lim = _attention_fn(cfg, norm, mask)(params, jnp.asarray(tokens))
  heads = {"rho": head_statistics(w_rho, tokens), "limit": head_statistics(w_lim, tokens)}
  pick = lambda key: [r.get(key) for r in eval_rows]  # noqa: E731
  return {
      "run_dir": str(run_dir), "best_step": step,
      "eval": {k: pick(k) for k in ("step", "param_norm", "loss", "perplexity", "accuracy",
                                    "saturation_rho", "saturation_limit")},
      # The hook's trace starts after the first update; the evaluator's step-0 norm leads it.
      "norm": {"step": [0] + [r["step"] for r in norm_rows],
               "param_norm": [eval_rows[0]["param_norm"]] + [r.get("param_norm")
                                                             for r in norm_rows]},
      "heads": heads,
      "best": next(r for r in eval_rows if r["step"] == step),
      "init": next(r for r in eval_rows if r["step"] == 0),
  }


def convention(mask: str) -> str:
  """Which head statistics a variant is shown with: the original's for the original mask."""
  return "padded" if mask == "original_leaky" else "real"


def head_fractions(stats: dict, padded_length: int) -> dict:
  """Fractions of heads: argmax (< 1.5 positions), at half the padded length ((L-1)/2 +- 1),
  split probability < 0.01 and > 0.9. ``stats`` holds arrays over heads."""
  n = np.ravel(stats["num_attended"])
  s = np.ravel(stats["split_fraction"])
  half = (padded_length - 1) / 2
  return {"argmax": float(np.mean(n < ARGMAX_MAX)),
          "half": float(np.mean(np.abs(n - half) <= 1.0)),
          "split_low": float(np.mean(s < SPLIT_LOW)),
          "split_high": float(np.mean(s > SPLIT_HIGH)),
          "heads": int(n.size)}


def pooled(results: dict, norm: str, mask: str, kind: str = "rho") -> dict:
  """A variant's head statistics pooled over seeds (its own convention), flat arrays."""
  conv = convention(mask)
  per = [r["heads"][kind][conv] for r in results[norm, mask]]
  return {k: np.concatenate([np.ravel(p[k]) for p in per]) for k in per[0]}


def unigram_note(label: str, loss: float, unigram: float) -> Optional[str]:
  """A note when a model's dev loss says it learned no more than unigram statistics.

  Example:
    >>> unigram_note("x", 6.45, 6.50)[:40]
    'x: dev loss 6.45 is within 0.1 nats of t'
    >>> unigram_note("x", 5.0, 6.50) is None
    True
  """
  if loss > unigram + UNIGRAM_MARGIN:
    return (f"{label}: dev loss {loss:.2f} is above the unigram loss {unigram:.2f}: the model "
            "has not even learned unigram statistics (undertrained); its saturation says little.")
  if loss >= unigram - UNIGRAM_MARGIN:
    return (f"{label}: dev loss {loss:.2f} is within {UNIGRAM_MARGIN} nats of the unigram loss "
            f"{unigram:.2f}: the model learned only unigram statistics, so its saturation may be "
            "trivial (the original's post-norm runs did too: PTB dev 6.50 nats).")
  return None


def paper_fractions(norm: str) -> dict:
  p = paper.FIG3[PAPER_KEY[norm]]
  return {"argmax": p["bins"][0][2] / p["heads"], "half": p["mean_heads"] / p["heads"],
          "split_low": p["split_below_0.01"] / p["heads"],
          "split_high": p["split_near_0.97"] / p["heads"]}


# ----------------------------------------------------------------------------- criteria

def judge(fractions: dict, saturation: dict, norm_growth: dict, padded_length: int) -> list:
  """The stated criteria.

  Args:
    fractions: ``{(norm, mask): head_fractions(...)}`` at rho = 1000 (pooled over seeds).
    saturation: ``{(norm, mask): (init values, trained values)}`` per seed (last layer,
      rho = 1000).
    norm_growth: ``{(norm, mask): [final / initial encoder norm per seed]}``.
    padded_length: L.

  Example:
    >>> f = {("prenorm_paper", "original_leaky"): {"argmax": .3, "half": .4},
    ...      ("prenorm_paper", "causal"): {"argmax": 1.0, "split_high": 0.0}}
    >>> s = {k: ([0.5], [0.99]) for k in f}
    >>> g = {k: [1.2] for k in f}
    >>> [c.passed for c in judge(f, s, g, 83)]
    [True, False, True, True, True, None]
  """
  out = []
  leaky = {n: f for (n, m), f in fractions.items() if m == "original_leaky"}
  correct = {n: f for (n, m), f in fractions.items() if m == "causal"}
  if leaky:
    ok = all(f["argmax"] >= 0.1 and f["half"] >= 0.1 for f in leaky.values())
    out.append(check(
        "original mask: two modes, >= 10% of heads at ~1 position and >= 10% at half the "
        f"padded length ((L-1)/2 = {(padded_length - 1) / 2:g})", ok,
        ours="; ".join(f"{NORMS[n]} {f['argmax']:.2f} / {f['half']:.2f}"
                       for n, f in leaky.items()),
        paper="; ".join(f"{NORMS[n]} {paper_fractions(n)['argmax']:.2f} / "
                        f"{paper_fractions(n)['half']:.2f}" for n in leaky)))
  if correct:
    ok = all(f["split_high"] >= 0.1 for f in correct.values())
    out.append(check(
        "correct mask: a second mode survives, >= 10% of heads split their attention for "
        "> 90% of queries (mean heads)", ok,
        ours="; ".join(f"{NORMS[n]} {f['split_high']:.2f} (argmax heads {f['argmax']:.2f})"
                       for n, f in correct.items()),
        paper="; ".join(f"{NORMS[n]} {paper_fractions(n)['split_high']:.2f} (with its mask)"
                        for n in correct)))
  # Judged on seed means per variant (spread shown), so float drift between machines in one
  # run cannot flip a verdict.
  trained = {k: _mean_sd(v[1]) for k, v in saturation.items()}
  worst = min(trained, key=lambda k: trained[k][0])
  out.append(check(
      "every trained model at saturation >= 0.98 (rho = 1000, last layer, dev tokens; seed "
      "means per variant)", trained[worst][0] >= 0.98,
      ours=f"lowest {_fmt_mean_sd(trained[worst])} ({NORMS[worst[0]]}, {MASKS[worst[1]]})",
      paper="0.986-0.9997"))
  gain = {k: _mean_sd(np.subtract(v[1], v[0])) for k, v in saturation.items()}
  out.append(check(
      "saturation rises from initialisation to the trained model (seed mean of trained - init "
      "> 0 in every variant)", all(m > 0 for m, _ in gain.values()),
      ours="; ".join(f"{variant_label(*k)} {_fmt_mean_sd(g)}" for k, g in gain.items()),
      paper="pre-norm 0.47-0.52, post-norm 0.06-0.08 -> 0.986-0.9997"))
  growth = {k: _mean_sd(v) for k, v in norm_growth.items()}
  out.append(check("the encoder norm grows (seed mean of final / initial > 1 in every variant)",
                   all(m > 1 for m, _ in growth.values()),
                   ours="; ".join(f"{variant_label(*k)} {_fmt_mean_sd(g)}"
                                  for k, g in growth.items()),
                   paper="every model grows"))
  pre = [i for (n, _), v in saturation.items() if n == "prenorm_paper" for i in v[0]]
  post = [i for (n, _), v in saturation.items() if n == "postnorm" for i in v[0]]
  out.append(check(
      "at initialisation pre-norm is closer to saturation than post-norm",
      (np.mean(pre) > np.mean(post)) if pre and post else None,
      ours=f"{np.mean(pre):.3f} vs {np.mean(post):.3f}" if pre and post else None,
      paper="0.47-0.52 vs 0.06-0.08"))
  return out


def _mean_sd(values) -> tuple:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _fmt_mean_sd(ms: tuple) -> str:
  return f"{ms[0]:.3f} ± {ms[1]:.3f}"


# ----------------------------------------------------------------------------- plots

def variant_label(norm, mask):
  return f"{NORMS[norm]}, {MASKS[mask]}"


def _paper_hist(ax, bins, scale, total, x_scale=1.0):
  first = True
  for lo, hi, n in bins:
    width = max((hi - lo) * x_scale, 0.4 * scale)
    ax.bar(lo * x_scale, n / total, width=width, align="edge", color="none",
           edgecolor="0.35", hatch="////", linewidth=0.6,
           label="paper (PTB, its mask)" if first else None)
    first = False


def _plot_heads(ctx, cfg, results):
  cols = [(n, m) for m in cfg.masks for n in cfg.norms]
  fig, axes = plotting.new_figure(2, len(cols), height_per_row=1.9, squeeze=False)
  length = cfg.max_len
  pos_bins = np.arange(0.5, np.ceil(0.6 * length) + 1.5, 1.0)
  split_bins = np.linspace(0, 1, 21)
  for j, (norm, mask) in enumerate(cols):
    for i, (key, bins, xlabel) in enumerate((
        ("num_attended", pos_bins, "# positions attended"),
        ("split_fraction", split_bins, "split-attention probability"))):
      ax = axes[i, j]
      rho = pooled(results, norm, mask, "rho")[key]
      lim = pooled(results, norm, mask, "limit")[key]
      weights = np.full(rho.shape, 1.0 / rho.size)
      ax.hist(np.clip(rho, bins[0], bins[-1]), bins=bins, weights=weights,
              color="tab:blue" if norm == "prenorm_paper" else "tab:orange", alpha=0.75,
              label=f"ours, ρ = {cfg.rho:g}")
      ax.hist(np.clip(lim, bins[0], bins[-1]), bins=bins, weights=weights, histtype="step",
              color="k", linewidth=0.8, label="ours, exact limit")
      if mask == "original_leaky":
        p = paper.FIG3[PAPER_KEY[norm]]
        if key == "num_attended":
          _paper_hist(ax, p["bins"], 1.0, p["heads"], x_scale=length / paper.FIG3["padded_length"])
          ax.axvline((length - 1) / 2, color="0.5", linestyle=":", linewidth=0.8)
        else:
          _paper_hist(ax, p["split_bins"], 0.02, p["heads"])
      ax.set_xlabel(xlabel)
      ax.grid(alpha=0.3, linewidth=0.5)
      if i == 0:
        ax.set_title(f"{variant_label(norm, mask)}\n{len(rho)} heads, "
                     + ("padded length" if convention(mask) == "padded" else "real tokens"))
      if j == 0:
        ax.set_ylabel("fraction of heads")
  axes[0, -1].legend(loc="upper right")
  scaled = "" if length == paper.FIG3["padded_length"] else (
      f"; paper's bins rescaled from length {paper.FIG3['padded_length']} to {length}")
  fig.suptitle(f"Saturated heads of small LMs ({cfg.num_layers} layers x {cfg.num_heads} heads, "
               f"{len(cfg.seeds)} seed(s) pooled, best dev checkpoint, "
               f"{cfg.attention_sentences} dev sentences, padded length {length}{scaled})",
               fontsize=7.5, y=1.02)
  fig.tight_layout()
  return plotting.save(fig, ctx.path(NAME))


def _band(ax, xs, ys, color, style, label):
  ys = np.asarray(ys, np.float64)
  ax.plot(xs, ys.mean(0), style, color=color, label=label)
  if len(ys) > 1:
    ax.fill_between(xs, ys.min(0), ys.max(0), color=color, alpha=0.15, linewidth=0)


def layer_profile(row: dict, kind: str = "limit") -> list:
  """Per-layer saturation (layers 1..L) from an eval row (``saturation_<kind>/layers_<i>``)."""
  keys = sorted((k for k in row if k.startswith(f"saturation_{kind}/layers_")),
                key=lambda k: int(k.rsplit("_", 1)[1]))
  return [row[k] for k in keys]


def _plot_training(ctx, cfg, results, unigram):
  fig, axes = plotting.new_figure(1, 4, height_per_row=2.2)
  colors = {"prenorm_paper": "tab:blue", "postnorm": "tab:orange"}
  styles = {"causal": "-", "original_leaky": "--"}
  for (norm, mask), runs_ in results.items():
    c, s, label = colors[norm], styles[mask], variant_label(norm, mask)
    steps = np.asarray(runs_[0]["norm"]["step"])
    _band(axes[0], steps, [r["norm"]["param_norm"] for r in runs_], c, s, label)
    ev_steps = np.asarray(runs_[0]["eval"]["step"])
    _band(axes[1], ev_steps, [r["eval"]["loss"] for r in runs_], c, s, label)
    _band(axes[2], ev_steps, [r["eval"]["saturation_rho"] for r in runs_], c, s, label)
    axes[2].plot(ev_steps, np.mean([r["eval"]["saturation_limit"] for r in runs_], 0), "x",
                 color=c, ms=3.5, mew=0.8)
    layers = np.arange(1, cfg.num_layers + 1)
    _band(axes[3], layers, [layer_profile(r["best"]) for r in runs_], c, s, label)
    axes[3].plot(layers, np.mean([layer_profile(r["init"]) for r in runs_], 0), s, color=c,
                 linewidth=0.7, alpha=0.6, marker=".", ms=2.5)
  axes[1].axhline(unigram, color="0.3", linestyle=":", linewidth=0.9,
                  label=f"unigram model ({unigram:.2f})")
  axes[2].plot([], [], "x", color="0.3", ms=3.5, label="exact limit (x)")
  axes[3].plot([], [], "-", color="0.3", linewidth=0.7, alpha=0.6, marker=".", ms=2.5,
               label="at initialisation (thin)")
  lo, hi = paper.SMALL_LM["saturation_trained"]
  for ax in axes[2:]:
    ax.axhspan(lo, hi, color="0.6", alpha=0.35, linewidth=0,
               label="paper, trained (PTB)" if ax is axes[2] else None)
    ax.set_ylim(-0.05, 1.05)
  for key, color in (("saturation_init_prenorm", colors["prenorm_paper"]),
                     ("saturation_init_postnorm", colors["postnorm"])):
    ilo, ihi = paper.SMALL_LM[key]
    axes[2].errorbar([0], [(ilo + ihi) / 2], yerr=[[(ihi - ilo) / 2 + 0.005]], fmt="s", ms=3,
                     color=color, mfc="white", capsize=2, linewidth=0.8,
                     label=f"paper, init ({'pre' if 'pre' in key else 'post'}-norm)")
  titles = ("encoder norm ||θ|| (paper filter)", "dev loss (nats / token)",
            f"saturation, last layer, ρ = {cfg.rho:g}", "saturation by layer, best ckpt")
  xlabels = ("training step",) * 3 + ("layer (exact limit)",)
  for ax, t, xl in zip(axes, titles, xlabels):
    ax.set_title(t)
    ax.set_xlabel(xl)
    ax.grid(alpha=0.3, linewidth=0.5)
  axes[3].set_xticks(np.arange(1, cfg.num_layers + 1))
  axes[0].set_ylabel("L2 norm")
  axes[2].set_ylabel("cos(f(x; θ), sf(x; θ))")
  handles, labels = axes[0].get_legend_handles_labels()
  for ax in axes[1:]:
    h, l = ax.get_legend_handles_labels()
    new = [(hh, ll) for hh, ll in zip(h, l) if ll not in labels]
    handles += [hh for hh, _ in new]
    labels += [ll for _, ll in new]
  fig.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.17))
  fig.suptitle(f"Small LMs on {cfg.corpus!r} sentences: {cfg.num_layers} layers, d_model "
               f"{cfg.d_model}, AdamW lr {cfg.learning_rate:g} wd {cfg.weight_decay:g}; lines: "
               f"mean over {len(cfg.seeds)} seed(s), bands: min-max", fontsize=7.5, y=1.04)
  fig.tight_layout()
  return plotting.save(fig, ctx.path(f"{NAME}_training"))


# ----------------------------------------------------------------------------- make

def _keys(cfg: Fig3Config) -> list[tuple[str, str, int]]:
  return [(norm, mask, seed) for norm, mask in variants(cfg) for seed in cfg.seeds]


def run_specs(ctx, cfg: Fig3Config, steps: Optional[int] = None) -> list[runs.RunSpec]:
  """Every variant's and seed's run, in :func:`_keys`' order."""
  del ctx
  steps = train_steps(cfg) if steps is None else steps
  return [runs.RunSpec(run_name(*k), tuple(GIN_FILES), tuple(bindings(cfg, *k, steps)), steps)
          for k in _keys(cfg)]


def train_all(ctx, cfg: Fig3Config, steps: int) -> dict:
  """Trains (or finds in the run cache) every variant and seed: {(norm, mask, seed): run dir}."""
  return dict(zip(_keys(cfg), runs.train_specs(ctx, run_specs(ctx, cfg, steps))))


def make(ctx: core.FigureContext, cfg: Fig3Config) -> core.FigureResult:
  data = load_data(cfg)
  steps = train_steps(cfg, data)
  run_dirs = train_all(ctx, cfg, steps)
  tokens = data.split("validation")[:cfg.attention_sentences]
  results = {}
  for (norm, mask, seed), d in run_dirs.items():
    ctx.advance(0, f"{NAME}: heads of {run_name(norm, mask, seed)}")
    results.setdefault((norm, mask), []).append(analyse_run(cfg, norm, mask, d, tokens))
    ctx.advance(1, None)
  unigram = word_lm.unigram_loss(data, "validation", cfg.eval_sentences)  # the dev loss's text
  files = _plot_heads(ctx, cfg, results) + _plot_training(ctx, cfg, results, unigram)
  m = summarise(results, cfg)
  criteria = judge(m["fractions"], m["saturation"], m["growth"], cfg.max_len)
  files.append(core.write_numbers(ctx, NAME, _numbers(cfg, results, m, steps, unigram, data)))
  return core.FigureResult(NAME, TITLE, files, _rows(cfg, results, m, unigram), criteria,
                           _setup(cfg, steps, data), _notes(cfg, results, m, unigram))


def summarise(results: dict, cfg: Fig3Config) -> dict:
  """Per variant: head fractions at rho and in the limit, saturation (init, trained) and the
  encoder norm's growth of every seed."""
  return {
      "fractions": {k: head_fractions(pooled(results, *k), cfg.max_len) for k in results},
      "fractions_limit": {k: head_fractions(pooled(results, *k, "limit"), cfg.max_len)
                          for k in results},
      "saturation": {k: ([r["init"]["saturation_rho"] for r in v],
                         [r["best"]["saturation_rho"] for r in v]) for k, v in results.items()},
      "growth": {k: [r["norm"]["param_norm"][-1] / r["norm"]["param_norm"][0] for r in v]
                 for k, v in results.items()},
  }


def _rows(cfg: Fig3Config, results: dict, m: dict, unigram: float) -> list[core.Row]:
  rows = []
  lo, hi = paper.SMALL_LM["saturation_trained"]
  for (norm, mask), v in results.items():
    label = variant_label(norm, mask)
    pf = paper_fractions(norm)
    f, fl = m["fractions"][norm, mask], m["fractions_limit"][norm, mask]
    ilo, ihi = paper.SMALL_LM[f"saturation_init_{PAPER_KEY[norm]}"]
    rows += [
        core.Row(f"{label}: saturation ρ = {cfg.rho:g}, trained", f"{lo}-{hi}",
                 *core.mean_spread([r["best"]["saturation_rho"] for r in v])),
        core.Row(f"{label}: saturation, exact limit, trained", None,
                 *core.mean_spread([r["best"]["saturation_limit"] for r in v])),
        core.Row(f"{label}: saturation ρ = {cfg.rho:g}, initialisation", f"{ilo}-{ihi}",
                 *core.mean_spread([r["init"]["saturation_rho"] for r in v])),
        core.Row(f"{label}: dev loss, best checkpoint (unigram {unigram:.2f})",
                 paper.SMALL_LM["postnorm_unigram_dev_loss"] if norm == "postnorm" else None,
                 *core.mean_spread([r["best"]["loss"] for r in v])),
        core.Row(f"{label}: encoder norm, final / initial", None,
                 *core.mean_spread(m["growth"][norm, mask])),
        core.Row(f"{label}: heads at ~1 position (< {ARGMAX_MAX}), ρ / limit",
                 f"{pf['argmax']:.2f} in [1, 1.4)", f"{f['argmax']:.2f} / {fl['argmax']:.2f}"),
        core.Row(f"{label}: heads at (L-1)/2 ± 1 = {(cfg.max_len - 1) / 2:g}, ρ / limit",
                 f"{pf['half']:.2f}", f"{f['half']:.2f} / {fl['half']:.2f}"),
        core.Row(f"{label}: heads with split probability < {SPLIT_LOW} / > {SPLIT_HIGH}",
                 f"{pf['split_low']:.2f} / {pf['split_high']:.2f}",
                 f"{f['split_low']:.2f} / {f['split_high']:.2f}"),
    ]
  return rows


def _notes(cfg: Fig3Config, results: dict, m: dict, unigram: float) -> list[str]:
  """Which variants stay at the unigram loss, and what the original mask changes."""
  notes = []
  for (norm, mask), v in results.items():
    note = unigram_note(variant_label(norm, mask),
                        float(np.mean([r["best"]["loss"] for r in v])), unigram)
    if note:
      notes.append(note)
  loss = {k: np.mean([r["best"]["loss"] for r in v]) for k, v in results.items()}
  fractions = m["fractions"]
  for n in dict.fromkeys(n for n, mask in results if mask == "causal"):
    if (n, "original_leaky") not in results:
      continue
    fw = np.mean([np.mean(r["heads"]["rho"]["future_weight"])
                  for r in results[n, "original_leaky"]])
    notes.append(
        f"What the original mask changes ({NORMS[n]}): dev loss {loss[n, 'original_leaky']:.2f} "
        f"vs {loss[n, 'causal']:.2f} nats with the correct mask (the future leaks through the "
        f"zero scores: at ρ = {cfg.rho:g} its heads put {fw:.0%} of their weight on later or "
        f"padding positions on average); heads at (L-1)/2: "
        f"{fractions[n, 'original_leaky']['half']:.2f} vs {fractions[n, 'causal']['half']:.2f}"
        f"; argmax heads {fractions[n, 'original_leaky']['argmax']:.2f} vs "
        f"{fractions[n, 'causal']['argmax']:.2f}.")
  return notes


def _numbers(cfg: Fig3Config, results: dict, m: dict, steps: int, unigram: float,
             data) -> dict:
  return {
      "config": dataclasses.asdict(cfg), "steps": steps, "unigram_dev_loss": unigram,
      "data": data.stats,
      "runs": {f"{n}/{k}": [{x: r[x] for x in ("run_dir", "best_step", "eval", "norm")}
                            | {"best": r["best"], "init": r["init"],
                               "heads": r["heads"]} for r in v]
               for (n, k), v in results.items()},
      "head_fractions": {f"{n}/{k}": {"rho": m["fractions"][n, k],
                                      "limit": m["fractions_limit"][n, k]}
                         for (n, k) in results},
      "paper": {"fig3": paper.FIG3, "small_lm": paper.SMALL_LM},
  }


def _setup(cfg: Fig3Config, steps: int, data) -> list[str]:
  epochs = steps / word_lm.steps_per_epoch(len(data.split("train")), cfg.batch_size)
  return [
      f"data: word-level sentences of {cfg.corpus!r} (PTB-like: lowercased, numbers -> N, "
      f"punctuation dropped; {cfg.vocab_words} words + <unk>, <eos> appended, padded to "
      f"{cfg.max_len}; {data.stats['train']['sentences']} training sentences, <unk> rate "
      f"{data.stats['train']['unk_rate']:.1%}); the paper: PTB (10k words, padded length 83)",
      f"model: SmallLM {cfg.num_layers} layers, d_model {cfg.d_model}, FF {cfg.d_ff}, "
      f"{cfg.num_heads} heads ({cfg.num_layers * cfg.num_heads} heads per model)"
      + ("" if (cfg.num_layers, cfg.d_model) == (12, 768) else
         "; the paper: 12 layers, 768, FF 512, 12 heads (144 heads)"),
      f"training: AdamW lr {cfg.learning_rate:g}, wd {cfg.weight_decay:g}, batch "
      f"{cfg.batch_size}, {steps} steps (= {epochs:.2f} epochs); the paper: 5 epochs; "
      f"{len(cfg.seeds)} seed(s) per variant (the paper: one)",
      f"best checkpoint on dev loss among {cfg.evals} evaluations "
      f"({'all' if cfg.eval_sentences is None else cfg.eval_sentences} dev sentences); heads "
      f"measured on the first {cfg.attention_sentences} dev sentences (the paper: 200)",
      "statistics: correct-mask models over real queries and real keys; original-mask models "
      "as the original computed them (every query and key of the padded batch)",
      "the original mask trains with padding visible; our padding id 0 is a dedicated token "
      "(the original padded with id 0, which was a real word)",
  ]


# ----------------------------------------------------------------------------- Fig. 2 subjects

def saturation_subjects(ctx, sentences) -> list:
  """Our trained correct-mask small LMs (first seed) vs their own initialisation, for Fig. 2.

  Offered only when their runs are finished in the cache of ``ctx.profile`` (never trains).
  The sentences are tokenized like the training data (PTB-like words, truncated to fit).
  """
  from normgrowth_jax.figures import subjects  # pylint: disable=g-import-not-at-top
  cfg = CONFIGS[ctx.profile]
  out = []
  if "causal" not in cfg.masks:
    return out
  try:
    data = word_lm.load(cfg.corpus, cfg.vocab_words, cfg.max_len)
  except (corpora.CorpusNotPreparedError, OSError):
    return out
  steps = train_steps(cfg, data)
  rows = [data.encode(word_lm.ptb_like_tokens(s)[:cfg.max_len - 1]) for s in sentences]
  tokens = jnp.asarray(np.stack(rows))
  real = tokens != word_lm.PAD_ID
  for norm in cfg.norms:
    seed = cfg.seeds[0]
    d = runs.run_dir(ctx, run_name(norm, "causal", seed), list(GIN_FILES),
                     bindings(cfg, norm, "causal", seed, steps))
    if not runs.is_finished(d):
      continue
    rows_ = sinks.read_jsonl(str(d / "eval.jsonl"))
    step = best_step(rows_, checkpoint_steps(d))
    m = model(cfg, norm, "causal")

    def forward(p, saturated, m=m):
      return m.apply({"params": p}, tokens, real, saturated=saturated).hidden_states

    out.append(subjects.Subject(
        f"small LM, {NORMS[norm]} (ours)", restore_params(d, step),
        [init_params(cfg, norm, "causal", seed)], "own init", forward, real, None,
        f"SmallLM {cfg.num_layers}x{cfg.d_model} trained {step} steps on {cfg.corpus!r} "
        f"sentences (fig3 run, correct mask, seed {seed}), PTB-like word tokens"))
  return out
