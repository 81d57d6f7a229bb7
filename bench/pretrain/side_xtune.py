"""Pretraining peer, xtune side: what ``xtune pretrain`` runs (``PretrainRecipe``), with one hook
timing the steps and reading the per-step loss; same corpus, packing, batch, steps, LR schedule
and optimizer family as side_hf.py (AdamW, weight decay 0.01, warmup 10%, linear decay). Run
with .venv/bin/python. Writes ``summary_xtune.json``."""
import argparse
import os
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from side_hf import write_summary  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, kind, default in (("--encoder", str, None), ("--corpus", str, None), ("--out", str, None),
                                ("--max-len", int, 128), ("--batch-size", int, 32), ("--steps", int, 60),
                                ("--lr", float, 1e-4), ("--seed", int, 0), ("--threads", int, os.cpu_count()),
                                ("--segmenter", str, "whitespace")):
        p.add_argument(name, type=kind, default=default)
    # adamw: google-research/bert's (no bias correction, epsilon 1e-6, clip 1.0); adam: bias-corrected
    # Adam with decoupled weight decay 0.01 and clip 1.0, i.e. torch's AdamW as the HF Trainer runs it.
    p.add_argument("--optimizer", choices=["adamw", "adam"], default="adamw")
    args = p.parse_args()
    from xtune_keras import compat  # noqa: F401
    import tensorflow as tf
    from bert4keras.backend import keras

    from xtune_keras.recipes.pretrain import PretrainRecipe
    from xtune_keras.schema import load_config

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    spec = {"name": "bench_pretrain", "seed": args.seed,
            "corpus": {"files": [args.corpus], "valid_ratio": 0.0},
            "masking": {"max_len": args.max_len, "segmenter": args.segmenter},
            "encoder": {"dir": args.encoder},
            "train": {"optimizer": args.optimizer, "lr": args.lr, "weight_decay": 0.01, "clip_norm": 1.0,
                      "batch_size": args.batch_size,
                      "max_steps": args.steps, "eval_every": args.steps, "warmup_steps": 0.1, "lr_decay": True},
            "output": {"dir": os.path.join(args.out, "xtune_out"), "runs_dir": os.path.join(args.out, "runs"),
                       "tensorboard": False}}
    path = os.path.join(args.out, "pretrain.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f)
    stamps, means = [], []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())
            means.append(float(logs["loss"]))  # Keras logs the running mean of the epoch

    class Hook:
        def callbacks(self, recipe):
            return [Clock()]

    start = time.perf_counter()
    recipe = PretrainRecipe(load_config(path, recipe="pretrain"), echo=False, hooks=[Hook()])
    result = recipe.run(force=True)
    losses = [means[0]] + [(k + 1) * means[k] - k * means[k - 1] for k in range(1, len(means))]
    write_summary(args, "xtune", start, stamps, losses, result["blocks"])


if __name__ == "__main__":
    main()
