"""What the embedded trainer checks before it touches a run directory (bad input, damaged runs).

:func:`normgrowth_jax.train.train` calls these, in this order, before it writes anything:

* :func:`validate_train_args`: counts, sizes and lengths in range (``TRAIN_STEPS >= 0``: 0
  writes the initial state as checkpoint 0,
  ``BATCH_SIZE >= 1``, every feature length >= 1, periods >= 1, ...), the task registered;
* :func:`check_run_dir`: ``MODEL_DIR`` is new, empty, or a run of this trainer. A T5X model
  directory (``checkpoint_<step>/``) or a folder holding other files is refused with what it
  holds (log files ``*.log``/``*.txt``/``*.out``/``*.err`` and hidden files are tolerated);
* :func:`check_resume_config`: when a checkpoint was restored (after the checkpoint's own
  model and seed checks, before the streams are truncated), the operative config must equal
  the saved ``config.gin`` in every binding that changes the trajectory.

Which bindings change the trajectory: all of them, except ``NON_TRAJECTORY`` (the output
directory, ``train_steps``: extending a run is how a run is resumed to more steps, and the
checkpoint/log/eval periods, the evaluator). Macros are compared through the parameters that
use them, so ``TRAIN_STEPS`` used by a decay schedule *does* count. Only bindings present in
both configs are compared (a configurable called later in the run, e.g. an evaluator, is in
the saved file only). A deliberate change is allowed with ``train.allow_config_change=True``
(command line: ``--allow_config_change``); it is appended to ``resume_log.jsonl`` in the run
directory and the previous config is kept as ``config.before_step<N>.gin``.

Every error here is a :class:`ConfigError` (a ``ValueError``) with a one-line message naming
the problem and the fix; the command line prints it and exits with status 2. (A checkpoint of
another model or seed is a :class:`normgrowth_jax.checkpoints.CheckpointMismatchError`, found
first, exit status 1.)
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import shutil
from typing import Any, Mapping, Optional

RESUME_LOG = "resume_log.jsonl"

# Parameters of train.train that do not change the trajectory (see the module docstring).
NON_TRAJECTORY = (
    "model_dir",
    "train_steps",
    "save_every",
    "keep_checkpoints",
    "log_every",
    "eval_every",
    "evaluator",
    "allow_config_change",
    "progress",
)

# Entries a run directory of this trainer (and the figures run cache) holds.
OWN_ENTRIES = (
    "checkpoints",
    "norms.jsonl",
    "metrics.jsonl",
    "eval.jsonl",
    "tb",
    "config.gin",
    "figure_config.gin",
    "figure_run.json",
    "damaged_checkpoints",
    RESUME_LOG,
)
_OWN_MARKERS = ("checkpoints", "norms.jsonl", "metrics.jsonl", "config.gin", "figure_config.gin")
_TOLERATED = re.compile(
    r"^(\..*|.*\.(log|txt|out|err)|config\.before_step\d+\.gin|.*\.jsonl\.tmp)$"
)
_T5X_CHECKPOINT = re.compile(r"^checkpoint_\d+$")


class ConfigError(ValueError):
  """A configuration the trainer cannot run: the message names the problem and the fix."""


class RunDirError(ConfigError):
  """MODEL_DIR holds something other than a run of this trainer."""


class ConfigMismatchError(ConfigError):
  """Resuming with a config that differs from the saved one in a trajectory binding."""


# ------------------------------------------------------------------------------ arguments


def _int_at_least(name: str, value: Any, low: int, fix: str) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top

  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ConfigError(f"{name}={value!r} must be an integer >= {low}; {fix}")
  if int(value) < low:
    raise ConfigError(f"{name}={value!r} must be >= {low}; {fix}")


def validate_train_args(
    *,
    train_steps,
    batch_size,
    feature_lengths,
    save_every,
    keep_checkpoints,
    log_every,
    track_every,
    eval_every,
    task_name,
    split,
    seed,
) -> None:
  """Range checks of :func:`normgrowth_jax.train.train`'s arguments (before any work).

  Raises:
    ConfigError: naming the gin macro or binding and the valid range.
  """
  _int_at_least(
      "TRAIN_STEPS",
      train_steps,
      0,
      "set --gin.TRAIN_STEPS to the total number of "
      "updates (a resumed run continues up to it; 0 saves only the initial state).",
  )
  _int_at_least("BATCH_SIZE", batch_size, 1, "set --gin.BATCH_SIZE to the global batch size.")
  _int_at_least(
      "CHECKPOINT_PERIOD (train.save_every)",
      save_every,
      1,
      "use a positive number of steps between checkpoints.",
  )
  _int_at_least("train.keep_checkpoints", keep_checkpoints, 1, "keep at least 1 checkpoint.")
  _int_at_least("LOG_EVERY (train.log_every)", log_every, 1, "log every >= 1 steps.")
  _int_at_least(
      "TRACK_EVERY (train.track_every)",
      track_every,
      1,
      "record the norm trajectory every >= 1 steps.",
  )
  _int_at_least("train.eval_every", eval_every, 0, "0 evaluates only at step 0 and the end.")
  _int_at_least("SEED", seed, 0, "use a non-negative integer seed.")
  if not isinstance(feature_lengths, Mapping) or "targets" not in feature_lengths:
    raise ConfigError(
        f"TASK_FEATURE_LENGTHS={feature_lengths!r} must be a mapping with a "
        "'targets' length (and 'inputs' for an encoder-decoder), e.g. "
        "{'inputs': 128, 'targets': 32}."
    )
  for key, n in feature_lengths.items():
    if key not in ("inputs", "targets"):
      raise ConfigError(
          f"TASK_FEATURE_LENGTHS has an unknown feature {key!r}; use 'inputs' " "and 'targets'."
      )
    _int_at_least(f"TASK_FEATURE_LENGTHS[{key!r}]", n, 1, "use a positive sequence length.")
  if not isinstance(task_name, str) or not task_name:
    raise ConfigError(
        f"MIXTURE_OR_TASK_NAME={task_name!r} must be a task name; "
        "`python -m normgrowth_jax.data list` shows the prepared corpora."
    )
  if not isinstance(split, str) or not split:
    raise ConfigError(f"train.split={split!r} must be a split name such as 'train'.")


def check_task(task_name: str) -> None:
  """Raises :class:`ConfigError` unless ``task_name`` is a registered seqio task or mixture."""
  import seqio  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.data import tasks  # pylint: disable=g-import-not-at-top  (registers)

  del tasks
  names = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
  if task_name in names:
    return
  ours = [n for n in names if n.startswith("ng_")]
  close = difflib.get_close_matches(task_name, ours, n=3, cutoff=0.5)
  hint = f"did you mean {', '.join(close)}? " if close else ""
  raise ConfigError(
      f"MIXTURE_OR_TASK_NAME={task_name!r} is not a registered task or mixture; "
      f"{hint}the tasks are named ng_<objective>_<corpus>_<vocab>, e.g. "
      f"{', '.join(ours[:4])} ({len(ours)} in all)."
  )


# ------------------------------------------------------------------------------ run directory


def _listing(names: list[str], n: int = 8) -> str:
  return ", ".join(names[:n]) + (f", ... ({len(names)} entries)" if len(names) > n else "")


def check_run_dir(model_dir: str) -> None:
  """Refuses a MODEL_DIR that holds something other than a run of this trainer.

  Raises:
    RunDirError: a T5X model directory, or a folder with other files and none of ours;
      the message lists what it holds.
  """
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise RunDirError(f"MODEL_DIR={model_dir} is a file, not a directory; pick a new MODEL_DIR.")
  if not os.path.isdir(model_dir):
    return
  names = sorted(os.listdir(model_dir))
  t5x = [n for n in names if _T5X_CHECKPOINT.match(n)]
  if t5x:
    raise RunDirError(
        f"MODEL_DIR={model_dir} is a T5X model directory (it holds {_listing(t5x)}); the "
        "embedded trainer cannot resume it. Continue it with T5X (README, T5X section), read it "
        "with `python -m normgrowth_jax.analysis`, or pick a new MODEL_DIR."
    )
  if any(n in _OWN_MARKERS for n in names):
    return
  foreign = [n for n in names if n not in OWN_ENTRIES and not _TOLERATED.match(n)]
  if foreign:
    raise RunDirError(
        f"MODEL_DIR={model_dir} is not a run of this trainer: it holds {_listing(foreign)} "
        "and no checkpoints/, config.gin or norms.jsonl. Pick a new (or empty) MODEL_DIR; "
        "nothing there was changed."
    )


def has_checkpoints(model_dir: str) -> bool:
  """True when ``MODEL_DIR/checkpoints`` holds a step directory (complete or not)."""
  ckpt_dir = os.path.join(model_dir, "checkpoints")
  return os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))


# ------------------------------------------------------------------------------ config check


def parse_config(text: str) -> dict[str, str]:
  """``{binding: value}`` of a gin config text, macros substituted, whitespace normalised.

  Keys are ``[scope/]configurable.parameter``; the macros themselves are not returned (they
  are compared through the parameters that use them).

  Example:
    >>> parse_config("N = 3\\n\\n# Parameters for f:\\nf.a = %N\\nf.b = [1,\\n    2]\\n")
    {'f.a': '3', 'f.b': '[1, 2]'}
  """
  entries: list[list[str]] = []
  for line in text.splitlines():
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    if line[0].isspace() and entries:
      entries[-1][1] += " " + line.strip()
      continue
    key, sep, value = line.partition(" = ")
    if sep:
      entries.append([key.strip(), value.strip()])
  macros = {k: v for k, v in entries if "." not in k}

  def resolve(value: str, depth: int = 0) -> str:
    if depth > 20:
      return value
    new = re.sub(r"%([A-Za-z_][\w./]*)", lambda m: macros.get(m.group(1), m.group(0)), value)
    return new if new == value else resolve(new, depth + 1)

  return {k: " ".join(resolve(v).split()) for k, v in entries if "." in k}


def _is_trajectory(key: str) -> bool:
  selector, _, param = key.rpartition(".")
  return not (selector.rpartition("/")[2] == "train" and param in NON_TRAJECTORY)


def _checked_by_checkpoint(key: str) -> bool:
  """Bindings the checkpoint's own checks report (seed; the model's shapes)."""
  return key in ("train.seed", "train.model") or key.startswith("MODEL/")


def compare_configs(
    saved: str, current: str, skip_checkpoint_checked: bool = False
) -> list[tuple[str, str, str]]:
  """``[(binding, saved value, current value)]`` for the trajectory bindings that differ."""
  a, b = parse_config(saved), parse_config(current)
  return [
      (k, a[k], b[k])
      for k in sorted(set(a) & set(b))
      if _is_trajectory(k)
      and a[k] != b[k]
      and not (skip_checkpoint_checked and _checked_by_checkpoint(k))
  ]


def _append_log(model_dir: str, row: dict) -> None:
  row = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **row}
  with open(os.path.join(model_dir, RESUME_LOG), "a") as f:
    f.write(json.dumps(row) + "\n")


def check_resume_config(
    model_dir: str, current: str, allow: bool = False, early: bool = False
) -> list:
  """Compares ``current`` (operative config text) with ``MODEL_DIR/config.gin``.

  The trainer calls it twice: ``early=True`` before it builds anything (cheap; skips the seed
  and model bindings, which the checkpoint's own checks report by parameter path; records
  nothing), and once after restoring (every trajectory binding; records an allowed change).

  Returns:
    The allowed differences (empty when the configs agree).

  Raises:
    ConfigMismatchError: a trajectory binding differs (or config.gin is missing) and
      ``allow`` is False; names each differing binding with both values.
  """
  path = os.path.join(model_dir, "config.gin")
  fix = (
      "use the original bindings, a new MODEL_DIR, or --allow_config_change "
      "(gin: train.allow_config_change=True) to change them on purpose."
  )
  latest = max(
      [int(n) for n in os.listdir(os.path.join(model_dir, "checkpoints")) if n.isdigit()],
      default=None,
  )
  if early and (allow or not os.path.isfile(path)):
    return []
  if not os.path.isfile(path):
    if not allow:
      raise ConfigMismatchError(
          f"MODEL_DIR={model_dir} holds checkpoints but no config.gin, so "
          f"the resumed config cannot be checked; {fix}"
      )
    _append_log(
        model_dir,
        {
            "event": "config_change",
            "checkpoint": latest,
            "changes": "no config.gin to compare with",
        },
    )
    return [("config.gin", "missing", "")]
  with open(path) as f:
    saved = f.read()
  diffs = compare_configs(saved, current, skip_checkpoint_checked=early)
  if diffs and not allow:
    shown = "; ".join(f"{k}: {a} -> {b}" for k, a, b in diffs[:6])
    more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
    raise ConfigMismatchError(
        f"MODEL_DIR={model_dir} was trained with another config (checkpoint {latest}); "
        f"resuming would mix two runs. Differs: {shown}{more}. Fix: {fix}"
    )
  if diffs:
    shutil.copyfile(path, os.path.join(model_dir, f"config.before_step{latest}.gin"))
    _append_log(
        model_dir,
        {
            "event": "config_change",
            "checkpoint": latest,
            "changes": [{"binding": k, "saved": a, "now": b} for k, a, b in diffs],
        },
    )
  return diffs


def report_damage(model_dir: str, damaged: list[dict], restored: Optional[int]) -> str:
  """Logs skipped damaged checkpoints to ``resume_log.jsonl``; returns the message to show."""
  if not damaged:
    return ""
  names = "; ".join(f"step {d['step']}: {d['problem']} (moved to {d['moved_to']})" for d in damaged)
  where = (
      f"resuming from step {restored}, the newest intact checkpoint; norms.jsonl, "
      f"metrics.jsonl and TensorBoard are truncated to step {restored}"
      if restored is not None
      else "no intact checkpoint is left: training from step 0"
  )
  _append_log(
      model_dir, {"event": "damaged_checkpoint", "resumed_from": restored, "damaged": damaged}
  )
  return f"Damaged checkpoint(s) in {model_dir}: {names}. {where}."
