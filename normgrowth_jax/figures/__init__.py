"""The paper's figures, one module each, and the report that sets our numbers beside the paper's.

``python -m normgrowth_jax.figures [all | fig2 fig4 ...] --profile smoke|quick|full --out DIR``
(or ``make reproduce-figures``) writes ``figN.png``, ``figN.pdf``, ``figN.json`` and
``report.md``. Modules: :mod:`~normgrowth_jax.figures.pipeline` (the run),
:mod:`~normgrowth_jax.figures.core` (what a figure receives and returns),
:mod:`~normgrowth_jax.figures.runs` (the trained-run cache), :mod:`~normgrowth_jax.figures.paper`
(the paper's numbers), :mod:`~normgrowth_jax.figures.verdict`,
:mod:`~normgrowth_jax.figures.report`, :mod:`~normgrowth_jax.figures.plotting`, and ``figN``.

Example:
  >>> from normgrowth_jax import figures
  >>> "fig4" in figures.available()
  True
"""

from normgrowth_jax.figures.registry import available

__all__ = ["available"]
