"""Saturation benchmark on CPU: plain vs finite-rho vs exact-limit forward, and rho sweeps.

Part 1 (MiniLM, batch x len tokens): jitted forwards returning per-layer hidden states,
  plain f(theta), finite rho f(1000 theta) (scaling inside the jit), exact limit sf(theta).
  Target: finite-rho and limit within 1.25x of plain.
Part 2 (a 20-value rho sweep of the per-layer similarity): `rho_sweep` (one vmapped call)
  vs a loop that recompiles per rho (rho baked in as a constant) vs a loop over one compiled
  `saturation_similarity` (rho traced). Targets: >= 5x faster than the recompiling loop, no
  slower than the non-recompiling one. Both cold (first call, compile included) and warm.

Falls back to the small LM when MiniLM's wheel is not installed.

Run: python benchmarks/bench_saturation.py [--batch 32 --len 128 --sweep-batch 8 --repeats 5]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from normgrowth_jax import saturation as sat

TEXT = (
    "The parameter norm of a transformer grows during training, and as it grows the network "
    "approaches its saturated version, in which softmax attention becomes hard attention and "
    "squashing functions become step functions. A man is eating food. A man is eating a piece "
    "of bread. The girl is carrying a baby. A man is riding a horse. A woman is playing violin. "
    "Two men pushed carts through the woods. A man is riding a white horse on an enclosed ground. "
    "A monkey is playing drums. Someone in a gorilla costume is playing a set of drums. "
) * 4


def timeit(f, repeats):
  """Median wall time of f() (blocking) over `repeats` runs, seconds."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def cold(f):
  t0 = time.perf_counter()
  jax.block_until_ready(f())
  return time.perf_counter() - t0


def load_model(batch, length):
  """(name, apply(params, saturated) -> hidden states, params, mask) for MiniLM or the small LM."""
  words = TEXT.split()
  try:
    from normgrowth_jax.models import bert

    model, params, tok = bert.load_minilm()
    sents = [" ".join(words[i % 40 : i % 40 + 20 + 7 * i]) for i in range(batch)]
    enc = bert.encode(tok, sents, max_len=length, pad_to_max=True)
    ids, mask, types = (
        jnp.asarray(a) for a in (enc.input_ids, enc.attention_mask, enc.token_type_ids)
    )

    def apply(p, saturated=False, ids=ids, mask=mask, types=types):
      return model.apply({"params": p}, ids, mask, types, saturated=saturated).hidden_states

    return "MiniLM-L6 (pretrained)", apply, params, mask.astype(bool), (ids, mask, types)
  except (ImportError, FileNotFoundError) as e:
    print(f"MiniLM unavailable ({e}); using the small LM")
    from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

    cfg = SmallLMConfig(
        vocab_size=1000, num_layers=6, d_model=384, d_ff=512, num_heads=12, max_len=length
    )
    model = SmallLM(cfg)
    ids = jax.random.randint(jax.random.key(0), (batch, length), 1, 1000)
    params = model.init(jax.random.key(1), ids)["params"]

    def apply(p, saturated=False, ids=ids):
      return model.apply({"params": p}, ids, saturated=saturated).hidden_states

    return "small LM (6x384, random init)", apply, params, jnp.ones(ids.shape, bool), (ids,)


def bench_forward(args):
  name, apply, params, mask, _ = load_model(args.batch, args.len)
  print(
      f"\n== forward: {name}, {args.batch} x {args.len} tokens, {int(mask.sum())} real, "
      f"median of {args.repeats} =="
  )
  plain = jax.jit(lambda p: apply(p))
  finite = jax.jit(lambda p, rho: apply(sat.scale_params(p, rho)))
  limit = jax.jit(lambda p: apply(p, saturated=True))
  fs = {
      "plain": lambda: plain(params),
      "finite rho=1000": lambda: finite(params, 1000.0),
      "exact limit": lambda: limit(params),
  }
  for f in fs.values():
    cold(f)
  # interleave the repeats so that load changes on a shared machine hit all three alike
  times = {k: [] for k in fs}
  for _ in range(args.repeats):
    for k, f in fs.items():
      times[k].append(timeit(f, 1))
  base = statistics.median(times["plain"])
  for k, t in times.items():
    m = statistics.median(t)
    print(f"  {k:<16} {1e3 * m:9.1f} ms   {m / base:5.2f}x plain")
  sims = sat.saturation_similarity(lambda p: apply(p), params, 1000.0, mask)
  lims = sat.limit_similarity(lambda p: apply(p), lambda p: apply(p, saturated=True), params, mask)
  print("  per-layer similarity rho=1000:", np.round(np.asarray(sims), 3).tolist())
  print("  per-layer similarity exact limit:", np.round(np.asarray(lims), 3).tolist())


def bench_sweep(args):
  name, apply, params, mask, _ = load_model(args.sweep_batch, args.len)
  rhos = jnp.logspace(0.0, 4.0, 20)
  print(f"\n== 20-value rho sweep: {name}, {args.sweep_batch} x {args.len} tokens ==")
  fn = lambda p: apply(p)  # noqa: E731  one object: compiled once per entry point

  t_vec_cold = cold(lambda: sat.rho_sweep(fn, params, rhos, mask, batch_size=args.chunk))
  t_vec = timeit(lambda: sat.rho_sweep(fn, params, rhos, mask, batch_size=args.chunk), args.repeats)

  def loop():
    return [sat.saturation_similarity(fn, params, r, mask) for r in rhos]

  t_loop_cold = cold(loop)
  t_loop = timeit(loop, args.repeats)

  def recompiling_loop():
    out = []
    for r in np.asarray(rhos).tolist():  # rho baked in as a Python constant: a new program each
      f = jax.jit(lambda p, r=r: sat._similarities(apply(p), apply(sat.scale_params(p, r)), mask))
      out.append(f(params))
    return out

  t_recompile = cold(recompiling_loop)
  diff = np.max(
      np.abs(
          np.stack(loop())
          - np.asarray(sat.rho_sweep(fn, params, rhos, mask, batch_size=args.chunk))
      )
  )
  print(
      f"  vectorised rho_sweep (chunk={args.chunk}): cold {t_vec_cold:7.2f} s   warm {t_vec:7.2f} s"
  )
  print(f"  loop, one compiled fn:            cold {t_loop_cold:7.2f} s   warm {t_loop:7.2f} s")
  print(f"  loop that recompiles per rho:     {t_recompile:7.2f} s")
  print(
      f"  speed-up vs recompiling loop: {t_recompile / t_vec_cold:5.1f}x (cold)  "
      f"{t_recompile / t_vec:5.1f}x (warm)"
  )
  print(
      f"  vs non-recompiling loop: cold {t_loop_cold / t_vec_cold:4.2f}x  warm {t_loop / t_vec:4.2f}x "
      "(>1 = vectorised faster)"
  )
  print(f"  max |vectorised - looped| similarity: {diff:.1e} (float32 rounding differs under vmap)")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--len", type=int, default=128)
  ap.add_argument("--sweep-batch", type=int, default=8, help="batch of the sweep benchmark")
  ap.add_argument("--chunk", type=int, default=None, help="rho_sweep batch_size (default: all 20)")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--skip-forward", action="store_true")
  ap.add_argument("--skip-sweep", action="store_true")
  args = ap.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
  if not args.skip_forward:
    bench_forward(args)
  if not args.skip_sweep:
    bench_sweep(args)


if __name__ == "__main__":
  main()
