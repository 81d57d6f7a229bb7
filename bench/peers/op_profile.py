"""Where an xtune training step's time goes, per TensorFlow op type (TensorFlow's profiler).

    .venv/bin/python bench/peers/op_profile.py [--encoder checkpoints/random-bert-base] [--batch 32]
        [--seq-len 128] [--steps 2] [--precision float32] [--top 15]

The classifier and batch of flops.py (same builders, same fixed batch of real tokens, no padding),
``--warmup`` untimed steps, then ``--steps`` steps (the traced ``train_step``) under
``tf.profiler.experimental``. The host trace (XSpace) is read back and each TensorFlow op event
(``scope/name:OpType``) is summed per op type: wall time of the op on the thread that ran it, its
intra-op helpers included. Concurrent ops overlap, so the shares are of summed op time, not of the
step. Prints the CPU, the mean step time, and a Markdown table.
"""
import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flops import benchmark_step  # noqa: E402
from profile_step import stepper  # noqa: E402
from xtune_keras.cpu import cpu_description  # noqa: E402  (no TensorFlow)


def op_times(logdir):
    """``{op type: microseconds}`` summed over the TensorFlow op events of every host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" in name and "::" not in name and " " not in name:  # not the executor's own events
                        totals[name.rsplit(":", 1)[1]] += event.duration_ps / 1e6
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="checkpoints/random-bert-base")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--labels", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import tensorflow as tf

    model, x, y, policy = benchmark_step(args.encoder, args.batch, args.seq_len, args.labels, args.precision)
    step = stepper(model)
    for _ in range(args.warmup):
        step(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        started = time.perf_counter()
        for _ in range(args.steps):
            step(x, y)
        seconds = (time.perf_counter() - started) / args.steps
        tf.profiler.experimental.stop()
        totals = op_times(logdir)
    total = sum(totals.values())
    print("%s; TensorFlow %s; %s, precision %s, batch %d x %d: %.2f s a step (profiled, mean of %d)"
          % (cpu_description(), tf.__version__, args.encoder, policy, args.batch, args.seq_len, seconds, args.steps))
    print("\n| op type | seconds a step | share of op time |\n| --- | ---: | ---: |")
    for op, micros in totals.most_common(args.top):
        print("| %s | %.3f | %.1f%% |" % (op, micros / 1e6 / args.steps, 100.0 * micros / total))


if __name__ == "__main__":
    main()
