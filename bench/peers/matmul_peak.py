"""The matmul rate each side's framework reaches on this CPU: a square float32 (and bfloat16)
product, best of ``--repeats``, in TensorFlow or PyTorch (run it with each side's Python).

    .venv/bin/python bench/peers/matmul_peak.py --framework tf
    bench/out/venv-hf/bin/python bench/peers/matmul_peak.py --framework torch

Prints the CPU, then one JSON line per precision: framework, version, dtype, n, best seconds,
GFLOP/s, threads. Imports only ``xtune_keras.cpu`` of the package (no TensorFlow), from the
repository, so that the PyTorch venv runs it too.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from xtune_keras.cpu import cpu_description  # noqa: E402


def rate_tf(n, dtype, repeats, threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    a = tf.cast(tf.random.normal([n, n]), dtype)
    b = tf.cast(tf.random.normal([n, n]), dtype)
    tf.matmul(a, b).numpy()
    return tf.__version__, best(lambda: tf.matmul(a, b).numpy(), repeats)


def rate_torch(n, dtype, repeats, threads):
    import torch

    torch.set_num_threads(threads)
    kind = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n).to(kind), torch.randn(n, n).to(kind)
    torch.matmul(a, b)
    return torch.__version__, best(lambda: torch.matmul(a, b), repeats)


def best(step, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["tf", "torch"], required=True)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    measure = rate_tf if args.framework == "tf" else rate_torch
    print(cpu_description(), flush=True)
    for dtype in args.dtypes.split(","):
        version, seconds = measure(args.n, dtype, args.repeats, args.threads)
        print(json.dumps({"framework": args.framework, "version": version, "dtype": dtype, "n": args.n,
                          "seconds": round(seconds, 4), "gflops": round(2 * args.n ** 3 / seconds / 1e9, 1),
                          "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
