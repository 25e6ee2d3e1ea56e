"""The embedded single-machine trainer: gin-configured, resumable bit for bit, norm-tracked.

Command line (T5X style; string values may be given without quotes):

  python -m normgrowth_jax.train \\
    --gin_file=gin_configs/local/t5_tiny_bbc_adafactor.gin \\
    --gin.MODEL_DIR=runs/t5_tiny --gin.TRAIN_STEPS=2000

What a run writes under ``MODEL_DIR``:

* ``checkpoints/<step>/``  orbax checkpoints (params, opt_state incl. the norm trace and
  the applied learning rate, step) with a manifest holding the data iterator position;
* ``norms.jsonl``         the hook's trajectory, one row per recorded step;
* ``metrics.jsonl``       loss, z_loss, accuracy, learning_rate, tokens_per_s per logged step;
* ``eval.jsonl``          with an ``evaluator``: its dev metrics at step 0 and every
                          ``eval_every`` steps (and the last);
* ``tb/``                 TensorBoard events of both;
* ``config.gin``          the operative gin config.

Step convention (T5X's): the metrics row with ``step = s`` belongs to the update that turned
state s-1 into state s (its loss is the loss of state s-1). A checkpoint at step s holds state
s and is written only after the loss of state s was seen to be finite, so the newest
checkpoint is always "good"; rerunning the same command resumes from it, and truncates the
JSONL/TensorBoard streams to step s so that they have no duplicates and no gaps.

Example (Python):
  >>> from normgrowth_jax import train
  >>> train.parse_gin(["gin_configs/local/t5_tiny_bbc_adafactor.gin"],
  ...                 ["MODEL_DIR='/tmp/t5_tiny'", "TRAIN_STEPS=20"])  # doctest: +SKIP
  >>> summary = train.train()  # doctest: +SKIP
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
  # `python -m normgrowth_jax.train`: run the imported module so that gin registers the
  # configurables under `normgrowth_jax.train` (selectors like `train.train`), not `__main__`.
  from normgrowth_jax.train import console_main as _console_main
  _console_main()
  sys.exit(0)

import argparse
import difflib
import logging
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from normgrowth_jax import checkpoints, optimizers, run_checks, sinks, tracking
from normgrowth_jax.data import numpy_pipeline  # noqa: F401  (registers @numpy_data.batches)
from normgrowth_jax.models import t5

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# T5X's names for the model pieces.
gin.external_configurable(t5.T5Config, module="network")
gin.external_configurable(t5.Transformer, module="network")


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN/inf; ``step`` names the update at which it happened."""

  def __init__(self, step: int, message: str):
    super().__init__(message)
    self.step = step


ConfigError = run_checks.ConfigError


class GinConfigError(ConfigError):
  """A gin file or binding is invalid (unknown name, missing required macro...)."""


# ------------------------------------------------------------------------------ model adapters


@gin.configurable
def encoder_decoder_loss(model: t5.Transformer, z_loss: float = 1e-4,
                         loss_normalizing_factor: Optional[float] = None,
                         enable_dropout: bool = True):
  """T5's loss on T5X batches: cross-entropy + z-loss summed over target tokens.

  Returns:
    ``(init_fn(rng, batch) -> params, loss_fn(params, batch, rng) -> (loss, metrics))``.
  """
  loss_fn = t5.make_loss_fn(model, z_loss=z_loss, loss_normalizing_factor=loss_normalizing_factor,
                            enable_dropout=enable_dropout)

  def init_fn(rng, batch):
    return model.init(rng, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                      batch["decoder_target_tokens"])["params"]

  return init_fn, loss_fn


def dummy_batch(feature_lengths: Mapping[str, int], batch_size: int) -> dict:
  """All-ones int32 batch with T5X feature names, for shape-only initialisation."""
  ones = lambda n: np.ones((batch_size, n), np.int32)  # noqa: E731
  if "inputs" in feature_lengths:
    return {"encoder_input_tokens": ones(feature_lengths["inputs"]),
            "decoder_input_tokens": ones(feature_lengths["targets"]),
            "decoder_target_tokens": ones(feature_lengths["targets"]),
            "decoder_loss_weights": ones(feature_lengths["targets"])}
  return {"decoder_target_tokens": ones(feature_lengths["targets"])}


def _batch_tokens(batch: Mapping[str, np.ndarray]) -> int:
  """Token slots per batch, T5X's tokens/s convention: batch x (inputs + targets)."""
  keys = ("encoder_input_tokens", "decoder_target_tokens")
  return int(sum(np.prod(batch[k].shape) for k in keys if k in batch))


# ------------------------------------------------------------------------------ steps


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation):
  """A pure ``train_step(state, batch, rng) -> (new_state, metrics)`` (to be jitted).

  ``state`` is ``{"params", "opt_state", "step"}``; the dropout rng is
  ``fold_in(rng, step)`` so a resumed run draws the same masks. ``metrics`` hold the
  per-token ``loss`` and ``z_loss``, ``accuracy``, the ``learning_rate`` this update applied,
  and ``finite`` (loss and update both finite).
  """

  def train_step(state, batch, rng):
    step_rng = jax.random.fold_in(rng, state["step"])
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(updates)]))
    denom = jnp.maximum(aux["weight_sum"], 1.0)
    metrics = {"loss": aux["loss"] / denom, "z_loss": aux["z_loss"] / denom,
               "accuracy": aux["accuracy"],
               "learning_rate": optimizers.applied_learning_rate(opt_state),
               "finite": finite}
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new_state, metrics

  return train_step


def make_multi_step(train_step: Callable):
  """``multi_step(state, batches, rng) -> (state, metrics)``: ``train_step`` over the leading
  axis of ``batches`` (k stacked batches) in one ``lax.scan``; metrics come back stacked [k].

  One compiled call runs k updates: the host round trip (dispatch, metrics read-back) is paid
  once per k steps. Every update is the same computation as ``train_step`` (the hook still
  records each step).
  """

  def multi_step(state, batches, rng):
    return jax.lax.scan(lambda s, b: train_step(s, b, rng), state, batches)

  return multi_step


def make_eval_step(loss_fn: Callable):
  """A pure ``eval_step(params, batch) -> metrics`` (fixed rng, no update; build ``loss_fn``
  without dropout). ``metrics`` hold the per-token ``loss`` and ``accuracy`` and the
  ``weight_sum`` (target tokens) that :func:`validation_loss` weights batches by."""

  def eval_step(params, batch):
    _, aux = loss_fn(params, batch, jax.random.PRNGKey(0))
    denom = jnp.maximum(aux["weight_sum"], 1.0)
    return {"loss": aux["loss"] / denom, "accuracy": aux["accuracy"],
            "weight_sum": aux["weight_sum"]}

  return eval_step


# ------------------------------------------------------------------------------ data


@gin.configurable
def batch_iterator(task_name: str, split: str, feature_lengths: Mapping[str, int],
                   batch_size: int, seed: int, start_batch: int = 0):
  """The seqio-backed, resumable iterator of ``normgrowth_jax.data.pipeline``.

  Imported lazily (it pulls TensorFlow). Raises a clear error for a missing/empty corpus.
  """
  from normgrowth_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_batch_iterator(task_name, split, dict(feature_lengths), batch_size,
                                      seed, start_batch=start_batch)


def _check_batch(batch: Mapping[str, np.ndarray], step: int, task: str):
  weights = batch.get("decoder_loss_weights", batch.get("decoder_target_tokens"))
  if weights is None or not np.any(np.asarray(weights) > 0):
    raise ConfigError(f"Batch {step} of task {task!r} has no target tokens: the corpus is empty "
                     "or the feature lengths are too short. Prepare the data (see README, "
                     "`python -m normgrowth_jax.data ...`) or pick another MIXTURE_OR_TASK_NAME.")


@gin.configurable(denylist=["model"])
def validation_loss(model: Any, task_name: str = gin.REQUIRED,
                    feature_lengths: Mapping[str, int] = gin.REQUIRED,
                    batch_size: int = gin.REQUIRED, split: str = "validation",
                    num_batches: int = 8, adapter: Callable = encoder_decoder_loss,
                    data_fn: Callable = batch_iterator):
  """An ``evaluator`` for :func:`train`: loss and accuracy on fixed held-out batches.

  Off by default (``train.evaluator = None``). Turn it on with
  ``train.evaluator = @train.validation_loss`` and ``train.eval_every = N``; the rows go to
  ``eval.jsonl`` and ``tb/eval`` at step 0, every N steps and at the last step.

  Args:
    model: the trained model (``train`` passes it).
    task_name, feature_lengths, batch_size: as training (``runs/pretrain.gin`` binds them).
    split: the held-out split.
    num_batches: the first ``num_batches`` batches of ``split`` (data seed 0), read once and
      evaluated at every evaluation: the same tokens each time.
    adapter: as ``train.adapter``; called with ``enable_dropout=False``.
    data_fn: as ``train.data_fn``.

  Returns:
    ``eval_fn(params) -> {"loss", "accuracy", "tokens"}``: the per-token loss (with the
    z-loss, as the training metric) and accuracy over all the batches' target tokens.
  """
  _, loss_fn = adapter(model, enable_dropout=False)
  eval_step = jax.jit(make_eval_step(loss_fn))
  data = data_fn(task_name, split, feature_lengths, batch_size, 0, start_batch=0)
  batches = [b for _, b in zip(range(num_batches), data)]
  if not batches:
    raise ValueError(f"validation_loss: split {split!r} of task {task_name!r} has no batch of "
                     f"{batch_size}; lower BATCH_SIZE or use another split.")

  def eval_fn(params) -> dict:
    loss = correct = tokens = 0.0
    for batch in batches:
      m = jax.device_get(eval_step(params, batch))
      w = float(m["weight_sum"])
      loss, correct, tokens = loss + float(m["loss"]) * w, correct + float(m["accuracy"]) * w, \
          tokens + w
    return {"loss": loss / max(tokens, 1.0), "accuracy": correct / max(tokens, 1.0),
            "tokens": tokens}

  return eval_fn


# ------------------------------------------------------------------------------ the loop


class _CallbackBar:
  """The slice of tqdm's interface ``train`` uses, reporting steps to a callback."""

  def __init__(self, callback: Callable[[int], None]):
    self.callback = callback

  def update(self, n: int = 1):
    self.callback(n)

  def set_postfix(self, **_):
    pass

  def close(self):
    pass


def _mesh() -> Mesh:
  return Mesh(np.array(jax.local_devices()), ("data",))


@gin.configurable(denylist=["progress"])
def train(model_dir: str = gin.REQUIRED,
          model: Any = gin.REQUIRED,
          task_name: str = gin.REQUIRED,
          train_steps: int = gin.REQUIRED,
          batch_size: int = gin.REQUIRED,
          feature_lengths: Mapping[str, int] = gin.REQUIRED,
          split: str = "train",
          seed: int = 0,
          adapter: Callable = encoder_decoder_loss,
          data_fn: Callable = batch_iterator,
          save_every: int = 1000,
          keep_checkpoints: int = 2,
          log_every: int = 10,
          track_every: int = 1,
          evaluator: Optional[Callable] = None,
          eval_every: int = 0,
          steps_per_call: int = 1,
          tensorboard: bool = True,
          progress: bool | Callable[[int], None] = True,
          allow_config_change: bool = False) -> dict:
  """Trains ``model`` on ``task_name`` for ``train_steps`` updates, resuming if possible.

  Args:
    model_dir: output directory (MODEL_DIR); rerunning with the same one resumes.
    model: a Flax module (``%MODEL``).
    task_name: seqio task or mixture (``%MIXTURE_OR_TASK_NAME``).
    train_steps: total number of updates (``%TRAIN_STEPS``).
    batch_size: global batch size (``%BATCH_SIZE``), split over the local devices.
    feature_lengths: ``{"inputs": .., "targets": ..}`` (``%TASK_FEATURE_LENGTHS``).
    split: dataset split to train on.
    seed: seeds the parameters, dropout and data order.
    adapter: ``adapter(model) -> (init_fn, loss_fn)``.
    data_fn: ``data_fn(task, split, lengths, batch_size, seed, start_batch)`` -> iterator;
      :func:`batch_iterator` (seqio, TensorFlow) or ``numpy_pipeline.batches`` (NumPy).
    save_every: checkpoint period in steps (a final checkpoint is always written).
    keep_checkpoints: how many checkpoints to keep.
    log_every: metrics period in steps.
    track_every: the norm hook's recording period.
    evaluator: optional ``evaluator(model) -> eval_fn(params) -> {name: float}`` (e.g.
      ``causal_lm.dev_evaluator``); its rows go to ``eval.jsonl`` and ``tb/eval``, at step 0
      (the initialisation), every ``eval_every`` steps and at the last step. A row is written
      before the checkpoint of its step, so a resumed run has each evaluated step exactly once.
    eval_every: evaluation period in steps (0: only step 0 and the last step).
    steps_per_call: updates per compiled call (:func:`make_multi_step`): k batches are stacked
      and the metrics read back once per k steps. Every update, hook row, metric and
      checkpoint is the same as with 1; a call never straddles a checkpoint or evaluation
      step (the steps before one run one per call).
    tensorboard: also write the norm rows and metrics as TensorBoard events (``tb/``); False
      keeps only the JSONL files (the TensorBoard writer costs ~3 ms of CPU per norm row, more
      than a step of a tiny model).
    allow_config_change: resume even though a trajectory binding differs from the run's
      saved ``config.gin`` (recorded in ``resume_log.jsonl``; see :mod:`run_checks`).
    progress: True shows a tqdm progress bar; a callable ``progress(steps)`` is told instead
      how many steps were done since its last call (e.g. the figures pipeline's one bar);
      False shows nothing.

  Returns:
    ``{"step", "loss", "accuracy", "learning_rate", "tokens_per_s", "param_norm",
    "resumed_from"}`` of the last step.
  """
  model_dir = os.path.abspath(os.path.expanduser(model_dir))
  run_checks.validate_train_args(
      train_steps=train_steps, batch_size=batch_size, feature_lengths=feature_lengths,
      save_every=save_every, keep_checkpoints=keep_checkpoints, log_every=log_every,
      track_every=track_every, eval_every=eval_every, task_name=task_name, split=split, seed=seed)
  if data_fn is batch_iterator:
    run_checks.check_task(task_name)
  run_checks.check_run_dir(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  mesh = _mesh()
  n_dev = mesh.devices.size
  if batch_size % n_dev:
    raise ValueError(f"BATCH_SIZE={batch_size} is not divisible by the {n_dev} local devices; "
                     f"use a multiple of {n_dev}.")
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))

  tb = lambda sub, prefix: ([sinks.TensorBoardSink(os.path.join(model_dir, "tb", sub),  # noqa: E731
                                                   prefix=prefix)] if tensorboard else [])
  norm_sink = sinks.MultiSink(sinks.JsonlSink(os.path.join(model_dir, "norms.jsonl")),
                              *tb("norms", "norms"))
  metric_sink = sinks.MultiSink(sinks.JsonlSink(os.path.join(model_dir, "metrics.jsonl")),
                                *tb("train", "train"))
  tx = optimizers.make_optimizer(sink=norm_sink, track_every=track_every)
  init_fn, loss_fn = adapter(model)
  if run_checks.has_checkpoints(model_dir):  # cheap refusal before anything is built
    run_checks.check_resume_config(model_dir, gin.operative_config_str(), allow_config_change,
                                   early=True)
  rng = jax.random.PRNGKey(seed)
  init_rng, step_rng = jax.random.split(rng)

  params = jax.jit(init_fn)(init_rng, dummy_batch(feature_lengths, batch_size))
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  state = jax.device_put(state, replicated)

  ckpt = checkpoints.Checkpointer(os.path.join(model_dir, "checkpoints"), save_every=save_every,
                                  keep=keep_checkpoints)
  start = 0
  resumed_from = None
  if ckpt.all_steps():
    latest = ckpt.latest_step()
    if latest is not None and ckpt.verify(latest) is None:  # before anything on disk moves
      tracking.check_resumable(ckpt.stored_tree(latest)["opt_state"], state["opt_state"])
    try:
      state, manifest, damaged = ckpt.restore_intact(state)
    except checkpoints.CheckpointMismatchError:
      raise
    except Exception:  # a state of another structure (e.g. another optimizer): name the cause
      if not allow_config_change:
        run_checks.check_resume_config(model_dir, gin.operative_config_str())
      raise
    if damaged:
      import warnings  # pylint: disable=g-import-not-at-top
      warnings.warn(run_checks.report_damage(
          model_dir, damaged, None if manifest is None else int(manifest["step"])),
                    RuntimeWarning, stacklevel=2)
  if ckpt.latest_step() is not None:
    if int(manifest["step"]) > train_steps:
      raise ConfigError(f"MODEL_DIR={model_dir} holds a run at step {manifest['step']}, past "
                        f"TRAIN_STEPS={train_steps}; raise TRAIN_STEPS or use a new MODEL_DIR.")
    if manifest["seed"] != seed:
      raise checkpoints.CheckpointMismatchError(
          f"{model_dir} holds a run with seed {manifest['seed']}, not {seed}; "
          "use another MODEL_DIR or the same seed.")
    # Before anything in MODEL_DIR changes (the streams are truncated just below).
    run_checks.check_resume_config(model_dir, gin.operative_config_str(), allow_config_change)
    start = resumed_from = int(manifest["step"])
  norm_sink.resume(start, state["opt_state"])
  metric_sink.truncate_after(start)
  eval_fn = eval_sink = None
  if evaluator is not None:
    eval_fn = evaluator(model)
    eval_sink = sinks.MultiSink(sinks.JsonlSink(os.path.join(model_dir, "eval.jsonl")),
                                sinks.TensorBoardSink(os.path.join(model_dir, "tb", "eval"),
                                                      prefix="eval"))
    # A fresh start (re)writes the step-0 evaluation too: truncate before it, or the
    # TensorBoard sink takes step 0 as already written and drops it.
    eval_sink.truncate_after(start if start > 0 else -1)

  def evaluate(at_step: int, params):
    row = {"step": np.array([at_step])}
    row.update({k: np.array([v], np.float32) for k, v in eval_fn(params).items()})
    eval_sink.write_rows(row)
    eval_sink.flush()
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(gin.operative_config_str())

  data = data_fn(task_name, split, feature_lengths, batch_size, seed, start_batch=start)
  step_fn = make_train_step(loss_fn, tx)
  train_step = jax.jit(step_fn, out_shardings=(replicated, replicated))
  if steps_per_call < 1:
    raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}.")
  multi_step = stacked_sharding = None
  if steps_per_call > 1:
    multi_step = jax.jit(make_multi_step(step_fn), out_shardings=(replicated, replicated))
    stacked_sharding = NamedSharding(mesh, P(None, "data"))
  periods = [p for p in (save_every, eval_every if eval_fn is not None else 0) if p > 0]

  def call_length(at: int) -> int:
    """k if the k steps from ``at`` pass no checkpoint or evaluation step before their end
    (and the run is that long), else 1: two compiled functions, never one per length."""
    n = min(steps_per_call, train_steps - at)
    for p in periods:
      n = min(n, p - at % p)
    return n if n == steps_per_call else 1

  bar = None
  if callable(progress):
    bar = _CallbackBar(progress)
  elif progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=train_steps, initial=start, unit="step", dynamic_ncols=True)
  last = {"step": start, "resumed_from": resumed_from}
  t_log, tokens_since = time.perf_counter(), 0
  step = start
  try:
    if eval_fn is not None and start == 0:
      evaluate(0, state["params"])
    while step < train_steps:
      n = call_length(step)
      batches = []
      for _ in range(n):
        try:
          batches.append(next(data))
        except StopIteration:
          raise ConfigError(f"Task {task_name!r} split {split!r} ran out of data at batch "
                            f"{step + len(batches)}; its iterator must repeat (or lower "
                            "TRAIN_STEPS).") from None
      if step == start:
        _check_batch(batches[0], step, task_name)
      t_call = time.perf_counter()
      if n == 1:
        batch = jax.device_put({k: np.asarray(v) for k, v in batches[0].items()},
                               batch_sharding)
        new_state, metrics = train_step(state, batch, step_rng)
        per_step = [jax.device_get(metrics)]
      else:  # k stacked batches, one call, one read-back
        stacked = jax.device_put({k: np.stack([np.asarray(b[k]) for b in batches])
                                  for k in batches[0]}, stacked_sharding)
        new_state, metrics = multi_step(state, stacked, step_rng)
        metrics = jax.device_get(metrics)
        per_step = [{k: v[i] for k, v in metrics.items()} for i in range(n)]
      t_done = time.perf_counter()
      for i, metrics in enumerate(per_step):
        if not metrics["finite"]:
          raise NonFiniteLossError(
              step + i + 1, f"Non-finite loss ({metrics['loss']}) or update at step "
              f"{step + i + 1} (the update from state {step + i}); stopped. The last good "
              f"checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. Lower the "
              "learning rate or check the data.")
      # State `step` had a finite loss: it may be checkpointed now.
      if step > start:
        ckpt.save(step, state, data_position=step, seed=seed)
      state = new_state
      for i, (batch, metrics) in enumerate(zip(batches, per_step)):
        step += 1
        tokens_since += _batch_tokens(batch)
        if not (step % log_every == 0 or step == train_steps):
          continue
        now = t_call + (t_done - t_call) * (i + 1) / n  # the steps of one call share its time
        tok_s = tokens_since / max(now - t_log, 1e-9)
        t_log, tokens_since = now, 0
        row = {"step": np.array([step]), "tokens_per_s": np.array([tok_s], np.float32)}
        row.update({k: np.array([v], np.float32) for k, v in metrics.items() if k != "finite"})
        metric_sink.write_rows(row)
        metric_sink.flush()
        last.update(step=step, loss=float(metrics["loss"]), accuracy=float(metrics["accuracy"]),
                    learning_rate=float(metrics["learning_rate"]), tokens_per_s=tok_s)
        if bar is not None:
          bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['learning_rate']:.2e}",
                          tok_s=f"{tok_s:,.0f}")
      if eval_fn is not None and (step == train_steps or (eval_every and step % eval_every == 0)):
        evaluate(step, state["params"])
      if bar is not None:
        bar.update(n)
    ckpt.save(step, state, data_position=step, seed=seed, force=True)
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
    norm_sink.close(state["opt_state"])
    metric_sink.close()
    if eval_sink is not None:
      eval_sink.close()
  trace = tracking.read_trace(state["opt_state"])
  if len(trace["step"]):
    last["param_norm"] = float(trace["param_norm"][-1])
  return last


# ------------------------------------------------------------------------------ gin + CLI


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
    names = sorted(registry.minimal_selector(sel) for sel, _ in registry.items()
                   if not sel.startswith("gin."))
    close = difflib.get_close_matches(m.group(1), names, n=5, cutoff=0.5)
    lines.append(f"Unknown configurable '{m.group(1)}'." +
                 (f" Did you mean: {', '.join(close)}?" if close else ""))
    lines.append("Valid configurables: " + ", ".join(names))
  m = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", msg)
  if m:
    import inspect  # pylint: disable=g-import-not-at-top
    fn = registry.get_match(m.group(1)).wrapped
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = [p for p in inspect.signature(target).parameters if p not in ("self",)]
    close = difflib.get_close_matches(m.group(2), params, n=3)
    lines.append(f"Unknown parameter '{m.group(2)}' of '{m.group(1)}'." +
                 (f" Did you mean: {', '.join(close)}?" if close else "") +
                 f" Valid parameters: {', '.join(params)}.")
  m = re.search(r"in scope '([A-Z_][A-Z0-9_]*)'", msg)
  if m and "configurable 'macro'" in msg:
    lines.append(f"Macro {m.group(1)} is used but never set: add --gin.{m.group(1)}=VALUE "
                 "or set it in your gin file.")
  if "macro" in msg.lower() or "Required bindings" in msg:
    lines.append("gin_configs/local/runs/pretrain.gin lists the required macros (MODEL_DIR, "
                 "MIXTURE_OR_TASK_NAME, TRAIN_STEPS, BATCH_SIZE, TASK_FEATURE_LENGTHS); set "
                 "them in your gin file or with --gin.NAME=VALUE.")
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
    found = os.path.exists(f) or any(os.path.exists(os.path.join(p, f))
                                     for p in _gin_search_paths())
    if not found:
      raise GinConfigError(f"--gin_file={f} not found (searched {', '.join(_gin_search_paths())}).")
  logging.getLogger().addFilter(_drop_gin_probe_errors)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), [_quote_bare(b) for b in bindings],
                                        finalize_config=False)
  except GinConfigError:
    raise
  except Exception as e:  # gin raises ValueError/KeyError/TypeError/ParseError...
    raise GinConfigError(_explain_gin_error(e)) from e
  finally:
    logging.getLogger().removeFilter(_drop_gin_probe_errors)


# What gin's own call-time errors say: an unset macro or REQUIRED parameter.
_GIN_CALL_ERRORS = ("No values supplied by Gin", "Required bindings for", "configurable 'macro'")


def run_from_gin() -> dict:
  """Calls :func:`train` with the parsed config, translating gin's late errors.

  Only gin's own messages (an unset macro or required binding) become a
  :class:`GinConfigError`; the trainer's errors pass through, whatever their text holds
  (e.g. a MODEL_DIR path containing "gin").
  """
  try:
    return train(progress=sys.stderr.isatty() or bool(os.environ.get("NORMGROWTH_PROGRESS")))
  except (ValueError, TypeError, RuntimeError) as e:
    if any(s in str(e) for s in _GIN_CALL_ERRORS) and \
        not isinstance(e, (checkpoints.CheckpointMismatchError, NonFiniteLossError)):
      raise GinConfigError(_explain_gin_error(e)) from e
    raise


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Parses ``--gin_file``/``--gin.KEY=VALUE`` (T5X flags) and trains."""
  parser = argparse.ArgumentParser(
      prog="normgrowth-train", description=__doc__.split("\n\n")[0],
      epilog="Any --gin.KEY=VALUE adds a gin binding, e.g. --gin.TRAIN_STEPS=100.")
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file (repeatable), e.g. gin_configs/local/t5_tiny_bbc_adafactor.gin")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding 'KEY = VALUE' (repeatable)")
  parser.add_argument("--allow_config_change", action="store_true",
                      help="resume MODEL_DIR although a trajectory binding (model, task, lengths, "
                      "batch size, optimizer, schedule, seed, filter) differs from its config.gin; "
                      "the change is recorded in MODEL_DIR/resume_log.jsonl")
  parser.add_argument("--debug", action="store_true",
                      help="show the full traceback of a configuration error")
  args, rest = parser.parse_known_args(argv)
  bindings = list(args.gin_bindings)
  if args.allow_config_change:
    bindings.append("train.allow_config_change=True")
  for a in rest:
    if a.startswith("--gin."):
      bindings.append(a[len("--gin."):])
    else:
      parser.error(f"unrecognised argument {a!r} (use --gin_file=... or --gin.KEY=VALUE)")
  if not args.gin_file:
    parser.error("at least one --gin_file is required, e.g. "
                 "--gin_file=gin_configs/local/t5_tiny_bbc_adafactor.gin")
  parse_gin(args.gin_file, bindings)
  summary = run_from_gin()
  print(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in summary.items()), flush=True)
  return summary


def _user_message(err: BaseException) -> str:
  """The error's own message, without the "In call to configurable ..." lines gin appends
  (what :func:`_explain_gin_error` added after them, e.g. which macro to set, is kept)."""
  return "\n".join(line for line in str(err).split("\n")
                   if not line.lstrip().startswith("In call to configurable")).strip()


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
  except (*config_errors, NonFiniteLossError, checkpoints.CheckpointMismatchError,
          FileNotFoundError) as e:
    if "--debug" in argv:
      raise
    print(f"normgrowth-train: error: {_user_message(e)}", file=sys.stderr)
    sys.exit(2 if isinstance(e, config_errors) else 1)

