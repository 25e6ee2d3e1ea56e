"""Fig. 4: approximate homogeneity of randomly initialised transformers.

cos(f(x; c theta), sf(x; theta)) for c in linspace(1, 10, 20), where f is the small LM's final
hidden state and sf its saturated limit, for the paper's pre-norm x + LN(F(x)) and post-norm
LN(x + F(x)) blocks, each with every bias and with no bias at all (the real ablation: the
original's "bias" switch only toggled the classifier bias). sf is computed two ways: the exact
limit (``saturated=True``) and the paper's approximation f(x; 1000 theta).

Two protocols: ours (the correct -inf causal mask; the cosine per token, averaged, as the paper
defines saturation) and the original code's (``plot_trans_scale.py`` in viking-sudo-rm/norm-growth:
future scores multiplied by 0, and one cosine between the flattened [sequences x tokens x d]
outputs), run on the same initialisations so the report can say what the defect changed.

Example (the smoke profile, a few seconds):
  >>> cfg = CONFIGS["smoke"]
  >>> out = curves(cfg, VARIANTS[0], seed=0)
  >>> sorted(out), out["exact"].shape == (cfg.num_c, 2)   # [c, (per token, flattened)]
  (['exact', 'rho'], True)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import saturation as sat
from normgrowth_jax.figures import core, paper, plotting, small_lm_runs
from normgrowth_jax.figures.verdict import check

NAME = "fig4"
TITLE = "Homogeneity of randomly initialised transformers"
NORMS = {"prenorm_paper": "pre-norm", "postnorm": "post-norm"}
NORM_FORMULAS = {"prenorm_paper": "pre-norm: x + LN(F(x))", "postnorm": "post-norm: LN(x + F(x))"}
TOKEN, FLAT = 0, 1  # the two similarity measures: mean per-token cosine, flattened cosine


class Variant(NamedTuple):
  norm: str
  use_bias: bool
  attention_mask: str = "causal"

  @property
  def label(self) -> str:
    out = f"{NORMS[self.norm]}, {'all biases' if self.use_bias else 'no biases'}"
    return out + (", original's leaky mask" if self.attention_mask != "causal" else "")


VARIANTS = (
    Variant("prenorm_paper", True),
    Variant("prenorm_paper", False),
    Variant("postnorm", True),
    Variant("postnorm", False),
    Variant("prenorm_paper", True, "original_leaky"),
    Variant("postnorm", True, "original_leaky"),
)


@dataclasses.dataclass(frozen=True)
class Fig4Config:
  arch: small_lm_runs.Architecture = small_lm_runs.Architecture()
  vocab_size: int = 10
  num_sequences: int = 10
  seq_len: int = 10
  seeds: tuple = (0, 1, 2)
  num_c: int = 20
  rho: float = 1000.0
  data_seed: int = 1234


CONFIGS = {
    "smoke": Fig4Config(
        small_lm_runs.Architecture(num_layers=2, d_model=32, d_ff=32, num_heads=4), seeds=(0, 1)
    ),
    "quick": Fig4Config(),
    "full": Fig4Config(seeds=tuple(range(10))),
}


def work(cfg: Fig4Config) -> int:
  return len(VARIANTS) * len(cfg.seeds)


def cs(cfg: Fig4Config) -> np.ndarray:
  return np.linspace(1.0, 10.0, cfg.num_c)


def inputs(cfg: Fig4Config) -> jax.Array:
  """The paper's inputs: random sequences over a small vocabulary, [num_sequences, seq_len]."""
  return jax.random.randint(
      jax.random.key(cfg.data_seed), (cfg.num_sequences, cfg.seq_len), 0, cfg.vocab_size
  )


@functools.lru_cache(maxsize=None)
def _functions(cfg: Fig4Config, variant: Variant):
  """(model, f, limits) for one variant, cached so jit compiles each variant once.

  ``f(params)`` returns the final hidden state twice over two measures: as is (per-token
  cosine) and flattened into one "token" (the original's single cosine). ``limits(params)``
  returns the same for the exact sf and for f at rho, so one ``homogeneity_curve`` call gives
  all four curves: leaves (exact per token, exact flattened, rho per token, rho flattened).
  """
  model = small_lm_runs.model(
      cfg.arch,
      cfg.vocab_size,
      cfg.seq_len,
      norm=variant.norm,
      use_bias=variant.use_bias,
      attention_mask=variant.attention_mask,
  )
  tokens = inputs(cfg)
  mask = jnp.ones(tokens.shape, bool)  # every token is real (id 0 is a word here, not padding)

  def hidden(p, saturated=False):
    h = model.apply({"params": p}, tokens, mask, saturated=saturated).hidden_states[-1]
    return h, h.reshape(1, 1, -1)  # [n, l, d]; one "token" holding everything

  f = lambda p: hidden(p) * 2
  limits = lambda p: hidden(p, True) + hidden(sat.scale_params(p, cfg.rho))
  return model, f, limits


def init_params(cfg: Fig4Config, variant: Variant, seed: int):
  """The variant's random initialisation (the two masks share it: same parameter tree)."""
  return _functions(cfg, variant)[0].init(jax.random.key(seed), inputs(cfg))["params"]


def curves(cfg: Fig4Config, variant: Variant, seed: int) -> dict:
  """{"exact", "rho"}: [num_c, 2] cos(f(c theta), sf(theta)), per token and flattened."""
  _, f, limits = _functions(cfg, variant)
  params = init_params(cfg, variant, seed)
  c = jnp.asarray(cs(cfg), jnp.float32)
  out = np.asarray(sat.homogeneity_curve(f, limits, params, c), np.float64)  # [num_c, 4]
  return {"exact": out[:, :2], "rho": out[:, 2:]}


def _paper_key(norm: str, bias: bool) -> str:
  return ("prenorm" if norm == "prenorm_paper" else "postnorm") + ("_bias" if bias else "")


def _paper_c1(norm: str) -> float:
  """The paper's c = 1 value, averaged over its two curves (they differ by seed only)."""
  return float(np.mean([paper.FIG4[_paper_key(norm, b)][0] for b in (False, True)]))


def _plot(ctx, cfg, results):
  fig, axes = plotting.new_figure(1, 2, height_per_row=2.4, sharey=True)
  x = cs(cfg)
  colors = {True: "tab:blue", False: "tab:orange"}
  for ax, norm in zip(axes, NORMS):
    for v in VARIANTS:
      if v.norm != norm:
        continue
      runs = np.asarray(results[v]["exact"])[..., TOKEN]
      if v.attention_mask == "causal":
        c = colors[v.use_bias]
        ax.plot(x, runs.mean(0), color=c, label=f"ours, {v.label.split(', ', 1)[1]} (exact sf)")
        ax.fill_between(x, runs.min(0), runs.max(0), color=c, alpha=0.2, linewidth=0)
        rho = np.asarray(results[v]["rho"])[..., TOKEN].mean(0)
        ax.plot(
            x[::2], rho[::2], "x", color=c, markersize=3, label=f"same, sf ≈ f at ρ={cfg.rho:g}"
        )
      else:  # the original's protocol: leaky mask, flattened cosine, rho
        orig = np.asarray(results[v]["rho"])[..., FLAT]
        ax.plot(
            x,
            orig.mean(0),
            color="tab:green",
            label="original's protocol (leaky mask, " "flattened cos, ρ=1000)",
        )
        ax.fill_between(x, orig.min(0), orig.max(0), color="tab:green", alpha=0.2, linewidth=0)
    for bias, marker in ((False, "o"), (True, "^")):
      ax.plot(
          paper.FIG4_C,
          paper.FIG4[_paper_key(norm, bias)],
          marker=marker,
          markersize=2.2,
          **plotting.PAPER_STYLE,
          label=f"paper (classifier bias {'on' if bias else 'off'})",
      )
    ax.set_title(NORM_FORMULAS[norm])
    ax.set_xlabel("scale c of the parameters")
    ax.set_ylim(-0.05, 1.02)
    ax.grid(True)
  axes[0].set_ylabel("cos(f(x; cθ), sf(x; θ))")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, -0.05))
  fig.suptitle(
      f"Random init, {cfg.arch.num_layers} layers, d_model {cfg.arch.d_model}; "
      f"bands: min-max over {len(cfg.seeds)} seeds",
      fontsize=7.5,
      y=1.04,
  )
  return plotting.save(fig, ctx.path(NAME))


def judge(means: dict, original_c1: dict) -> list:
  """The stated criteria.

  Args:
    means: ``{(norm, use_bias): (c = 1, c = 10)}``, our protocol (exact sf, per-token cosine).
    original_c1: ``{norm: c = 1}`` under the original's protocol (leaky mask, flattened, rho).

  Example:
    >>> means = {("prenorm_paper", True): (0.72, 0.96), ("prenorm_paper", False): (0.8, 0.99),
    ...          ("postnorm", True): (0.09, 0.97), ("postnorm", False): (0.05, 0.97)}
    >>> [c.passed for c in judge(means, {"prenorm_paper": 0.7, "postnorm": 0.1})]
    [True, True, True, True, True, True, True]
  """
  pre1, post1 = means["prenorm_paper", True][0], means["postnorm", True][0]
  pre1_nb, post1_nb = means["prenorm_paper", False][0], means["postnorm", False][0]
  end = {f"{NORMS[n]}, {'all biases' if b else 'no biases'}": v[1] for (n, b), v in means.items()}
  p_pre1, p_post1 = _paper_c1("prenorm_paper"), _paper_c1("postnorm")
  out = [
      check(
          "pre-norm above post-norm at c = 1 (all biases)",
          pre1 > post1,
          ours=f"{pre1:.3f} vs {post1:.3f}",
          paper=f"{p_pre1:.3f} vs {p_post1:.3f}",
      ),
      check(
          "pre-norm above post-norm at c = 1 (no biases)",
          pre1_nb > post1_nb,
          ours=f"{pre1_nb:.3f} vs {post1_nb:.3f}",
          paper="not run",
      ),
      check(
          "every curve above 0.9 at c = 10 (exact sf)",
          min(end.values()) > 0.9,
          ours=f"min {min(end.values()):.3f} ({min(end, key=end.get)})",
          paper="≥ 0.964",
      ),
      check(
          "pre-norm at c = 1 within 0.1 of the paper (all biases)",
          abs(pre1 - p_pre1) <= 0.1,
          ours=pre1,
          paper=p_pre1,
      ),
      check(
          "post-norm at c = 1 within 0.1 of the paper (all biases)",
          abs(post1 - p_post1) <= 0.1,
          ours=post1,
          paper=p_post1,
      ),
  ]
  for norm, value in original_c1.items():
    want = _paper_c1(norm)
    out.append(
        check(
            f"{NORMS[norm]} at c = 1 within 0.1 of the paper under the original's " "protocol",
            abs(value - want) <= 0.1,
            ours=value,
            paper=want,
        )
    )
  return out


def _seeds(results: dict, v: Variant, i: int, sf: str = "exact", m: int = TOKEN) -> np.ndarray:
  """Per seed, variant ``v``'s cosine at the ``i``-th c (sf "exact" or "rho"; TOKEN or FLAT)."""
  return np.asarray(results[v][sf])[:, i, m]


def _rows(cfg: Fig4Config, results: dict) -> list:
  rows = []
  for v in VARIANTS:
    for i, c_label in ((0, "c = 1"), (-1, "c = 10")):
      p = (
          (
              f"{paper.FIG4[_paper_key(v.norm, False)][i]:.3f} / "
              f"{paper.FIG4[_paper_key(v.norm, True)][i]:.3f}"
          )
          if v.use_bias
          else None
      )
      if v.attention_mask != "causal":
        rows.append(
            core.Row.of(
                f"{NORMS[v.norm]}, original's protocol (leaky mask, flattened "
                f"cosine, ρ = {cfg.rho:g}), {c_label}",
                p,
                _seeds(results, v, i, "rho", FLAT),
            )
        )
      else:
        rows.append(core.Row.of(f"{v.label}, {c_label}", p, _seeds(results, v, i)))
  return rows


run_specs = core.no_runs


def make(ctx: core.FigureContext, cfg: Fig4Config) -> core.FigureResult:
  results = {v: {"exact": [], "rho": []} for v in VARIANTS}
  for v in VARIANTS:
    for seed in cfg.seeds:
      ctx.advance(0, f"{NAME}: {v.label}, seed {seed}")
      out = curves(cfg, v, seed)
      for k in out:
        results[v][k].append(out[k])
      ctx.advance(1, None)
  files = _plot(ctx, cfg, results)
  numbers = {
      "c": cs(cfg),
      "seeds": list(cfg.seeds),
      "rho": cfg.rho,
      "measures": ["per-token cosine, averaged", "cosine of the flattened outputs"],
      "curves": {
          v.label: {
              f"{sf}, {measure}": np.asarray(results[v][sf])[..., m]
              for sf in ("exact", "rho")
              for m, measure in ((TOKEN, "per token"), (FLAT, "flattened"))
          }
          for v in VARIANTS
      },
      "paper": {"c": paper.FIG4_C, **paper.FIG4},
  }
  files.append(core.write_numbers(ctx, NAME, numbers))

  def at(v, i, sf="exact", m=TOKEN) -> float:
    return float(_seeds(results, v, i, sf, m).mean())

  means = {
      (v.norm, v.use_bias): (at(v, 0), at(v, -1)) for v in VARIANTS if v.attention_mask == "causal"
  }
  original_c1 = {v.norm: at(v, 0, "rho", FLAT) for v in VARIANTS if v.attention_mask != "causal"}
  criteria = judge(means, original_c1)
  gap = max(
      float(np.max(np.abs(np.asarray(r["exact"]) - np.asarray(r["rho"])))) for r in results.values()
  )
  notes = []
  for norm in NORMS:
    causal, leaky = Variant(norm, True), Variant(norm, True, "original_leaky")
    notes.append(
        f"{NORMS[norm]} at c = 1, what the original's protocol changes: our protocol "
        f"{at(causal, 0):.3f}; the flattened cosine alone {at(causal, 0, 'rho', FLAT):.3f}; "
        f"with the leaky mask too {at(leaky, 0, 'rho', FLAT):.3f} (paper {_paper_c1(norm):.3f})"
    )
  return core.FigureResult(
      NAME, TITLE, files, _rows(cfg, results), criteria, _setup(cfg, gap), notes
  )


def _setup(cfg: Fig4Config, gap: float) -> list[str]:
  return [
      f"model: our SmallLM, {cfg.arch.describe()}, PyTorch-style init"
      + (
          " (the paper's size)"
          if cfg.arch.is_paper_size
          else " (smaller than the paper's 12 x 768)"
      ),
      f"inputs: {cfg.num_sequences} random sequences of length {cfg.seq_len} over a vocabulary "
      f"of {cfg.vocab_size}, as the paper; f = the final hidden state (the encoder output)",
      f"{len(cfg.seeds)} initialisation seeds per curve (the paper: one)",
      "our protocol: -inf causal mask, per-token cosine averaged over tokens (the paper's "
      "definition of saturation); the original's code used a leaky mask (future scores x 0) "
      "and one cosine of the flattened outputs: both are run",
      "'no biases' removes every bias (attention, MLP, LayerNorm beta, classifier); the "
      "paper's two curves per norm differ only in the classifier bias, so both are compared "
      "with our 'all biases' models",
      f"sf two ways: the exact limit and f at rho = {cfg.rho:g} (the paper's); they differ by at "
      f"most {gap:.4f} over all c, seeds, variants and measures",
  ]
