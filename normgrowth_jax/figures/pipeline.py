"""Runs figures under one progress bar, writes each figure's files and ``report.md``.

Example:
  >>> import tempfile, pathlib
  >>> out = pathlib.Path(tempfile.mkdtemp())
  >>> results = run(["fig4"], "smoke", out, out / "runs", progress=False)  # doctest: +SKIP
  >>> sorted(p.name for p in out.iterdir())                                 # doctest: +SKIP
  ['fig4.json', 'fig4.pdf', 'fig4.png', 'report.md', 'results.json', 'runs']
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

from normgrowth_jax.figures import core, registry, report, runs


class _Progress:
  """One tqdm bar over all figures' work units; ``advance(units, stage)`` moves it."""

  def __init__(self, total: int, enabled: bool):
    self.bar = None
    if enabled:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

      self.bar = tqdm(total=total, unit="unit", dynamic_ncols=True)

  def __call__(self, units: int = 1, stage: Optional[str] = None):
    if self.bar is None:
      return
    if stage:
      self.bar.set_description_str(stage[:60])
    if units:
      self.bar.update(units)

  def write(self, line: str):
    if self.bar is None:
      print(line, flush=True)
    else:
      self.bar.write(line)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def default_train_workers() -> int:
  """Two runs side by side on a CPU with two or more cores (measured on 2 cores: 1.6x the
  steps per second of one after the other), one on an accelerator."""
  import jax  # pylint: disable=g-import-not-at-top

  return 2 if jax.default_backend() == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def run(
    names: Sequence[str],
    profile: str,
    out_dir,
    runs_root,
    *,
    force: bool = False,
    options: Optional[core.FigureOptions] = None,
    progress: bool = True,
    configs: Optional[dict] = None,
    train_workers: Optional[int] = None,
) -> list[core.FigureResult]:
  """Makes the figures ``names`` (or ``["all"]``) at ``profile`` into ``out_dir``.

  Args:
    names: figure names or ["all"]; unknown names raise ValueError listing the valid ones.
    profile: "smoke", "quick" or "full".
    out_dir: where figN.{png,pdf,json}, report.md and results.json go.
    runs_root: the run cache root (runs go to ``<runs_root>/<profile>/<name>-<hash>``).
    force: retrain cached runs.
    options: what the command line hands to figures (``core.FigureOptions``).
    progress: show the progress bar.
    configs: figure name -> a config replacing its ``CONFIGS[profile]`` (a variant, e.g. a
      longer budget; runs are cached by their own settings).
    train_workers: how many trainer runs train at once (default
      :func:`default_train_workers`). Every figure's declared runs train before any figure is
      made.

  Returns:
    One FigureResult per figure, in the paper's order.
  """
  modules, configs = _chosen(names, profile, configs)
  ctx = core.FigureContext(
      profile=profile,
      out_dir=Path(out_dir),
      runs_root=Path(runs_root).resolve(),
      force=force,
      options=options or core.FigureOptions(),
      train_workers=train_workers or default_train_workers(),
  )
  declared = [(m.NAME, s) for m, c in zip(modules, configs) for s in m.run_specs(ctx, c)]
  specs = list(dict.fromkeys(s for _, s in declared))
  bar = ctx.advance = _Progress(
      sum(s.steps for s in specs) + sum(m.work(c) for m, c in zip(modules, configs)), progress
  )
  results = []
  try:
    where = dict(zip(specs, runs.train_specs(ctx, specs)))
    owner = {}  # a run's training time counts for the first figure that declares it
    for name, spec in declared:
      owner.setdefault(where[spec], name)
    for module, config in zip(modules, configs):
      result = _make(ctx, module, config, [d for d, n in owner.items() if n == module.NAME])
      results.append(result)
      bar.write(f"{result.name}: {result.verdict} ({result.wall_s:.0f} s)")
  finally:
    bar.close()
  write_report(ctx.out_dir, results, profile)
  for r in results:
    print(f"{r.name:5s} {r.wall_s:8.1f} s  {r.verdict:15s} {r.title}", flush=True)
  return results


def _chosen(names: Sequence[str], profile: str, configs: Optional[dict]) -> tuple[list, list]:
  """The figure modules ``names`` resolves to and their configs at ``profile`` (or those given
  in ``configs``), checked."""
  if profile not in core.PROFILES:
    raise ValueError(f"unknown profile {profile!r}; choose from: {', '.join(core.PROFILES)}.")
  names = registry.resolve(names)
  modules = [registry.module(n) for n in names]
  unknown = sorted(set(configs or {}) - set(names))
  if unknown:
    raise ValueError(f"configs given for figures not made: {unknown}; made: {names}.")
  return modules, [(configs or {}).get(m.NAME, m.CONFIGS[profile]) for m in modules]


def _make(
    ctx: core.FigureContext, module: core.FigureModule, config, own: list[Path]
) -> core.FigureResult:
  """``module.make``, timed: its wall time plus the training of the runs it owns (``own``: the
  runs it was first to declare) trained in this call, and the training time of the cached runs
  it was first to reuse; its declared files checked."""
  t0, reused_before = time.perf_counter(), set(ctx.reused)
  result = module.make(ctx, config)
  result.wall_s = (
      time.perf_counter() - t0 + sum(runs.training_s(d) for d in own if d in ctx.trained)
  )
  result.cached_train_s = sum(
      s for d, s in ctx.reused.items() if d not in reused_before or d in own
  )
  missing = [str(f) for f in result.files if not Path(f).is_file()]
  if missing:
    raise RuntimeError(f"{module.NAME} declared files it did not write: {missing}")
  return result


def _merge_earlier(out_dir: Path, results, profile: str) -> list:
  """This call's results plus those of figures made earlier into the same folder (same
  profile) and not remade now, in the paper's order, so report.md covers the whole folder."""
  saved = out_dir / "results.json"
  if not saved.is_file():
    return list(results)
  earlier = json.loads(saved.read_text())
  if earlier.get("profile") != profile:
    return list(results)
  now = {r.name for r in results}
  kept = [
      core.FigureResult.from_json(f)
      for f in earlier["figures"]
      if f["name"] not in now and (out_dir / f"{f['name']}.png").is_file()
  ]
  order = {n: i for i, n in enumerate(registry.PAPER_FIGURES)}
  return sorted([*results, *kept], key=lambda r: order.get(r.name, len(order)))


def write_report(out_dir: Path, results, profile: str) -> list:
  """Writes report.md and results.json (every figure's table, criteria and verdict), keeping
  the figures of earlier calls into the same folder that this call did not remake."""
  out_dir.mkdir(parents=True, exist_ok=True)
  results = _merge_earlier(out_dir, results, profile)
  total_s = sum(r.wall_s for r in results)
  (out_dir / "report.md").write_text(report.render(results, profile, report.environment(), total_s))
  (out_dir / "results.json").write_text(
      json.dumps(
          {"profile": profile, "total_s": total_s, "figures": [r.to_json() for r in results]},
          indent=1,
          default=str,
      )
  )
  return results
