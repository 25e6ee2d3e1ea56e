"""A run's norm trajectory at a glance: the sqrt(t) fit, per-layer growth and a Fig. 1-style plot.

``python -m normgrowth_jax.analysis MODEL_DIR`` prints the summary of a run of the embedded
trainer or of T5X (anything `read_trajectory` reads) and writes ``MODEL_DIR/norm_growth.png``.

Example:
  >>> import numpy as np
  >>> t = np.arange(1, 101)
  >>> s = summarize({"step": t, "param_norm": 2 * np.sqrt(t) + 1,
  ...                "alignment": np.zeros(100), "update_norm": np.ones(100)})
  >>> round(s.fit.a, 6), round(s.fit.r2, 6)
  (2.0, 1.0)
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Optional

import numpy as np

from normgrowth_jax.analysis.fits import SqrtFit, fit_sqrt

GROUP_PREFIX = "param_norm/"


class RunSummary(NamedTuple):
  """What `summarize` extracts from a trajectory (all float64)."""

  steps: np.ndarray  # [T] recorded steps
  param_norm: np.ndarray  # [T]
  fit: SqrtFit  # a * sqrt(t) + b over steps >= fit_from
  fit_from: int
  layer_growth: dict  # group -> (first, last) norm
  alignment_mean: float  # mean cos(delta, theta) over steps >= fit_from
  update_norm_mean: float  # mean ||delta|| over steps >= fit_from


def summarize(trajectory: Mapping[str, np.ndarray], fit_from: Optional[int] = None) -> RunSummary:
  """Fits ||theta_t|| = a sqrt(t) + b from ``fit_from`` (default: a tenth into the run) on."""
  steps = np.asarray(trajectory["step"], np.float64)
  if steps.size < 3:
    raise ValueError(
        f"The trajectory has {steps.size} rows; a sqrt(t) fit needs at least 3. "
        "Train longer or record more often (track_norms(every=...))."
    )
  if fit_from is None:
    fit_from = int(steps[0] + (steps[-1] - steps[0]) // 10)
  late = steps >= fit_from
  norm = np.asarray(trajectory["param_norm"], np.float64)
  groups = sorted(k for k in trajectory if k.startswith(GROUP_PREFIX))
  return RunSummary(
      steps=steps,
      param_norm=norm,
      fit=fit_sqrt(steps[late], norm[late]),
      fit_from=fit_from,
      layer_growth={
          k[len(GROUP_PREFIX) :]: (float(trajectory[k][0]), float(trajectory[k][-1]))
          for k in groups
      },
      alignment_mean=float(np.nanmean(np.asarray(trajectory["alignment"])[late])),
      update_norm_mean=float(np.nanmean(np.asarray(trajectory["update_norm"])[late])),
  )


def format_summary(s: RunSummary) -> str:
  """A short plain-text report of `summarize`'s result."""
  lines = [
      f"steps {int(s.steps[0])}..{int(s.steps[-1])} ({s.steps.size} rows)",
      f"||theta||: {s.param_norm[0]:.4g} -> {s.param_norm[-1]:.4g} "
      f"(x{s.param_norm[-1] / s.param_norm[0]:.3f})",
      f"fit from step {s.fit_from}: ||theta|| = {s.fit.a:.4g} sqrt(t) + {s.fit.b:.4g}, "
      f"r^2 = {s.fit.r2:.4f}",
      f"mean alignment cos(delta, theta) = {s.alignment_mean:.3g}, "
      f"mean ||delta|| = {s.update_norm_mean:.4g}",
  ]
  lines += [f"  {g}: {a:.4g} -> {b:.4g} (x{b / a:.3f})" for g, (a, b) in s.layer_growth.items()]
  return "\n".join(lines)


def plot_summary(
    s: RunSummary, trajectory: Mapping[str, np.ndarray], path: str, title: str = ""
) -> str:
  """Writes a three-panel PNG: norm with its fit, per-layer norms, alignment; returns ``path``."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(1, 3, figsize=(14, 4))
  late = s.steps >= s.fit_from
  ax[0].plot(s.steps, s.param_norm, label="||theta_t||")
  ax[0].plot(
      s.steps[late],
      s.fit.a * np.sqrt(s.steps[late]) + s.fit.b,
      "--",
      label=f"{s.fit.a:.3g} sqrt(t) + {s.fit.b:.3g}, r^2 = {s.fit.r2:.3f}",
  )
  ax[0].set(xlabel="step", ylabel="parameter norm", title="norm growth")
  ax[0].legend(fontsize=8)
  for g in s.layer_growth:
    ax[1].plot(s.steps, trajectory[GROUP_PREFIX + g], label=g)
  ax[1].set(xlabel="step", title="per-layer norm")
  if s.layer_growth:
    ax[1].legend(fontsize=7)
  ax[2].plot(s.steps, trajectory["alignment"], lw=0.5)
  ax[2].set(xlabel="step", title="alignment cos(delta_t, theta_t)")
  fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
