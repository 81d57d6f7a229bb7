"""A training step with Adam on every embedding row against Adam on the rows a batch uses
(``train.embedding_update: dense | lazy``), or against other optimizer variants (``--variants``:
``fused`` is ``train.adam_kernel: fused``), per encoder, in one process.

    .venv/bin/python bench/embedding_update.py [--encoders DIR,DIR,...] [--variants dense,lazy]
        [--batch 32] [--max-len 128] [--steps 6] [--warmup 2] [--texts 0] [--adversarial fgm|pgd]
        [--json OUT.json]

For each encoder folder (a Google-format checkpoint): one copy per variant of one classifier ([CLS]
-> Dense 256 relu -> dropout 0.1 -> Dense 3, softmax CE, xtune's Adam at 1e-4), built with
``build_classifier`` and compiled with ``build_optimizer(..., **VARIANTS[name])``, is fed the
same batch: the first ``batch`` texts of the inews training split (real Chinese news, title and
content), tokenized by the encoder's vocabulary, head-truncated to ``max-len`` and padded to the
longest. Steps (each model's ``train_step``, traced once) alternate between the models, the order
reversed every round (``--warmup`` untimed each, then ``--steps`` timed each), so all see the same
machine state; the median step time of each and the first variant's over each other's are printed
with the vocabulary size and how many distinct rows the batch uses. With
``--adversarial``, both models train through xtune's trainer with that method (default epsilon).
"""
import argparse
import json
import os
import statistics
import time

from xtune_keras.cpu import cpu_description

DEFAULT_ENCODERS = "checkpoints/all-MiniLM-L6-v2,checkpoints/multilingual-e5-small"
HEADS = [{"type": "cls"}, {"type": "mlp", "units": [256], "dropout": 0.1}]
# build_optimizer options of each variant; the first one named in --variants is the baseline
VARIANTS = {"dense": {}, "lazy": {"embedding_update": "lazy"}, "fused": {"adam_kernel": "fused"},
            "fused_lazy": {"adam_kernel": "fused", "embedding_update": "lazy"}}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", default=DEFAULT_ENCODERS, help="comma-separated checkpoint folders")
    p.add_argument("--variants", default="dense,lazy", help="comma-separated names of VARIANTS, baseline first")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--texts", type=int, default=0, help="first text of the batch in the inews training split")
    p.add_argument("--adversarial", default=None, choices=("fgm", "pgd"), help="train.adversarial.method")
    p.add_argument("--json", default=None, help="also write the numbers here")
    return p.parse_args(argv)


def real_batch(encoder, size, max_len, first):
    """``(x, y)``: ``size`` inews training texts from ``first``, encoded for ``encoder``."""
    import numpy as np
    from bert4keras.snippets import sequence_padding

    from xtune_keras.data.datasets import inews_splits
    from xtune_keras.data.tables import Examples
    from xtune_keras.data.truncation import encode_examples
    from xtune_keras.model.encoders import build_tokenizer, resolve_encoder_paths

    train = inews_splits()["train"].iloc[first:first + size]
    tokenizer = build_tokenizer(resolve_encoder_paths(encoder)["vocab"])
    examples = Examples(list(train["title"]), list(train["content"]), None, "inews train", list(range(len(train))))
    ids, segments = encode_examples(tokenizer, examples, max_len)
    x = {"Input-Token": sequence_padding(ids).astype(np.int32),
         "Input-Segment": sequence_padding(segments).astype(np.int32)}
    labels = train["label"].astype("category").cat.codes.to_numpy()
    return x, np.eye(3, dtype=np.float32)[labels % 3]


def build(encoder, variant, adversarial=None):
    from bert4keras.backend import keras

    from xtune_keras.model.classifier import build_classifier
    from xtune_keras.model.encoders import resolve_encoder_paths
    from xtune_keras.model.losses import build_loss
    from xtune_keras.recipes.finetune import compile_model
    from xtune_keras.train.adversarial import build_trainer
    from xtune_keras.train.optimizers import build_optimizer

    keras.utils.set_random_seed(0)
    paths = resolve_encoder_paths(encoder)
    model = build_classifier(paths["config"], paths["checkpoint"], 3, HEADS)
    model = build_trainer(model, method=adversarial, activation="softmax")
    compile_model(model, build_optimizer("adam", 1e-4, **VARIANTS[variant]), build_loss("ce"))
    return model


def alternate(models, x, y, warmup, steps):
    """``{variant: [seconds per timed step]}``, the models' steps interleaved, order reversed each round.

    Each step is the model's own ``train_step`` traced once, not ``train_on_batch``: that builds a
    tf.data iterator per call whose autotuning thread wakes after 10, 20, 40... ms, and the call
    often returns only at such a wake-up (steps of 10.24, 20.48 or 40.96 s here; RESULTS.md §9)."""
    import tensorflow as tf

    steps_of = {variant: tf.function(model.train_step) for variant, model in models.items()}
    times = {variant: [] for variant in models}
    for i in range(warmup + steps):
        for variant in (list(models) if i % 2 == 0 else list(reversed(models))):
            start = time.perf_counter()
            float(steps_of[variant]((x, y))["loss"])  # waits for the step
            if i >= warmup:
                times[variant].append(time.perf_counter() - start)
    return times


def measure(encoder, args):
    import numpy as np

    from xtune_keras.model.encoders import read_config, resolve_encoder_paths

    x, y = real_batch(encoder, args.batch, args.max_len, args.texts)
    variants = args.variants.split(",")
    models = {variant: build(encoder, variant, args.adversarial) for variant in variants}
    times = alternate(models, x, y, args.warmup, args.steps)
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    config = read_config(resolve_encoder_paths(encoder)["config"])
    return {"encoder": encoder, "vocab_size": config["vocab_size"], "hidden_size": config["hidden_size"],
            "layers": config["num_hidden_layers"], "batch": list(x["Input-Token"].shape),
            "rows_used": int(np.unique(x["Input-Token"]).size),
            "times_s": times, "median_s": medians, "min_s": {u: min(t) for u, t in times.items()},
            "baseline_over": {v: medians[variants[0]] / medians[v] for v in variants[1:]}}


def main(argv=None):
    args = parse(argv)
    from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)

    variants = args.variants.split(",")
    print("CPU:", cpu_description(), "| adversarial:", args.adversarial)
    print("| encoder | vocab x hidden, layers | batch | rows used | %s |"
          % " | ".join(["%s s" % v for v in variants] + ["%s / %s" % (variants[0], v) for v in variants[1:]]))
    print("| --- | --- | --- |" + " ---: |" * (2 * len(variants)))
    results = []
    for encoder in args.encoders.split(","):
        r = measure(encoder, args)
        results.append(r)
        print("| %s | %d x %d, %d | %d x %d | %d | %s |" % (
            os.path.basename(encoder), r["vocab_size"], r["hidden_size"], r["layers"], r["batch"][0], r["batch"][1],
            r["rows_used"], " | ".join(["%.3f (%.3f)" % (r["median_s"][v], r["min_s"][v]) for v in variants]
                                       + ["%.2fx" % r["baseline_over"][v] for v in variants[1:]])), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_description(), "args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
