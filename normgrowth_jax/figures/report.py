"""``report.md``: per figure the image, our numbers beside the paper's, the setup differences,
the criteria and the verdict they imply; plus software versions, device and wall times.

Example:
  >>> from normgrowth_jax.figures.core import FigureResult, Row
  >>> from normgrowth_jax.figures.verdict import check
  >>> r = FigureResult("fig4", "Homogeneity", ["fig4.png"], [Row("c = 1", 0.727, 0.71)],
  ...                  [check("pre above post", True, 0.71, 0.727)], ["smaller model"])
  >>> text = render([r], "quick", environment={"jax": "0.10"})
  >>> "| fig4 | Homogeneity | reproduced |" in text
  True
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import Optional, Sequence

from normgrowth_jax.figures.core import FigureResult, _fmt

_MARK = {True: "✅ pass", False: "❌ fail", None: "— not comparable"}


def environment() -> dict:
  """Software versions and the device the figures were computed on."""
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  env = {"python": platform.python_version()}
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "matplotlib"):
    try:
      env[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      env[pkg] = "not installed"
  dev = jax.devices()[0]
  env["device"] = f"{dev.platform}: {getattr(dev, 'device_kind', '')} x {jax.device_count()}"
  env["cpu"] = _cpu_name() + f" ({os.cpu_count()} cores)"
  return env


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  esc = lambda s: str(s).replace("|", "\\|")
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
      "| " + " | ".join(esc(c) for c in r) + " |" for r in rows
  ]


def _seconds(s: float) -> str:
  return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def wall_time(r: FigureResult) -> str:
  """The figure's wall time, plus the training time of the cached runs it reused."""
  cached = f" + {_seconds(r.cached_train_s)} cached training" if r.cached_train_s else ""
  return _seconds(r.wall_s) + cached


def verdict_table(results: Sequence[FigureResult]) -> list[str]:
  return _table(
      ["figure", "what", "verdict", "criteria passed", "wall time"],
      [
          [
              r.name,
              r.title,
              r.verdict,
              f"{sum(c.passed is True for c in r.criteria)} of "
              f"{sum(c.passed is not None for c in r.criteria)}",
              wall_time(r),
          ]
          for r in results
      ],
  )


README_BEGIN = "<!-- figures:begin (written by python -m normgrowth_jax.figures --readme) -->"
README_END = "<!-- figures:end -->"


def readme_block(results: Sequence[FigureResult], profile: str, figures_dir: str) -> str:
  """The README's summary of a run: the verdict table and every figure's image."""
  lines = [
      README_BEGIN,
      "",
      f"Verdicts of the `{profile}` profile (from "
      f"[`{figures_dir}/report.md`]({figures_dir}/report.md)):",
      "",
  ]
  lines += verdict_table(results)
  for r in results:
    lines += [
        "",
        f"**{r.name}: {r.title}** ({r.verdict})",
        "",
        f"![{r.name}]({figures_dir}/{r.name}.png)",
    ]
  return "\n".join(lines + ["", README_END])


def splice_readme(text: str, block: str) -> str:
  """``text`` with the part between the figures markers replaced by ``block``.

  Example:
    >>> splice_readme(f"a\\n{README_BEGIN}\\nold\\n{README_END}\\nb", "NEW")
    'a\\nNEW\\nb'
  """
  start, end = text.find(README_BEGIN), text.find(README_END)
  if start < 0 or end < start:
    raise ValueError(
        f"README has no '{README_BEGIN}' ... '{README_END}' block; add the two "
        "markers where the figures should go."
    )
  return text[:start] + block + text[end + len(README_END) :]


def render(
    results: Sequence[FigureResult],
    profile: str,
    environment: Optional[dict] = None,
    total_s: Optional[float] = None,
) -> str:
  """The report as Markdown (image paths relative to the report's folder)."""
  lines = [
      f"# Reproduction report ({profile} profile)",
      "",
      f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by "
      f"`python -m normgrowth_jax.figures --profile {profile}`. Verdicts are computed from "
      "the criteria listed under each figure: `reproduced` when all pass, `partly` when "
      "some do, `not reproduced` when none does, `not comparable` when none can be "
      "evaluated.",
      "",
  ]
  lines += verdict_table(results)
  if total_s is not None:
    cached = sum(r.cached_train_s for r in results)
    lines += [
        "",
        f"Total wall time: {_seconds(total_s)}"
        + (
            f"; with the training of the cached runs it reused, {_seconds(total_s + cached)} "
            "(what a call with an empty run cache takes)."
            if cached
            else "."
        ),
    ]
  for r in results:
    lines += [
        "",
        f"## {r.name}: {r.title}",
        "",
        f"**Verdict: {r.verdict}**",
        "",
        f"![{r.name}]({r.name}.png)",
        "",
    ]
    lines += _table(["quantity", "paper", "ours"], [row.cells() for row in r.rows])
    lines += ["", "Criteria:", ""]
    lines += _table(
        ["criterion", "ours", "paper", "result"],
        [[c.text, _fmt(c.ours), _fmt(c.paper), _MARK[c.passed]] for c in r.criteria],
    )
    lines += ["", "How our setup differs from the paper's:", ""]
    lines += [f"- {s}" for s in r.setup]
    if r.notes:
      lines += ["", "Notes:", ""] + [f"- {n}" for n in r.notes]
    lines += ["", f"Wall time: {wall_time(r)}."]
  if environment:
    lines += ["", "## Environment", ""]
    lines += _table(["", ""], [[k, v] for k, v in environment.items()])
  return "\n".join(lines) + "\n"
