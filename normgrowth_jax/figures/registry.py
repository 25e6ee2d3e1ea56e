"""Which figure modules exist: the paper's ``fig1`` ... ``fig6``, and figures beyond the paper.

``all`` means the paper's figures; a figure beyond the paper (``fig3_long``: Fig. 3's models at
the paper's 5 epochs) is made only when named. :func:`module` checks each against the contract
:class:`~normgrowth_jax.figures.core.FigureModule`.

Example:
  >>> "fig4" in available()
  True
  >>> resolve(["all"]) == available()
  True
  >>> resolve(["fig3_long"])
  ['fig3_long']
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Sequence

from normgrowth_jax.figures import core

PAPER_FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6")
BEYOND_PAPER = ("fig1_ratio", "fig3_long")


def available() -> list[str]:
  """The paper's figures that have a module here, in the paper's order."""
  return [
      n
      for n in PAPER_FIGURES
      if importlib.util.find_spec(f"normgrowth_jax.figures.{n}") is not None
  ]


def resolve(names: Sequence[str]) -> list[str]:
  """``["all"]`` or figure names -> the figure names, checked; raises ValueError naming the fix."""
  names = list(names) or ["all"]
  if names == ["all"]:
    return available()
  have = available() + [
      n for n in BEYOND_PAPER if importlib.util.find_spec(f"normgrowth_jax.figures.{n}") is not None
  ]
  unknown = [n for n in names if n not in have]
  if unknown:
    missing = [n for n in unknown if n in PAPER_FIGURES]
    hint = f" ({', '.join(missing)} not built yet)" if missing else ""
    raise ValueError(
        f"unknown figure(s) {', '.join(unknown)}{hint}; choose from: all, " f"{', '.join(have)}."
    )
  return [n for n in have if n in names]


def members() -> list[str]:
  """The names a figure module defines: those of :class:`core.FigureModule`.

  >>> members()
  ['NAME', 'TITLE', 'CONFIGS', 'work', 'run_specs', 'make']
  """
  protocol = core.FigureModule
  methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
  return [*protocol.__annotations__, *methods]


def checked(m: ModuleType) -> core.FigureModule:
  """``m`` if it defines every member of the contract; else a TypeError naming what it lacks."""
  missing = [n for n in members() if not hasattr(m, n)]
  if missing:
    raise TypeError(
        f"figure module {m.__name__} lacks {', '.join(missing)} (the contract: "
        "normgrowth_jax.figures.core.FigureModule)"
    )
  return m


def module(name: str) -> core.FigureModule:
  """The figure module ``name``, checked against the contract."""
  return checked(importlib.import_module(f"normgrowth_jax.figures.{name}"))
