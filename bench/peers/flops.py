"""Achieved FLOP/s of an xtune training step against a plain matmul of its precision, on this machine.

    .venv/bin/python bench/peers/flops.py [--encoder DIR] [--batch 32] [--seq-len 128] [--steps 10]
        [--matmul 4096] [--repeats 5] [--threads N] [--precision float32|mixed_bfloat16|...] [--json OUT.json]

1. The xtune classifier of the benchmark (all-MiniLM-L6-v2 -> [CLS] -> Dense 256 relu ->
   dropout 0.1 -> Dense 8; softmax CE; xtune's Adam, lr 1e-4), built with xtune's own
   ``build_classifier`` / ``build_optimizer`` / ``compile_model``, is fed one fixed batch of
   ``batch`` x ``seq-len`` real tokens (no padding): its ``train_step`` (traced once) is called
   ``--warmup`` times untimed (tracing), then ``--steps`` times timed; the median step time is used (the best
   is shown too). A forward pass (``predict_step``) is timed the same way.
2. The analytic FLOPs of that step (``flopcount.py``: matmuls only, backward = 2x forward)
   divided by the step time = achieved FLOP/s.
3. A plain ``tf.matmul`` of two ``N x N`` matrices in a ``tf.function`` (2 N^3 FLOPs), best of
   ``--repeats`` after one warm-up call: the machine's practical matmul peak for TF, in the compute
   dtype of ``--precision`` (float32, or bfloat16 / float16 under a mixed policy).
4. The fraction achieved / matmul peak.

Precision: the classifier is built under ``--precision`` with xtune's ``precision_policy`` (as
``train.precision`` does; ``auto`` picks by the CPU's flags); its logits stay float32.

Threads: TF intra-op parallelism set to ``--threads`` (default: all cores), as in the peer runs.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flopcount  # noqa: E402
from xtune_keras.cpu import cpu_flags, cpu_name  # noqa: E402  (no TensorFlow)


def timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def benchmark_step(encoder, batch, seq_len, labels, precision):
    """The benchmark's classifier, compiled, and its fixed batch: ``(model, x, y, policy)``.

    ``encoder`` -> [CLS] -> Dense 256 relu -> dropout 0.1 -> Dense ``labels``; softmax CE; xtune's
    Adam at 1e-4; built under ``precision`` (``auto`` picks by the CPU's flags). The batch is
    ``batch`` x ``seq_len`` random real-token ids, seed 0, no [PAD]: every position is real work.
    """
    from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
    import numpy as np
    import tensorflow as tf

    from xtune_keras.model.classifier import build_classifier
    from xtune_keras.model.encoders import read_config
    from xtune_keras.model.losses import build_loss
    from xtune_keras.recipes.finetune import compile_model
    from xtune_keras.train.optimizers import build_optimizer
    from xtune_keras.train.precision import precision_policy, resolve_precision

    config_path = os.path.join(encoder, "bert_config.json")
    heads = [{"type": "cls"}, {"type": "mlp", "units": [256], "dropout": 0.1}]
    tf.keras.utils.set_random_seed(0)
    policy = resolve_precision(precision)[0]
    with precision_policy(policy):
        model = build_classifier(config_path, os.path.join(encoder, "bert_model.ckpt"), labels, heads)
    compile_model(model, build_optimizer("adam", 1e-4), build_loss("ce"))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1000, read_config(config_path)["vocab_size"], size=(batch, seq_len)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 101, 102  # [CLS] ... [SEP]
    x = {"Input-Token": tokens, "Input-Segment": np.zeros_like(tokens)}
    y = np.eye(labels, dtype=np.float32)[rng.integers(0, labels, size=batch)]
    return model, x, y, policy


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="checkpoints/all-MiniLM-L6-v2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--labels", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--matmul", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--precision", default="float32", help="train.precision's choices (auto: by CPU flags)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from xtune_keras.model.encoders import read_config
    model, x, y, policy = benchmark_step(args.encoder, args.batch, args.seq_len, args.labels, args.precision)
    bert_config = read_config(os.path.join(args.encoder, "bert_config.json"))

    # The model's own steps traced once, not train_on_batch / predict_on_batch: those build a
    # tf.data iterator per call and often return only at its autotuning thread's next wake-up
    # (10 ms x (2^k - 1) after the call began; RESULTS.md §4's correction).
    train_step, predict_step = tf.function(model.train_step), tf.function(model.predict_step)
    step_times = timed(lambda: float(train_step((x, y))["loss"]), args.warmup, args.steps)
    forward_times = timed(lambda: predict_step(x).numpy(), args.warmup, args.steps)

    n = args.matmul
    compute_dtype = tf.keras.mixed_precision.Policy(policy).compute_dtype
    a = tf.cast(tf.random.normal([n, n], dtype=tf.float32, seed=1), compute_dtype)
    b = tf.cast(tf.random.normal([n, n], dtype=tf.float32, seed=2), compute_dtype)
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))  # sum: a scalar to sync on
    matmul_times = timed(lambda: matmul(a, b).numpy(), 1, args.repeats)

    fwd_flops = flopcount.forward_flops(args.batch, args.seq_len, bert_config, 256, args.labels)
    step_flops = flopcount.train_step_flops(args.batch, args.seq_len, bert_config, 256, args.labels)
    matmul_flops = 2.0 * n ** 3
    step_median, fwd_median, matmul_best = (statistics.median(step_times), statistics.median(forward_times),
                                            min(matmul_times))
    peak = matmul_flops / matmul_best
    result = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "tensorflow": tf.__version__, "encoder": args.encoder, "precision": policy,
        "compute_dtype": compute_dtype, "amx_bf16": "amx_bf16" in cpu_flags(),
        "batch": args.batch, "seq_len": args.seq_len,
        "train_step": {"gflop": step_flops / 1e9, "median_s": step_median, "best_s": min(step_times),
                       "gflops_per_s": step_flops / step_median / 1e9,
                       "fraction_of_matmul": step_flops / step_median / peak},
        "forward": {"gflop": fwd_flops / 1e9, "median_s": fwd_median, "best_s": min(forward_times),
                    "gflops_per_s": fwd_flops / fwd_median / 1e9,
                    "fraction_of_matmul": fwd_flops / fwd_median / peak},
        "matmul": {"n": n, "gflop": matmul_flops / 1e9, "best_s": matmul_best,
                   "gflops_per_s": peak / 1e9},
    }
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


def markdown(r):
    rows = [
        "FLOP/s on %s (%d cores, AMX bfloat16: %s, TF %s, %d intra-op threads), %s, precision %s"
        % (r["cpu"], r["cores"], "yes" if r["amx_bf16"] else "no", r["tensorflow"], r["threads"], r["encoder"],
           r["precision"]),
        "",
        "| what | GFLOP (analytic) | time (s) | GFLOP/s | of matmul peak |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (("train_step", "xtune training step, %d x %d tokens (median)" % (r["batch"], r["seq_len"])),
                       ("forward", "xtune forward only, %d x %d tokens (median)" % (r["batch"], r["seq_len"]))):
        x = r[key]
        rows.append("| %s | %.1f | %.3f | %.1f | %.1f%% |"
                    % (label, x["gflop"], x["median_s"], x["gflops_per_s"], 100 * x["fraction_of_matmul"]))
    m = r["matmul"]
    rows.append("| tf.matmul %s %d x %d (best) | %.1f | %.3f | %.1f | 100%% |"
                % (r["compute_dtype"], m["n"], m["n"], m["gflop"], m["best_s"], m["gflops_per_s"]))
    return "\n".join(rows)


if __name__ == "__main__":
    main()
