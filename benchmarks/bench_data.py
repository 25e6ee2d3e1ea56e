"""Input-pipeline throughput and the cost of resuming by skipping (T5 span corruption).

Run: NORMGROWTH_DATA=... python benchmarks/bench_data.py [--task ng_span_corruption_bbc_bytes] [--k 200]
Prints, for the seqio path and the TensorFlow-free NumPy path (``numpy_pipeline``): batches/s
when iterating (NumPy conversion included) and the time to resume with start_batch=k
(seqio: tf.data skip, batches computed in C++, not converted; NumPy: nothing computed).
"""

import argparse
import time

from normgrowth_jax.data import numpy_pipeline, pipeline


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--task", default="ng_span_corruption_bbc_bytes")
  p.add_argument("--k", type=int, default=200)
  p.add_argument("--batch", type=int, default=16)
  args = p.parse_args()
  fl = {"inputs": 512, "targets": 114}
  for name, make in (("seqio", pipeline.make_batch_iterator), ("numpy", numpy_pipeline.batches)):
    it = make(args.task, "train", fl, args.batch, seed=0)
    next(it)  # build + warm up
    t = time.perf_counter()
    for _ in range(args.k):
      next(it)
    iterate = time.perf_counter() - t
    t = time.perf_counter()
    next(make(args.task, "train", fl, args.batch, seed=0, start_batch=args.k))
    resume = time.perf_counter() - t
    print(
        f"{name}: {args.task} batch {args.batch} x (512+114): iterate {args.k / iterate:.1f} "
        f"batches/s ({args.k * args.batch * 626 / iterate:,.0f} tokens/s); resume at "
        f"k={args.k}: {resume:.2f} s (incl. pipeline build), "
        f"{resume / args.k * 1000:.1f} ms per skipped batch"
    )


if __name__ == "__main__":
  main()
