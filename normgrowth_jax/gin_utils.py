"""The trainer's command line and gin handling (as T5X's ``gin_utils``): ``--gin_file`` and
``--gin.KEY=VALUE`` flags, gin search paths, and errors that name the bad name and the fix.

Command line (string values may be given without quotes):

  python -m normgrowth_jax.train \\
    --gin_file=gin_configs/local/t5_tiny_bbc_adafactor.gin \\
    --gin.MODEL_DIR=runs/t5_tiny --gin.TRAIN_STEPS=2000

Example:
  >>> _quote_bare("MODEL_DIR=runs/t5_tiny")
  "MODEL_DIR = 'runs/t5_tiny'"
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from typing import Optional, Sequence

import gin

from normgrowth_jax import checkpoints, train
from normgrowth_jax.run_checks import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GinConfigError(ConfigError):
  """A gin file or binding is invalid (unknown name, missing required macro...)."""


def _gin_search_paths() -> list[str]:
  return [os.getcwd(), REPO_ROOT, os.path.join(REPO_ROOT, "gin_configs")]


def _drop_gin_probe_errors(record: logging.LogRecord) -> bool:
  """Logging filter for :func:`parse_gin`: False for gin's ``ERROR Path not found``.

  gin tries each search path in turn and its resource reader logs that line for every path
  under which a gin file (or an include) is not a Python package resource, before it goes on
  to the next path; outside the repository root that was two lines per file. A file found
  nowhere still fails, with gin's own error naming the paths searched.
  """
  return not (record.module == "resource_reader" and record.msg == "Path not found: %s")


def _quote_bare(binding: str) -> str:
  """``KEY=value`` -> ``KEY = 'value'`` when value is a bare word/path (T5X needs quotes)."""
  key, sep, value = binding.partition("=")
  if not sep:
    raise GinConfigError(f"--gin.{binding}: expected --gin.KEY=VALUE.")
  value = value.strip()
  try:
    import ast  # pylint: disable=g-import-not-at-top

    ast.literal_eval(value)
    return f"{key.strip()} = {value}"
  except (ValueError, SyntaxError):
    pass
  if value[:1] in "@%'\"[({" or value in ("True", "False", "None"):
    return f"{key.strip()} = {value}"
  return f"{key.strip()} = {value!r}"


def _explain_gin_error(err: Exception) -> str:
  """Adds the valid names to gin's message for an unknown configurable or parameter."""
  msg = str(err).strip()
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  lines = [msg]
  import re  # pylint: disable=g-import-not-at-top

  m = re.search(r"No configurable matching '([^']+)'", msg)
  if m:
    names = sorted(
        registry.minimal_selector(sel) for sel, _ in registry.items() if not sel.startswith("gin.")
    )
    close = difflib.get_close_matches(m.group(1), names, n=5, cutoff=0.5)
    lines.append(
        f"Unknown configurable '{m.group(1)}'."
        + (f" Did you mean: {', '.join(close)}?" if close else "")
    )
    lines.append("Valid configurables: " + ", ".join(names))
  m = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", msg)
  if m:
    import inspect  # pylint: disable=g-import-not-at-top

    fn = registry.get_match(m.group(1)).wrapped
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = [p for p in inspect.signature(target).parameters if p not in ("self",)]
    close = difflib.get_close_matches(m.group(2), params, n=3)
    lines.append(
        f"Unknown parameter '{m.group(2)}' of '{m.group(1)}'."
        + (f" Did you mean: {', '.join(close)}?" if close else "")
        + f" Valid parameters: {', '.join(params)}."
    )
  m = re.search(r"in scope '([A-Z_][A-Z0-9_]*)'", msg)
  if m and "configurable 'macro'" in msg:
    lines.append(
        f"Macro {m.group(1)} is used but never set: add --gin.{m.group(1)}=VALUE "
        "or set it in your gin file."
    )
  if "macro" in msg.lower() or "Required bindings" in msg:
    lines.append(
        "gin_configs/local/runs/pretrain.gin lists the required macros (MODEL_DIR, "
        "MIXTURE_OR_TASK_NAME, TRAIN_STEPS, BATCH_SIZE, TASK_FEATURE_LENGTHS); set "
        "them in your gin file or with --gin.NAME=VALUE."
    )
  return "\n".join(lines)


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files then ``KEY=VALUE`` bindings (later wins), with readable errors.

  Raises:
    GinConfigError: naming the bad file/binding and listing valid names where possible.
  """
  for path in _gin_search_paths():
    if path not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(path)
  for f in gin_files:
    found = os.path.exists(f) or any(
        os.path.exists(os.path.join(p, f)) for p in _gin_search_paths()
    )
    if not found:
      raise GinConfigError(f"--gin_file={f} not found (searched {', '.join(_gin_search_paths())}).")
  logging.getLogger().addFilter(_drop_gin_probe_errors)
  try:
    gin.parse_config_files_and_bindings(
        list(gin_files), [_quote_bare(b) for b in bindings], finalize_config=False
    )
  except GinConfigError:
    raise
  except Exception as e:  # gin raises ValueError/KeyError/TypeError/ParseError...
    raise GinConfigError(_explain_gin_error(e)) from e
  finally:
    logging.getLogger().removeFilter(_drop_gin_probe_errors)


# What gin's own call-time errors say: an unset macro or REQUIRED parameter.
_GIN_CALL_ERRORS = ("No values supplied by Gin", "Required bindings for", "configurable 'macro'")


def run_from_gin() -> dict:
  """Calls :func:`normgrowth_jax.train.train` with the parsed config, translating gin's late errors.

  Only gin's own messages (an unset macro or required binding) become a
  :class:`GinConfigError`; the trainer's errors pass through, whatever their text holds
  (e.g. a MODEL_DIR path containing "gin").
  """
  try:
    return train.train(progress=sys.stderr.isatty() or bool(os.environ.get("NORMGROWTH_PROGRESS")))
  except (ValueError, TypeError, RuntimeError) as e:
    if any(s in str(e) for s in _GIN_CALL_ERRORS) and not isinstance(
        e, (checkpoints.CheckpointMismatchError, train.NonFiniteLossError)
    ):
      raise GinConfigError(_explain_gin_error(e)) from e
    raise


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Parses ``--gin_file``/``--gin.KEY=VALUE`` (T5X flags) and trains."""
  parser = argparse.ArgumentParser(
      prog="normgrowth-train",
      description=train.__doc__.split("\n\n")[0],
      epilog="Any --gin.KEY=VALUE adds a gin binding, e.g. --gin.TRAIN_STEPS=100.",
  )
  parser.add_argument(
      "--gin_file",
      action="append",
      default=[],
      help="gin file (repeatable), e.g. gin_configs/local/t5_tiny_bbc_adafactor.gin",
  )
  parser.add_argument(
      "--gin_bindings", action="append", default=[], help="a gin binding 'KEY = VALUE' (repeatable)"
  )
  parser.add_argument(
      "--allow_config_change",
      action="store_true",
      help="resume MODEL_DIR although a trajectory binding (model, task, lengths, "
      "batch size, optimizer, schedule, seed, filter) differs from its config.gin; "
      "the change is recorded in MODEL_DIR/resume_log.jsonl",
  )
  parser.add_argument(
      "--debug", action="store_true", help="show the full traceback of a configuration error"
  )
  args, rest = parser.parse_known_args(argv)
  bindings = list(args.gin_bindings)
  if args.allow_config_change:
    bindings.append("train.allow_config_change=True")
  for a in rest:
    if a.startswith("--gin."):
      bindings.append(a[len("--gin.") :])
    else:
      parser.error(f"unrecognised argument {a!r} (use --gin_file=... or --gin.KEY=VALUE)")
  if not args.gin_file:
    parser.error(
        "at least one --gin_file is required, e.g. "
        "--gin_file=gin_configs/local/t5_tiny_bbc_adafactor.gin"
    )
  parse_gin(args.gin_file, bindings)
  summary = run_from_gin()
  print(
      " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()),
      flush=True,
  )
  return summary


def _user_message(err: BaseException) -> str:
  """The error's own message, without the "In call to configurable ..." lines gin appends
  (what :func:`_explain_gin_error` added after them, e.g. which macro to set, is kept)."""
  return "\n".join(
      line
      for line in str(err).split("\n")
      if not line.lstrip().startswith("In call to configurable")
  ).strip()


def console_main(argv: Optional[Sequence[str]] = None):
  """Entry point of the ``normgrowth-train`` console script.

  A configuration error (gin or not: :class:`ConfigError`, a parameter filter that selects
  nothing, an empty corpus) prints ``normgrowth-train: error: <problem and fix>`` and exits
  with status 2; a run that stops (non-finite loss, a checkpoint of another model, missing
  data) exits with status 1. ``--debug`` shows the traceback instead.
  """
  from normgrowth_jax import norms  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.data import corpora  # pylint: disable=g-import-not-at-top

  argv = sys.argv[1:] if argv is None else list(argv)
  config_errors = (ConfigError, norms.EmptySelectionError, corpora.EmptyCorpusError)
  try:
    main(argv)
  except (
      *config_errors,
      train.NonFiniteLossError,
      checkpoints.CheckpointMismatchError,
      FileNotFoundError,
  ) as e:
    if "--debug" in argv:
      raise
    print(f"normgrowth-train: error: {_user_message(e)}", file=sys.stderr)
    sys.exit(2 if isinstance(e, config_errors) else 1)
