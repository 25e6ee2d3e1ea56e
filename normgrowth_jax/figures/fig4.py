"""Fig. 4: approximate homogeneity of randomly initialised transformers.

cos(f(x; c theta), sf(x; theta)) for c in linspace(1, 10, 20), where f is the small LM's final
hidden state and sf its saturated limit, for the paper's pre-norm x + LN(F(x)) and post-norm
LN(x + F(x)) blocks, each with every bias and with no bias at all (the real ablation: the
original's "bias" switch only toggled the classifier bias). sf is computed two ways: the exact
limit (``saturated=True``) and the paper's approximation f(x; 1000 theta).

Example (the smoke profile, a few seconds):
  >>> cfg = CONFIGS["smoke"]
  >>> out = curves(cfg, "prenorm_paper", True, seed=0)
  >>> sorted(out), out["exact"].shape == (cfg.num_c,)
  (['exact', 'rho'], True)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import saturation as sat
from normgrowth_jax.figures import core, paper, plotting
from normgrowth_jax.figures.verdict import check
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

NAME = "fig4"
TITLE = "Homogeneity of randomly initialised transformers"
NORMS = {"prenorm_paper": "pre-norm", "postnorm": "post-norm"}
BIASES = {True: "all biases", False: "no biases"}
NORM_FORMULAS = {"prenorm_paper": "pre-norm: x + LN(F(x))", "postnorm": "post-norm: LN(x + F(x))"}


@dataclasses.dataclass(frozen=True)
class Fig4Config:
  num_layers: int = 12
  d_model: int = 768
  d_ff: int = 512
  num_heads: int = 12
  vocab_size: int = 10
  num_sequences: int = 10
  seq_len: int = 10
  seeds: tuple = (0, 1, 2)
  num_c: int = 20
  rho: float = 1000.0
  data_seed: int = 1234


CONFIGS = {
    "smoke": Fig4Config(num_layers=2, d_model=32, d_ff=32, num_heads=4, seeds=(0, 1)),
    "quick": Fig4Config(),
    "full": Fig4Config(seeds=tuple(range(10))),
}


def work(cfg: Fig4Config) -> int:
  return len(NORMS) * len(BIASES) * len(cfg.seeds)


def cs(cfg: Fig4Config) -> np.ndarray:
  return np.linspace(1.0, 10.0, cfg.num_c)


@functools.lru_cache(maxsize=None)
def _functions(cfg: Fig4Config, norm: str, use_bias: bool):
  """(model, f, sf exact, sf at rho) for one variant; cached so jit reuses its compilation."""
  model = SmallLM(SmallLMConfig(vocab_size=cfg.vocab_size, num_layers=cfg.num_layers,
                                d_model=cfg.d_model, d_ff=cfg.d_ff, num_heads=cfg.num_heads,
                                max_len=cfg.seq_len, norm=norm, use_bias=use_bias))
  tokens = inputs(cfg)
  mask = jnp.ones(tokens.shape, bool)  # every token is real (id 0 is a word here, not padding)
  f = lambda p: model.apply({"params": p}, tokens, mask).hidden_states[-1]
  sf = lambda p: model.apply({"params": p}, tokens, mask, saturated=True).hidden_states[-1]
  sf_rho = lambda p: f(sat.scale_params(p, cfg.rho))
  return model, f, sf, sf_rho


def inputs(cfg: Fig4Config) -> jax.Array:
  """The paper's inputs: random sequences over a small vocabulary, [num_sequences, seq_len]."""
  return jax.random.randint(jax.random.key(cfg.data_seed), (cfg.num_sequences, cfg.seq_len),
                            0, cfg.vocab_size)


def init_params(cfg: Fig4Config, norm: str, use_bias: bool, seed: int):
  model = _functions(cfg, norm, use_bias)[0]
  return model.init(jax.random.key(seed), inputs(cfg))["params"]


def curves(cfg: Fig4Config, norm: str, use_bias: bool, seed: int) -> dict:
  """{"exact": [num_c], "rho": [num_c]}: cos(f(c theta), sf(theta)) with sf exact / at rho."""
  _, f, sf, sf_rho = _functions(cfg, norm, use_bias)
  params = init_params(cfg, norm, use_bias, seed)
  c = jnp.asarray(cs(cfg), jnp.float32)
  return {"exact": np.asarray(sat.homogeneity_curve(f, sf, params, c), np.float64),
          "rho": np.asarray(sat.homogeneity_curve(f, sf_rho, params, c), np.float64)}


def _paper_key(norm: str, bias: bool) -> str:
  return ("prenorm" if norm == "prenorm_paper" else "postnorm") + ("_bias" if bias else "")


def _plot(ctx, cfg, results):
  fig, axes = plotting.new_figure(1, 2, height_per_row=2.3, sharey=True)
  x = cs(cfg)
  colors = {True: "tab:blue", False: "tab:orange"}
  for ax, norm in zip(axes, NORMS):
    for bias in BIASES:
      runs = np.asarray(results[norm][bias]["exact"])
      mean, lo, hi = runs.mean(0), runs.min(0), runs.max(0)
      ax.plot(x, mean, color=colors[bias], label=f"ours, {BIASES[bias]} (exact sf)")
      ax.fill_between(x, lo, hi, color=colors[bias], alpha=0.2, linewidth=0)
      rho = np.asarray(results[norm][bias]["rho"]).mean(0)
      ax.plot(x, rho, color=colors[bias], linestyle=":", label=f"ours, {BIASES[bias]} "
              f"(sf ≈ f at ρ={cfg.rho:g})")
    for bias, marker in ((False, "o"), (True, "^")):
      ax.plot(paper.FIG4_C, paper.FIG4[_paper_key(norm, bias)], marker=marker, markersize=2.2,
              **plotting.PAPER_STYLE,
              label=f"paper (classifier bias {'on' if bias else 'off'})")
    ax.set_title(NORM_FORMULAS[norm])
    ax.set_xlabel("scale c of the parameters")
    ax.set_ylim(-0.05, 1.02)
    ax.grid(alpha=0.3, linewidth=0.5)
  axes[1].legend(loc="lower right")
  fig.suptitle(f"Random init, {cfg.num_layers} layers, d_model {cfg.d_model}; "
               f"bands: min-max over {len(cfg.seeds)} seeds", fontsize=7.5, y=1.04)
  axes[0].set_ylabel("cos(f(x; cθ), sf(x; θ))")
  return plotting.save(fig, ctx.path(NAME))


def judge(means: dict) -> list:
  """The stated criteria, from ``{(norm, use_bias): (mean at c = 1, mean at c = 10)}``.

  Example:
    >>> means = {("prenorm_paper", True): (0.72, 0.96), ("prenorm_paper", False): (0.8, 0.99),
    ...          ("postnorm", True): (0.09, 0.97), ("postnorm", False): (0.05, 0.97)}
    >>> [c.passed for c in judge(means)]
    [True, True, True, True, True]
  """
  pre1, post1 = means["prenorm_paper", True][0], means["postnorm", True][0]
  pre1_nb, post1_nb = means["prenorm_paper", False][0], means["postnorm", False][0]
  end = {f"{NORMS[n]}, {BIASES[b]}": v[1] for (n, b), v in means.items()}
  paper_pre1 = float(np.mean([paper.FIG4["prenorm"][0], paper.FIG4["prenorm_bias"][0]]))
  paper_post1 = float(np.mean([paper.FIG4["postnorm"][0], paper.FIG4["postnorm_bias"][0]]))
  return [
      check("pre-norm above post-norm at c = 1 (all biases)", pre1 > post1,
            ours=f"{pre1:.3f} vs {post1:.3f}", paper=f"{paper_pre1:.3f} vs {paper_post1:.3f}"),
      check("pre-norm above post-norm at c = 1 (no biases)", pre1_nb > post1_nb,
            ours=f"{pre1_nb:.3f} vs {post1_nb:.3f}", paper="not run"),
      check("every curve above 0.9 at c = 10 (exact sf)", min(end.values()) > 0.9,
            ours=f"min {min(end.values()):.3f} ({min(end, key=end.get)})", paper="≥ 0.964"),
      check("pre-norm at c = 1 within 0.1 of the paper (all biases)",
            abs(pre1 - paper_pre1) <= 0.1, ours=pre1, paper=paper_pre1),
      check("post-norm at c = 1 within 0.1 of the paper (all biases)",
            abs(post1 - paper_post1) <= 0.1, ours=post1, paper=paper_post1),
  ]


def make(ctx: core.FigureContext, cfg: Fig4Config) -> core.FigureResult:
  results = {n: {b: {"exact": [], "rho": []} for b in BIASES} for n in NORMS}
  for norm in NORMS:
    for bias in BIASES:
      for seed in cfg.seeds:
        ctx.advance(0, f"{NAME}: {NORMS[norm]}, {BIASES[bias]}, seed {seed}")
        out = curves(cfg, norm, bias, seed)
        for k in out:
          results[norm][bias][k].append(out[k])
        ctx.advance(1, None)
  files = _plot(ctx, cfg, results)
  numbers = {"c": cs(cfg), "seeds": list(cfg.seeds), "rho": cfg.rho,
             "curves": {f"{NORMS[n]}, {BIASES[b]}": {k: np.asarray(v) for k, v in r.items()}
                        for n, per in results.items() for b, r in per.items()},
             "paper": {"c": paper.FIG4_C, **paper.FIG4}}
  files.append(core.write_numbers(ctx, NAME, numbers))

  def at(norm, bias, i, kind="exact"):
    return core.mean_spread(np.asarray(results[norm][bias][kind])[:, i])

  rows = []
  for norm in NORMS:
    for bias in BIASES:
      for i, c_label in ((0, "c = 1"), (-1, "c = 10")):
        p = (f"{paper.FIG4[_paper_key(norm, False)][i]:.3f} / "
             f"{paper.FIG4[_paper_key(norm, True)][i]:.3f}") if bias else None
        rows.append(core.Row(f"{NORMS[norm]}, {BIASES[bias]}, {c_label}", p, *at(norm, bias, i)))
  means = {(n, b): (at(n, b, 0)[0], at(n, b, -1)[0]) for n in NORMS for b in BIASES}
  criteria = judge(means)
  gap = max(float(np.max(np.abs(np.asarray(r["exact"]) - np.asarray(r["rho"]))))
            for per in results.values() for r in per.values())
  setup = [
      f"model: our SmallLM (causal, -inf mask), {cfg.num_layers} layers, d_model {cfg.d_model}, "
      f"FF {cfg.d_ff}, {cfg.num_heads} heads, PyTorch-style init"
      + (" (the paper's size)" if (cfg.num_layers, cfg.d_model) == (12, 768) else
         " (smaller than the paper's 12 x 768)"),
      f"inputs: {cfg.num_sequences} random sequences of length {cfg.seq_len} over a vocabulary "
      f"of {cfg.vocab_size}, as the paper; f = the final hidden state (before the classifier)",
      f"{len(cfg.seeds)} initialisation seeds per curve (the paper: one)",
      "'no biases' removes every bias (attention, MLP, LayerNorm beta, classifier); the "
      "paper's two curves per norm differ only in the classifier bias, so both are compared "
      "with our 'all biases' models",
      f"sf two ways: the exact limit and f at rho = {cfg.rho:g} (the paper's); they differ by at "
      f"most {gap:.4f} over all c, seeds and variants",
  ]
  return core.FigureResult(NAME, TITLE, files, rows, criteria, setup)
