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

The command line and gin parsing live in :mod:`normgrowth_jax.gin_utils`.

Example (Python):
  >>> from normgrowth_jax import gin_utils, train
  >>> gin_utils.parse_gin(["gin_configs/local/t5_tiny_bbc_adafactor.gin"],
  ...                     ["MODEL_DIR='/tmp/t5_tiny'", "TRAIN_STEPS=20"])  # doctest: +SKIP
  >>> summary = train.train()  # doctest: +SKIP
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
  # `python -m normgrowth_jax.train`: run the imported module so that gin registers the
  # configurables under `normgrowth_jax.train` (selectors like `train.train`), not `__main__`.
  from normgrowth_jax.gin_utils import console_main as _console_main

  _console_main()
  sys.exit(0)

import os
import time
from typing import Any, Callable, Mapping, Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from normgrowth_jax import checkpoints, optimizers, run_checks, sinks, tracking
from normgrowth_jax.data import numpy_pipeline  # noqa: F401  (registers @numpy_data.batches)
from normgrowth_jax.models import t5

# T5X's names for the model pieces.
gin.external_configurable(t5.T5Config, module="network")
gin.external_configurable(t5.Transformer, module="network")


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN/inf; ``step`` names the update at which it happened."""

  def __init__(self, step: int, message: str):
    super().__init__(message)
    self.step = step


ConfigError = run_checks.ConfigError


# ------------------------------------------------------------------------------ model adapters


@gin.configurable
def encoder_decoder_loss(
    model: t5.Transformer,
    z_loss: float = 1e-4,
    loss_normalizing_factor: Optional[float] = None,
    enable_dropout: bool = True,
):
  """T5's loss on T5X batches: cross-entropy + z-loss summed over target tokens.

  Returns:
    ``(init_fn(rng, batch) -> params, loss_fn(params, batch, rng) -> (loss, metrics))``.
  """
  loss_fn = t5.make_loss_fn(
      model,
      z_loss=z_loss,
      loss_normalizing_factor=loss_normalizing_factor,
      enable_dropout=enable_dropout,
  )

  def init_fn(rng, batch):
    return model.init(
        rng,
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        batch["decoder_target_tokens"],
    )["params"]

  return init_fn, loss_fn


def run_rngs(seed) -> tuple[jax.Array, jax.Array]:
  """(init_rng, step_rng) of the run of ``seed``: the parameters' and the steps' keys."""
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed))
  return init_rng, step_rng


def initial_params(init_fn: Callable, seed, feature_lengths: Mapping[str, int], batch_size: int):
  """The parameters :func:`train` starts the run of ``seed`` from: ``init_fn`` at the run's
  init key on a dummy batch of its shapes (traceable in ``seed``, so one compile serves every
  seed). Figures use it to get a run's initialisation without training it."""
  return jax.jit(init_fn)(run_rngs(seed)[0], dummy_batch(feature_lengths, batch_size))


def dummy_batch(feature_lengths: Mapping[str, int], batch_size: int) -> dict:
  """All-ones int32 batch with T5X feature names, for shape-only initialisation."""
  ones = lambda n: np.ones((batch_size, n), np.int32)  # noqa: E731
  if "inputs" in feature_lengths:
    return {
        "encoder_input_tokens": ones(feature_lengths["inputs"]),
        "decoder_input_tokens": ones(feature_lengths["targets"]),
        "decoder_target_tokens": ones(feature_lengths["targets"]),
        "decoder_loss_weights": ones(feature_lengths["targets"]),
    }
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
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & jnp.all(
        jnp.array([jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(updates)])
    )
    denom = jnp.maximum(aux["weight_sum"], 1.0)
    metrics = {
        "loss": aux["loss"] / denom,
        "z_loss": aux["z_loss"] / denom,
        "accuracy": aux["accuracy"],
        "learning_rate": optimizers.applied_learning_rate(opt_state),
        "finite": finite,
    }
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
    return {
        "loss": aux["loss"] / denom,
        "accuracy": aux["accuracy"],
        "weight_sum": aux["weight_sum"],
    }

  return eval_step


@gin.configurable(denylist=["model"])
def param_norm_evaluator(model: Any, param_filter: str = "paper", groups: str = "layers"):
  """An ``evaluator`` for :func:`train`: ||theta|| (float64) under ``param_filter``, globally
  and per group, so ``eval.jsonl`` holds the step-0 (and last-step) norms.

  Turn it on with ``train.evaluator = @train.param_norm_evaluator``; the figures' T5 runs do.

  Returns:
    ``eval_fn(params) -> {"param_norm", "param_norm/<group>", ...}``.
  """
  del model
  from normgrowth_jax.analysis import checkpoints as run_checkpoints  # pylint: disable=g-import-not-at-top

  return lambda params: run_checkpoints.filtered_param_norms(params, param_filter, groups)


# ------------------------------------------------------------------------------ data


@gin.configurable
def batch_iterator(
    task_name: str,
    split: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    seed: int,
    start_batch: int = 0,
):
  """The seqio-backed, resumable iterator of ``normgrowth_jax.data.pipeline``.

  Imported lazily (it pulls TensorFlow). Raises a clear error for a missing/empty corpus.
  """
  from normgrowth_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  return pipeline.make_batch_iterator(
      task_name, split, dict(feature_lengths), batch_size, seed, start_batch=start_batch
  )


def _check_batch(batch: Mapping[str, np.ndarray], step: int, task: str):
  weights = batch.get("decoder_loss_weights", batch.get("decoder_target_tokens"))
  if weights is None or not np.any(np.asarray(weights) > 0):
    raise ConfigError(
        f"Batch {step} of task {task!r} has no target tokens: the corpus is empty "
        "or the feature lengths are too short. Prepare the data (see README, "
        "`python -m normgrowth_jax.data ...`) or pick another MIXTURE_OR_TASK_NAME."
    )


@gin.configurable(denylist=["model"])
def validation_loss(
    model: Any,
    task_name: str = gin.REQUIRED,
    feature_lengths: Mapping[str, int] = gin.REQUIRED,
    batch_size: int = gin.REQUIRED,
    split: str = "validation",
    num_batches: int = 8,
    adapter: Callable = encoder_decoder_loss,
    data_fn: Callable = batch_iterator,
):
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
    raise ValueError(
        f"validation_loss: split {split!r} of task {task_name!r} has no batch of "
        f"{batch_size}; lower BATCH_SIZE or use another split."
    )

  def eval_fn(params) -> dict:
    loss = correct = tokens = 0.0
    for batch in batches:
      m = jax.device_get(eval_step(params, batch))
      w = float(m["weight_sum"])
      loss, correct, tokens = (
          loss + float(m["loss"]) * w,
          correct + float(m["accuracy"]) * w,
          tokens + w,
      )
    return {
        "loss": loss / max(tokens, 1.0),
        "accuracy": correct / max(tokens, 1.0),
        "tokens": tokens,
    }

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


def _open_streams(model_dir: str, tensorboard: bool):
  """The norm and metric streams: JSONL, plus TensorBoard events when ``tensorboard``."""
  tb = lambda sub: (
      [sinks.TensorBoardSink(os.path.join(model_dir, "tb", sub), prefix=sub)]  # noqa: E731
      if tensorboard
      else []
  )
  return (
      sinks.MultiSink(sinks.JsonlSink(os.path.join(model_dir, "norms.jsonl")), *tb("norms")),
      sinks.MultiSink(sinks.JsonlSink(os.path.join(model_dir, "metrics.jsonl")), *tb("train")),
  )


def _restore(
    ckpt: checkpoints.Checkpointer,
    state: dict,
    model_dir: str,
    *,
    train_steps: int,
    seed: int,
    allow_config_change: bool,
) -> tuple[dict, Optional[int]]:
  """``(state, step resumed from)``: the newest intact checkpoint's state, checked against
  this run (optimizer state, seed, length, config), or ``(state, None)`` for a fresh run."""
  if not ckpt.all_steps():
    return state, None
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

    warnings.warn(
        run_checks.report_damage(
            model_dir, damaged, None if manifest is None else int(manifest["step"])
        ),
        RuntimeWarning,
        stacklevel=3,
    )
  if ckpt.latest_step() is None:
    return state, None
  if int(manifest["step"]) > train_steps:
    raise ConfigError(
        f"MODEL_DIR={model_dir} holds a run at step {manifest['step']}, past "
        f"TRAIN_STEPS={train_steps}; raise TRAIN_STEPS or use a new MODEL_DIR."
    )
  if manifest["seed"] != seed:
    raise checkpoints.CheckpointMismatchError(
        f"{model_dir} holds a run with seed {manifest['seed']}, not {seed}; "
        "use another MODEL_DIR or the same seed."
    )
  # Before anything in MODEL_DIR changes (the streams are truncated after this).
  run_checks.check_resume_config(model_dir, gin.operative_config_str(), allow_config_change)
  return state, int(manifest["step"])


class _Evaluation:
  """``evaluation(step, params)`` writes ``eval_fn(params)`` as the row of ``step`` to
  ``eval.jsonl`` and ``tb/eval``."""

  def __init__(self, eval_fn: Callable, model_dir: str, start: int):
    self.eval_fn = eval_fn
    self.sink = sinks.MultiSink(
        sinks.JsonlSink(os.path.join(model_dir, "eval.jsonl")),
        sinks.TensorBoardSink(os.path.join(model_dir, "tb", "eval"), prefix="eval"),
    )
    # A fresh start (re)writes the step-0 evaluation too: truncate before it, or the
    # TensorBoard sink takes step 0 as already written and drops it.
    self.sink.truncate_after(start if start > 0 else -1)

  def __call__(self, step: int, params):
    row = {"step": np.array([step])}
    row.update({k: np.array([v], np.float32) for k, v in self.eval_fn(params).items()})
    self.sink.write_rows(row)
    self.sink.flush()

  def close(self):
    self.sink.close()


def _compiled_call(
    loss_fn: Callable, tx: optax.GradientTransformation, mesh: Mesh, steps_per_call: int
) -> Callable:
  """``call(state, batches, rng) -> (new_state, [metrics of each step])``: one compiled call
  for one batch, another for ``steps_per_call`` stacked batches (one read-back)."""
  replicated = NamedSharding(mesh, P())
  step_fn = make_train_step(loss_fn, tx)
  single = jax.jit(step_fn, out_shardings=(replicated, replicated))
  multi = (
      jax.jit(make_multi_step(step_fn), out_shardings=(replicated, replicated))
      if steps_per_call > 1
      else None
  )

  def call(state, batches, rng):
    if len(batches) == 1:
      batch = jax.device_put(
          {k: np.asarray(v) for k, v in batches[0].items()}, NamedSharding(mesh, P("data"))
      )
      new_state, metrics = single(state, batch, rng)
      return new_state, [jax.device_get(metrics)]
    stacked = jax.device_put(
        {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0]},
        NamedSharding(mesh, P(None, "data")),
    )
    new_state, metrics = multi(state, stacked, rng)
    metrics = jax.device_get(metrics)
    return new_state, [{k: v[i] for k, v in metrics.items()} for i in range(len(batches))]

  return call


def _call_length(at: int, steps_per_call: int, train_steps: int, periods: list[int]) -> int:
  """k if the k steps from ``at`` pass no checkpoint or evaluation step before their end (and
  the run is that long), else 1: two compiled functions, never one per length.

  Example:
    >>> _call_length(0, 4, 100, [10]), _call_length(8, 4, 100, [10])
    (4, 1)
  """
  n = min(steps_per_call, train_steps - at)
  for p in periods:
    n = min(n, p - at % p)
  return n if n == steps_per_call else 1


def _next_batches(data, n: int, step: int, task_name: str, split: str) -> list:
  batches = []
  for _ in range(n):
    try:
      batches.append(next(data))
    except StopIteration:
      raise ConfigError(
          f"Task {task_name!r} split {split!r} ran out of data at batch "
          f"{step + len(batches)}; its iterator must repeat (or lower "
          "TRAIN_STEPS)."
      ) from None
  return batches


def _check_finite(per_step: list, step: int, ckpt: checkpoints.Checkpointer) -> None:
  """Raises :class:`NonFiniteLossError` at the first of the steps from ``step`` whose loss or
  update is not finite."""
  for i, metrics in enumerate(per_step):
    if not metrics["finite"]:
      raise NonFiniteLossError(
          step + i + 1,
          f"Non-finite loss ({metrics['loss']}) or update at step "
          f"{step + i + 1} (the update from state {step + i}); stopped. The last good "
          f"checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. Lower the "
          "learning rate or check the data.",
      )


def _progress_bar(progress, train_steps: int, start: int):
  if callable(progress):
    return _CallbackBar(progress)
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm(total=train_steps, initial=start, unit="step", dynamic_ncols=True)
  return None


class _MetricLog:
  """Writes a metrics row every ``log_every`` steps and at the last, with the tokens per
  second since the previous row."""

  def __init__(self, sink, log_every: int, train_steps: int, bar):
    self.sink, self.log_every, self.train_steps, self.bar = sink, log_every, train_steps, bar
    self.t_last, self.tokens = time.perf_counter(), 0

  def add(self, step: int, batch, metrics: dict, now: float) -> dict:
    """Counts ``step``'s tokens; returns the summary fields of a row written now, else {}."""
    self.tokens += _batch_tokens(batch)
    if not (step % self.log_every == 0 or step == self.train_steps):
      return {}
    tok_s = self.tokens / max(now - self.t_last, 1e-9)
    self.t_last, self.tokens = now, 0
    row = {"step": np.array([step]), "tokens_per_s": np.array([tok_s], np.float32)}
    row.update({k: np.array([v], np.float32) for k, v in metrics.items() if k != "finite"})
    self.sink.write_rows(row)
    self.sink.flush()
    if self.bar is not None:
      self.bar.set_postfix(
          loss=f"{metrics['loss']:.3f}", lr=f"{metrics['learning_rate']:.2e}", tok_s=f"{tok_s:,.0f}"
      )
    return {
        "step": step,
        "loss": float(metrics["loss"]),
        "accuracy": float(metrics["accuracy"]),
        "learning_rate": float(metrics["learning_rate"]),
        "tokens_per_s": tok_s,
    }


@gin.configurable(denylist=["progress"])
def train(
    model_dir: str = gin.REQUIRED,
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
    allow_config_change: bool = False,
) -> dict:
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
      train_steps=train_steps,
      batch_size=batch_size,
      feature_lengths=feature_lengths,
      save_every=save_every,
      keep_checkpoints=keep_checkpoints,
      log_every=log_every,
      track_every=track_every,
      eval_every=eval_every,
      task_name=task_name,
      split=split,
      seed=seed,
  )
  if steps_per_call < 1:
    raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}.")
  if data_fn is batch_iterator:
    run_checks.check_task(task_name)
  run_checks.check_run_dir(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  mesh = _mesh()
  if batch_size % mesh.devices.size:
    raise ValueError(
        f"BATCH_SIZE={batch_size} is not divisible by the {mesh.devices.size} local "
        f"devices; use a multiple of {mesh.devices.size}."
    )

  norm_sink, metric_sink = _open_streams(model_dir, tensorboard)
  tx = optimizers.make_optimizer(sink=norm_sink, track_every=track_every)
  init_fn, loss_fn = adapter(model)
  if run_checks.has_checkpoints(model_dir):  # cheap refusal before anything is built
    run_checks.check_resume_config(
        model_dir, gin.operative_config_str(), allow_config_change, early=True
    )
  _, step_rng = run_rngs(seed)
  params = initial_params(init_fn, seed, feature_lengths, batch_size)
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  state = jax.device_put(state, NamedSharding(mesh, P()))
  ckpt = checkpoints.Checkpointer(
      os.path.join(model_dir, "checkpoints"), save_every=save_every, keep=keep_checkpoints
  )
  state, resumed_from = _restore(
      ckpt,
      state,
      model_dir,
      train_steps=train_steps,
      seed=seed,
      allow_config_change=allow_config_change,
  )
  start = resumed_from or 0
  norm_sink.resume(start, state["opt_state"])
  metric_sink.truncate_after(start)
  evaluation = None if evaluator is None else _Evaluation(evaluator(model), model_dir, start)
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(gin.operative_config_str())

  data = data_fn(task_name, split, feature_lengths, batch_size, seed, start_batch=start)
  call = _compiled_call(loss_fn, tx, mesh, steps_per_call)
  periods = [p for p in (save_every, eval_every if evaluation else 0) if p > 0]
  bar = _progress_bar(progress, train_steps, start)
  log = _MetricLog(metric_sink, log_every, train_steps, bar)
  last = {"step": start, "resumed_from": resumed_from}
  step = start
  try:
    if evaluation and start == 0:
      evaluation(0, state["params"])
    while step < train_steps:
      n = _call_length(step, steps_per_call, train_steps, periods)
      batches = _next_batches(data, n, step, task_name, split)
      if step == start:
        _check_batch(batches[0], step, task_name)
      t_call = time.perf_counter()
      new_state, per_step = call(state, batches, step_rng)
      t_done = time.perf_counter()
      _check_finite(per_step, step, ckpt)
      # State `step` had a finite loss: it may be checkpointed now.
      if step > start:
        ckpt.save(step, state, data_position=step, seed=seed)
      state = new_state
      for i, (batch, metrics) in enumerate(zip(batches, per_step)):
        step += 1  # the steps of one call share its time
        last.update(log.add(step, batch, metrics, t_call + (t_done - t_call) * (i + 1) / n))
      if evaluation and (step == train_steps or (eval_every and step % eval_every == 0)):
        evaluation(step, state["params"])
      if bar is not None:
        bar.update(n)
    ckpt.save(step, state, data_position=step, seed=seed, force=True)
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
    norm_sink.close(state["opt_state"])
    metric_sink.close()
    if evaluation:
      evaluation.close()
  trace = tracking.read_trace(state["opt_state"])
  if len(trace["step"]):
    last["param_norm"] = float(trace["param_norm"][-1])
  return last
