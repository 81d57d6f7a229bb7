"""Is bfloat16 worth trying on this CPU? Times a 4096^2 matmul in float32 and bfloat16 with TF
(oneDNN), best of 5: `.venv/bin/python bench/bf16_probe.py`."""
import time

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import tensorflow as tf


def best_seconds(dtype, n=4096, repeats=5):
    a = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    tf.matmul(a, b).numpy()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    flop = 2 * 4096 ** 3
    for dtype in (tf.float32, tf.bfloat16):
        s = best_seconds(dtype)
        print("%s: %.3f s, %.1f GFLOP/s" % (dtype.name, s, flop / s / 1e9))
