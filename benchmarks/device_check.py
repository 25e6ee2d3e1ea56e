"""One prepared check of the package on an accelerator: versions, tests, T5-base speed, Fig. 1.

Made for a machine with one GPU whose image has jax/flax/optax/orbax/numpy/scipy/matplotlib
but no TensorFlow (``benchmarks/device_check.sh`` first installs any missing pure-Python
wheel from a local folder). Each section runs on its own: one that fails is reported and the
next one still runs. Everything printed is also written to ``OUT/device_check.json``.

Sections:
  versions  Python, JAX, jaxlib, Flax, optax, orbax, NumPy and the devices.
  tests     the accelerator-capable fast tests (``-m "not slow and not cpu_only"``), with the
            name of every failure.
  t5        a T5 train step (scanned layers, bf16 activations, float32 parameters, T5's
            Adafactor per layer) with and without the norm hook (``--t5_unrolled``: and
            unrolled without it), interleaved: step time, tokens/s, XLA flops and MFU against the chip's peak,
            compile time, memory; the tracked / untracked ratio is the hook's overhead at
            that size.
  fig1      one Fig. 1 run (T5.1.1 emb 64, 2+2 layers, batch 16 x (64+16), W = 100,
            T = 52.4 W, the NumPy span-corruption data) and Figs. 1/5 drawn from it.
  mechanism the same run with Adafactor's update ratio r held at 1 and 0.5
            (``optimizers.adafactor_fixed_ratio``): measured exponent against r^2/2.
  sweep     the Fig. 1 run varied one factor at a time (depth, width, batch, data passes):
            late r_t against the late local exponent across runs.

``--smoke`` shrinks every section to toy sizes (the suite runs it on the CPU).

Usage:
  benchmarks/device_check.sh [--out DIR] [--smoke] [--sections versions,t5,tests+fig1+mechanism+sweep]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

# Fast tests that need neither TensorFlow nor a download and may run on an accelerator (the
# NumPy data path is exercised by the Fig. 1 runs; its tests compare it with seqio's).
GPU_TESTS = [
    "tracking",
    "norms",
    "saturation",
    "asymptotic",
    "t5",
    "t5_scan",
    "hf_t5",
    "small_lm",
    "leaky_mask",
    "grid",
    "optimizers",
    "checkpoint_empty_nodes",
    "bench_t5_scale",
]
SMOKE_TESTS = ["norms"]

# Processes started here share the accelerator (pytest's workers, runs side by side): none may
# take JAX's default 75% of its memory up front.
SHARED_DEVICE_ENV = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")

# Dense bf16 peak FLOP/s by device kind (vendor datasheets, SXM parts); MFU is left out for
# devices not listed.
PEAK_BF16 = {
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5p": 459e12,
}


def peak_flops(device_kind: str):
  for name, peak in PEAK_BF16.items():
    if device_kind.startswith(name):
      return peak
  return None


def section_versions(args) -> dict:
  import flax
  import jax
  import jaxlib
  import optax
  import orbax.checkpoint as ocp

  dev = jax.devices()[0]
  return {
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "orbax": getattr(ocp, "__version__", "?"),
      "numpy": np.__version__,
      "backend": jax.default_backend(),
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "tensorflow": _importable("tensorflow"),
      "seqio": _importable("seqio"),
  }


def _importable(name: str) -> bool:
  import importlib.util

  return importlib.util.find_spec(name) is not None


def section_tests(args) -> dict:
  names = SMOKE_TESTS if args.smoke else GPU_TESTS
  files = [
      f"tests/test_{n}.py"
      for n in names
      if os.path.exists(os.path.join(REPO, f"tests/test_{n}.py"))
  ]
  xml = os.path.join(args.out, "tests.xml")
  cmd = [
      sys.executable,
      "-m",
      "pytest",
      "-v",
      "-m",
      "not slow and not cpu_only",
      "-p",
      "no:cacheprovider",
      f"--junitxml={xml}",
      *files,
  ]
  if not args.smoke:
    cmd[3:3] = ["-n", str(args.test_workers)]
  t0 = time.perf_counter()
  proc = run_command(cmd, args.test_timeout)
  wall = time.perf_counter() - t0
  result = {
      "files": files,
      "returncode": proc.returncode,
      "wall_s": round(wall, 1),
      "summary": (proc.stdout.strip().splitlines() or [""])[-1],
  }
  # pytest writes the JUnit file at the end; a run cut by the time-out leaves its -v lines.
  result.update(junit_counts(xml) if os.path.exists(xml) else verbose_counts(proc.stdout))
  if proc.returncode not in (0, 1):
    result["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
  return result


def verbose_counts(stdout: str) -> dict:
  """The counts of :func:`junit_counts` from ``pytest -v`` lines (``... PASSED`` / ``FAILED``)."""
  outcome = re.compile(
      r"(PASSED|FAILED|ERROR|SKIPPED)\s+(\S+::\S+)|(\S+::\S+)\s+" r"(PASSED|FAILED|ERROR|SKIPPED)"
  )
  seen = {}
  for m in outcome.finditer(stdout):
    word, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    seen[name] = word
  failed = sorted(n for n, w in seen.items() if w in ("FAILED", "ERROR"))
  return {
      "passed": sum(w == "PASSED" for w in seen.values()),
      "failed": len(failed),
      "skipped": sum(w == "SKIPPED" for w in seen.values()),
      "failures": failed,
      "incomplete": True,
  }


def junit_counts(path: str) -> dict:
  """Passed/failed/skipped counts and the failing test ids of a pytest JUnit XML file."""
  failed, skipped, passed = [], 0, 0
  for case in ET.parse(path).getroot().iter("testcase"):
    name = f"{case.get('classname')}::{case.get('name')}"
    if case.find("failure") is not None or case.find("error") is not None:
      failed.append(name)
    elif case.find("skipped") is not None:
      skipped += 1
    else:
      passed += 1
  return {"passed": passed, "failed": len(failed), "skipped": skipped, "failures": failed}


def section_t5(args) -> dict:
  """The T5 step at ``--t5_batch``, or at half that batch if it does not fit in memory."""
  size, batch, lengths = (
      ("tiny", 4, (32, 8)) if args.smoke else (args.t5_size, args.t5_batch, (512, 114))
  )
  try:
    return t5_step_times(args, size, batch, lengths)
  except Exception as e:  # jax's XlaRuntimeError has no stable import path across versions
    if "RESOURCE_EXHAUSTED" not in str(e) or batch < 2:
      raise
    import gc

    gc.collect()
    out = t5_step_times(args, size, batch // 2, lengths)
    out["note"] = f"batch {batch} ran out of device memory: {str(e)[:300]}"
    return out


T5_VARIANTS = {
    "untracked": (True, False),
    "tracked": (True, True),
    "unrolled untracked": (False, False),
}  # name: (scan_layers, hook)


def unrolled_xla_flops(scale, size: str, dtype: str, batch: int, lengths: tuple):
  """XLA's flop count of the unrolled step from its lowered program, without compiling it
  (a scanned stack's body is counted once, so the scanned program's count is too low)."""
  step, state, data = scale.build_train_step(
      size, scan=False, dtype=dtype, track=False, batch=batch, lengths=lengths, abstract=True
  )
  cost = step.lower(state, data).cost_analysis()  # None where the backend has no such analysis
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) if cost else None


def t5_step_times(args, size: str, batch: int, lengths: tuple) -> dict:
  import jax
  import bench_t5_scale as scale

  dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  variants = {}
  names = list(T5_VARIANTS) if args.t5_unrolled else ["untracked", "tracked"]
  for name in names:
    scan, track = T5_VARIANTS[name]
    step, state, data = scale.build_train_step(
        size, scan=scan, dtype=dtype, track=track, batch=batch, lengths=lengths, remat=args.remat
    )
    compiled, lower_s, compile_s = scale.measure_compile(step, state, data)
    variants[name] = {
        "compiled": compiled,
        "state": state,
        "data": data,
        "lower_s": lower_s,
        "compile_s": compile_s,
    }
  # Interleaved, so that drifts of the machine hit every variant alike; the first step warms up.
  times = {name: [] for name in variants}
  for i in range(args.t5_steps + 1):
    for name, v in variants.items():
      took, v["state"] = scale.time_steps(v["compiled"], v["state"], v["data"], 1)
      if i:
        times[name].append(took[0])
  tokens = batch * sum(lengths)
  peak = peak_flops(jax.devices()[0].device_kind)
  model = scale.model_flops(scale.config(size, dtype=dtype), batch, lengths)
  xla = (
      scale.xla_flops(variants["unrolled untracked"]["compiled"])
      if args.t5_unrolled
      else unrolled_xla_flops(scale, size, dtype, batch, lengths)
  )
  out = {
      "size": size,
      "batch": batch,
      "lengths": list(lengths),
      "dtype": dtype,
      "remat": args.remat,
      "tokens_per_step": tokens,
      "device_kind": jax.devices()[0].device_kind,
      "peak_flops": peak,
      "model_flops_per_step": model["total"],
      "xla_flops_per_step_unrolled": xla,
  }
  for name, v in variants.items():
    med = float(np.median(times[name]))
    row = {
        "scan_layers": T5_VARIANTS[name][0],
        "hook": T5_VARIANTS[name][1],
        "step_s": med,
        "step_s_min": float(np.min(times[name])),
        "tokens_per_s": tokens / med,
        "lower_s": round(v["lower_s"], 1),
        "compile_s": round(v["compile_s"], 1),
        "memory": scale.memory(v["compiled"]),
    }
    if peak:
      row["mfu_xla"] = xla / med / peak if xla else None
      row["mfu_model"] = model["total"] / med / peak
    out[name] = row
  out["hook_step_ratio"] = out["tracked"]["step_s"] / out["untracked"]["step_s"]
  out["hook_compile_ratio"] = out["tracked"]["compile_s"] / out["untracked"]["compile_s"]
  if args.t5_unrolled:
    out["scan_step_ratio"] = out["untracked"]["step_s"] / out["unrolled untracked"]["step_s"]
  stats = jax.devices()[0].memory_stats() or {}
  out["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
  return out


def fig1_warmup(args) -> int:
  return 5 if args.smoke else 100


def fig1_corpus_prepared() -> bool:
  """BBC News (the quick profile's corpus) where it is prepared, else CPython's builtin text.

  A machine without a package index gets BBC by copying ``$NORMGROWTH_DATA/corpora/bbc``
  (``python -m normgrowth_jax.data prepare --corpus bbc`` elsewhere) and pointing
  ``$NORMGROWTH_DATA`` at the copy.
  """
  from normgrowth_jax.data import corpora

  return corpora.is_prepared("bbc")


def fig1_bindings(args, model_dir: str) -> list[str]:
  """The Fig. 1 run: emb 64, 2+2 layers, batch 16 x (64+16), W = 100, T = 52.4 W,
  the anchor refreshed on the paper's 104-checkpoint grid (``t5_normgrowth_bbc.gin``)."""
  warmup = fig1_warmup(args)
  emb, layers, batch, lengths = (16, 1, 4, (32, 8)) if args.smoke else (64, 2, 16, (64, 16))
  steps = args.fig1_steps or int(round(52.4 * warmup))
  grid = max(1, round(5100 * steps / 2**19))
  return [
      f"MODEL_DIR='{model_dir}'",
      f"TRAIN_STEPS={steps}",
      f"WARMUP_STEPS={warmup}",
      f"BATCH_SIZE={batch}",
      f"CHECKPOINT_GRID={grid}",
      f"CHECKPOINT_PERIOD={max(32, steps // 4 // 32 * 32)}",
      f"TASK_FEATURE_LENGTHS={{'inputs': {lengths[0]}, 'targets': {lengths[1]}}}",
      f"network.T5Config.emb_dim={emb}",
      f"network.T5Config.mlp_dim={emb * 2}",
      f"network.T5Config.head_dim={emb // 4}",
      f"network.T5Config.num_encoder_layers={layers}",
      f"network.T5Config.num_decoder_layers={layers}",
      "train.train.data_fn=@numpy_data.batches",
      *([] if fig1_corpus_prepared() else ["numpy_data.batches.source='builtin'"]),
      "train.train.tensorboard=False",
  ]


def run_command(cmd: list, timeout: float) -> subprocess.CompletedProcess:
  """Runs ``cmd`` in the repository in its own process group. A time-out ends the whole group
  (pytest's workers too) and is a failed run (code -9), not an exception, so that the runs
  beside it still report."""
  proc = subprocess.Popen(
      cmd,
      cwd=REPO,
      env=SHARED_DEVICE_ENV,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      start_new_session=True,
  )
  try:
    stdout, stderr = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    stdout, stderr = proc.communicate()
    stderr += f"\ntimed out after {timeout} s"
  return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def fig1_run(args, name: str, extra: tuple = ()) -> dict:
  """Trains one Fig. 1 run (a fresh process, as users run it) and draws Figs. 1/5 from it."""
  run = os.path.join(args.out, f"{name}_run")
  cmd = [
      sys.executable,
      "-m",
      "normgrowth_jax.train",
      "--gin_file=gin_configs/local/t5_normgrowth_bbc.gin",
      *[f"--gin.{b}" for b in (*fig1_bindings(args, run), *extra)],
  ]
  t0 = time.perf_counter()
  train = run_command(cmd, args.fig1_timeout)
  out = {
      "bindings": list(extra),
      "corpus": "bbc" if fig1_corpus_prepared() else "builtin",
      "train_returncode": train.returncode,
      "train_wall_s": round(time.perf_counter() - t0, 1),
  }
  if train.returncode:
    out["error"] = "training failed: " + (train.stdout + train.stderr)[-3000:]
    return out
  figs = os.path.join(args.out, name)
  t0 = time.perf_counter()
  draw = run_command(
      [
          sys.executable,
          "-m",
          "normgrowth_jax.figures",
          "fig1",
          "fig5",
          "--model_dir",
          run,
          "--out",
          figs,
          "--no_progress",
          "--runs",
          os.path.join(args.out, "fig_runs"),
      ],
      args.fig1_timeout,
  )
  out.update(
      {"figures_returncode": draw.returncode, "figures_wall_s": round(time.perf_counter() - t0, 1)}
  )
  results = os.path.join(figs, "results.json")
  if draw.returncode or not os.path.exists(results):
    out["error"] = "drawing failed: " + (draw.stdout + draw.stderr)[-3000:]
    return out
  for fig in json.load(open(results))["figures"]:
    out[fig["name"]] = {
        "verdict": fig.get("verdict"),
        "rows": [[r.get("quantity"), r.get("paper"), r.get("ours")] for r in fig.get("rows", [])],
    }
  numbers = json.load(open(os.path.join(figs, "fig1.json")))
  out["mechanism"] = {k: numbers.get(k) for k in ("sqrt_fit_r2", "exponent", "ratio_late_rms")}
  out["mechanism"].update(late_local_exponent(run, warmup=fig1_warmup(args)))
  r = out["mechanism"]["ratio_late_rms"]
  out["mechanism"]["r2_over_2"] = None if r is None else r * r / 2
  return out


def late_local_exponent(run: str, warmup: int) -> dict:
  """d log||theta|| / d log t past 4 W (``fits.local_exponent``: the log-log least-squares
  slope over every recorded step, with a 95% block-bootstrap interval of this run's
  residuals). The paper's mechanism predicts it equals r^2/2 (``ratio_late_rms`` of Fig. 1)."""
  from normgrowth_jax.analysis import fits, trajectory

  rows = trajectory.read_trajectory(run, source="jsonl")
  e = fits.local_exponent(rows["step"], rows["param_norm"], t_min=4 * warmup)
  return {"local_exponent_late": e.p, "local_exponent_late_ci": [e.lo, e.hi], "late_rows": e.n}


def section_fig1(args) -> dict:
  return fig1_run(args, "fig1")


def section_mechanism(args) -> dict:
  """The same run with Adafactor's ratio r held at each of ``--fixed_ratios`` on every matrix
  (``optimizers.adafactor_fixed_ratio``), the runs side by side: the paper's mechanism
  predicts a late local exponent of r^2/2."""
  with concurrent.futures.ThreadPoolExecutor(len(args.fixed_ratios) or 1) as pool:
    runs = {
        f"r={r}": pool.submit(
            fig1_run,
            args,
            f"fixed_r{r}",
            (
                "OPTIMIZER=@optimizers.adafactor_fixed_ratio",
                f"optimizers.adafactor_fixed_ratio.update_rms={r}",
            ),
        )
        for r in args.fixed_ratios
    }
    return {name: run.result() for name, run in runs.items()}


def _width(emb: int) -> tuple:
  return (
      f"network.T5Config.emb_dim={emb}",
      f"network.T5Config.mlp_dim={2 * emb}",
      f"network.T5Config.head_dim={emb // 4}",
  )


# One factor at a time from the Fig. 1 run (emb 64, 2+2 layers, batch 16, BBC ~1.2 epochs):
# depth, width (emb >= 128: factored second moments), batch, and many passes over less data.
SWEEP = {
    "enc 4 layers": ("network.T5Config.num_encoder_layers=4",),
    "enc 8 layers": ("network.T5Config.num_encoder_layers=8",),
    "emb 32": _width(32),
    "emb 128": _width(128),
    "emb 256": _width(256),
    "batch 4": ("BATCH_SIZE=4",),
    "batch 64": ("BATCH_SIZE=64",),
    "builtin text (~12 epochs)": ("numpy_data.batches.source='builtin'",),
}
SMOKE_SWEEP = ("batch 64",)


def section_sweep(args) -> dict:
  """Issue 20's mechanism experiment: late r_t against the late local exponent across runs
  that vary one factor of the Fig. 1 run; the paper's mechanism predicts exponent = r^2/2."""
  names = SMOKE_SWEEP if args.smoke else list(SWEEP)
  with concurrent.futures.ThreadPoolExecutor(args.sweep_workers) as pool:
    runs = {
        n: pool.submit(
            fig1_run, args, "sweep_" + "".join(c if c.isalnum() else "_" for c in n), SWEEP[n]
        )
        for n in names
    }
    out = {n: run.result() for n, run in runs.items()}
  table = []
  for n, run in out.items():
    m = run.get("mechanism") or {}
    table.append(
        [
            n,
            m.get("ratio_late_rms"),
            m.get("r2_over_2"),
            m.get("local_exponent_late"),
            (m.get("sqrt_fit_r2") or [None])[0],
        ]
    )
  out["table [run, r late, r^2/2, local exponent, sqrt r^2]"] = table
  return out


def mechanism_points(report: dict) -> list[tuple]:
  """``[(label, r late, local exponent)]`` of every Fig. 1 run in a report that finished."""
  runs = {"Fig. 1 run (Adafactor)": report.get("fig1", {})}
  runs.update({f"r held at {k[2:]}": v for k, v in report.get("mechanism", {}).items()})
  runs.update(report.get("sweep", {}))
  points = []
  for label, run in runs.items():
    m = run.get("mechanism") if isinstance(run, dict) else None
    if m and m.get("ratio_late_rms") is not None:
      points.append((label, m["ratio_late_rms"], m["local_exponent_late"]))
  return points


def plot_mechanism(report: dict, stem: str) -> list:
  """The paper's mechanism as a prediction: late local exponent d log||theta|| / d log t
  against r^2/2 from the measured Adafactor ratio r, one point per run."""
  from normgrowth_jax.figures import plotting

  points = mechanism_points(report)
  if not points:
    return []
  fig, ax = plotting.new_figure(1, 1, height_per_row=2.6)
  top = max(max(r * r / 2, p) for _, r, p in points) * 1.1
  ax.plot([0, top], [0, top], **plotting.PAPER_STYLE, label="prediction: exponent = r²/2")
  for i, (label, r, p) in enumerate(points):
    marker = "s" if label.startswith("r held") else ("*" if label.startswith("Fig. 1") else "o")
    ax.scatter([r * r / 2], [p], marker=marker, s=22, color=f"C{i % 10}", label=label, zorder=3)
  ax.set_xlabel("r²/2 from the measured ratio r = ‖δ_t‖ / (lr_t ‖θ_t‖), t > 4W")
  ax.set_ylabel("measured d log‖θ_t‖ / d log t, t > 4W")
  ax.set_title(
      f"T5 at T/W = 52.4, one seed per run ({report.get('versions', {}).get('device_kind', '?')})"
  )
  ax.grid(alpha=0.3, linewidth=0.5)
  ax.legend(loc="upper left", fontsize=5, ncol=1)
  ax.set_xlim(0, top)
  ax.set_ylim(0, top)
  return plotting.save(fig, Path(stem))


def has_error(result) -> bool:
  """Whether a section's result holds an ``error`` at any depth."""
  if isinstance(result, dict):
    return "error" in result or any(has_error(v) for v in result.values())
  return False


SECTIONS = {
    "versions": section_versions,
    "tests": section_tests,
    "t5": section_t5,
    "fig1": section_fig1,
    "mechanism": section_mechanism,
    "sweep": section_sweep,
}


def run_section(name: str, args) -> dict:
  t0 = time.perf_counter()
  try:
    result = SECTIONS[name](args)
  except Exception as e:  # a broken section is reported, the others still run
    result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
  result["section_wall_s"] = round(time.perf_counter() - t0, 1)
  return result


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default=os.environ.get("OUT") or "runs/device_check")
  ap.add_argument("--smoke", action="store_true", help="toy sizes (the CPU smoke test)")
  ap.add_argument(
      "--sections",
      default="versions,t5,tests+fig1+mechanism+sweep",
      help="comma-separated, in order; 'a+b' runs a and b side by side (the T5 "
      "timing runs alone)",
  )
  ap.add_argument("--test_workers", type=int, default=8)
  ap.add_argument("--test_timeout", type=int, default=240)
  ap.add_argument("--t5_size", default="base", help="tiny | base | large")
  ap.add_argument("--t5_batch", type=int, default=128, help="sequences of 512 + 114 tokens")
  ap.add_argument("--t5_steps", type=int, default=10)
  ap.add_argument("--remat", default="none")
  ap.add_argument(
      "--t5_unrolled",
      action="store_true",
      help="also time the unrolled step (its compilation takes minutes at base)",
  )
  ap.add_argument("--fig1_steps", type=int, default=0, help="0: 52.4 W")
  ap.add_argument("--fig1_timeout", type=int, default=300)
  ap.add_argument("--fixed_ratios", type=float, nargs="*", default=[1.0, 0.5])
  ap.add_argument("--sweep_workers", type=int, default=8)
  ap.add_argument(
      "--plot",
      default=None,
      metavar="DEVICE_CHECK_JSON",
      help="only redraw mechanism.png/pdf beside an earlier run's JSON",
  )
  args = ap.parse_args(argv)
  if args.plot:
    with open(args.plot) as f:
      return (
          0
          if plot_mechanism(json.load(f), os.path.join(os.path.dirname(args.plot), "mechanism"))
          else 1
      )
  args.out = os.path.abspath(args.out)
  os.makedirs(args.out, exist_ok=True)
  report = {}
  for group in args.sections.split(","):
    names = group.split("+")
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
      ap.error(f"unknown section(s) {unknown}; choose from {sorted(SECTIONS)}")
    print(f"== {' + '.join(names)}", flush=True)
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
      futures = {pool.submit(run_section, n, args): n for n in names}
      for done in concurrent.futures.as_completed(futures):  # saved as each one ends
        n = futures[done]
        report[n] = done.result()
        print(f"== {n}\n" + json.dumps(report[n], indent=1, default=str), flush=True)
        with open(os.path.join(args.out, "device_check.json"), "w") as f:
          json.dump(report, f, indent=1, default=str)
  plot_mechanism(report, os.path.join(args.out, "mechanism"))
  failed = [n for n, r in report.items() if has_error(r)]
  print(
      f"== done: {len(report) - len(failed)} of {len(report)} sections ran"
      + (f"; failed: {', '.join(failed)}" if failed else ""),
      flush=True,
  )
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
