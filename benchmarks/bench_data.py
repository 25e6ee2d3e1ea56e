"""Input-pipeline throughput and the cost of resuming by skipping (T5 span corruption).

Run: NORMGROWTH_DATA=... python benchmarks/bench_data.py [--task ng_span_corruption_bbc_bytes] [--k 200]
Prints: batches/s when iterating (NumPy conversion included) and when resuming
with start_batch=k (tf.data skip: batches computed in C++, not converted).
"""

import argparse
import time

from normgrowth_jax.data import pipeline


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--task", default="ng_span_corruption_bbc_bytes")
  p.add_argument("--k", type=int, default=200)
  p.add_argument("--batch", type=int, default=16)
  args = p.parse_args()
  fl = {"inputs": 512, "targets": 114}
  it = pipeline.make_batch_iterator(args.task, "train", fl, args.batch, seed=0)
  next(it)  # build + warm up
  t = time.perf_counter()
  for _ in range(args.k):
    next(it)
  iterate = time.perf_counter() - t
  t = time.perf_counter()
  it = pipeline.make_batch_iterator(args.task, "train", fl, args.batch, seed=0, start_batch=args.k)
  next(it)
  resume = time.perf_counter() - t
  print(f"{args.task} batch {args.batch} x (512+114): iterate {args.k / iterate:.1f} batches/s "
        f"({args.k * args.batch * 626 / iterate:,.0f} tokens/s); resume at k={args.k}: {resume:.2f} s "
        f"(incl. pipeline build), {resume / args.k * 1000:.1f} ms per skipped batch")


if __name__ == "__main__":
  main()
