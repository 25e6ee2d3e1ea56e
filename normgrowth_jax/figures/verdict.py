"""Verdicts computed from stated criteria, never typed by hand.

A figure module states its criteria as :class:`Criterion` objects: a sentence saying what is
checked, the number we measured, the paper's number and whether the check passed. The verdict
follows from them:

* ``reproduced``: every criterion passes;
* ``partly``: some pass, some fail;
* ``not reproduced``: none passes;
* ``not comparable``: no criterion could be evaluated (e.g. the paper's model is unavailable),
  which a criterion says by ``passed=None``.

Example:
  >>> c1 = check("pre-norm above post-norm at c = 1", 0.71 > 0.09, ours=0.71, paper=0.727)
  >>> c2 = check("both above 0.9 at c = 10", min(0.92, 0.98) > 0.9, ours=0.92, paper=0.964)
  >>> verdict([c1, c2])
  'reproduced'
  >>> verdict([c1, check("post-norm above 0.9 at c = 10", False, ours=0.5)])
  'partly'
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Criterion:
  """One stated check of a figure.

  Attributes:
    text: what is checked, as a reader would state it ("both above 0.9 at c = 10").
    passed: True / False, or None when it cannot be evaluated here (not comparable).
    ours: the number (or short text) we measured.
    paper: the paper's number (or short text), None if the paper gives none.
  """

  text: str
  passed: Optional[bool]
  ours: Any = None
  paper: Any = None

  def to_json(self) -> dict:
    return {
        "text": self.text,
        "passed": self.passed,
        "ours": _plain(self.ours),
        "paper": _plain(self.paper),
    }


def _plain(x):
  """JSON-friendly: numpy scalars to Python, tuples to lists."""
  if hasattr(x, "tolist"):
    return x.tolist()
  if isinstance(x, tuple):
    return [_plain(v) for v in x]
  return x


def check(text: str, passed, ours=None, paper=None) -> Criterion:
  """A :class:`Criterion`; ``passed`` may be a numpy bool (converted) or None."""
  return Criterion(text, None if passed is None else bool(passed), ours, paper)


def verdict(criteria: Sequence[Criterion]) -> str:
  """The verdict implied by ``criteria`` (see the module docstring)."""
  evaluated = [c.passed for c in criteria if c.passed is not None]
  if not evaluated:
    return "not comparable"
  if all(evaluated):
    return "reproduced"
  if any(evaluated):
    return "partly"
  return "not reproduced"
