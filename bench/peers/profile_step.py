"""Where the time of an xtune training step goes, and what length grouping saves.

    .venv/bin/python bench/peers/profile_step.py [--data bench/out/peers/data/r8-1000-200-800-seed0]
        [--rounds 7] [--out bench/out/peers/profile.json] [--parts tokens,steps,xla]

Four parts (``--parts``), printed as Markdown and written as JSON:

1. padded tokens of one training epoch of the peers' data (batch 32) at max_len 128 and 256:
   random batches (the plain loop, the Trainer's default, xtune without grouping; mean of 5
   shuffles), ``train.micro_batches`` 2, 4 and 8 (the same random batches, each cut by length),
   ``train.group_by_length`` (pools of 50 batches) and the floor (the whole epoch
   sorted), against the real tokens. Counted, not timed: no machine noise.
2. the parts of one step of the peers' model (MiniLM, CLS + mlp(256), softmax CE, Adam) on
   batch 32 at several padded lengths: building the batch (PaddedBatches), the forward pass,
   forward + backward (GradientTape, no update), the whole training step (``train_step``,
   traced). Lengths are interleaved round by round and the median and minimum over rounds are
   reported. (Before stop 35 the step was ``train_on_batch``, whose slow steps, about 2.55 s
   against 1.7 at 32 x 128, were its tf.data iterator's wait: RESULTS.md §4.)
3. micro-batches: a whole training step (xtune's trainer, traced once) on real random batches at
   max_len 256, whole and cut into 2, 4 and 8 micro-batches, interleaved batch by batch.
4. XLA: ``jit_compile=True`` against the same model without it, steps alternated between the
   two models (same machine state for both), plus the compile time of the first step; every new
   batch shape compiles again.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

ENCODER = os.path.join("checkpoints", "all-MiniLM-L6-v2")
MICRO_BATCHES = (2, 4, 8)  # train.micro_batches counted in part 1
HEADS = [{"type": "cls"}, {"type": "mlp", "units": [common.HEAD_UNITS], "dropout": common.HEAD_DROPOUT}]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join("bench", "out", "peers", "data", "r8-1000-200-800-seed0"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lengths", default="32,64,96,128")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--xla-steps", type=int, default=10)
    p.add_argument("--out", default=os.path.join("bench", "out", "peers", "profile.json"))
    p.add_argument("--micro-rounds", type=int, default=6, help="batches timed in the micro part")
    p.add_argument("--parts", default="tokens,steps,micro,xla", help="which parts to run")
    return p.parse_args(argv)


def padded_tokens(token_ids, batch_size):
    from xtune_keras.data.batches import PaddedBatches

    segs = [[0] * len(t) for t in token_ids]
    random = [PaddedBatches(token_ids, segs, None, batch_size, shuffle=True, seed=s).padded_tokens()
              for s in range(5)]
    grouped = [PaddedBatches(token_ids, segs, None, batch_size, shuffle=True, seed=s,
                             group_by_length=True).padded_tokens() for s in range(5)]
    floor = PaddedBatches(token_ids, segs, None, batch_size, by_length=True).padded_tokens()
    labels = [[0]] * len(token_ids)  # micro-batches split labelled (training) batches
    micro = {k: statistics.mean(PaddedBatches(token_ids, segs, labels, batch_size, shuffle=True, seed=s,
                                              micro_batches=k).padded_tokens() for s in range(5))
             for k in MICRO_BATCHES}
    return {"real": int(sum(len(t) for t in token_ids)), "random": statistics.mean(random),
            "grouped": statistics.mean(grouped), "sorted_floor": floor, "micro_batches": micro}


def token_counts(args):
    from bert4keras.tokenizers import Tokenizer

    splits, _ = common.read_data(args.data)
    tokenizer = Tokenizer(os.path.join(ENCODER, "vocab.txt"), do_lower_case=True)
    texts = splits["train"][0]
    return {max_len: padded_tokens([tokenizer.encode(t, maxlen=max_len)[0] for t in texts], args.batch_size)
            for max_len in (128, 256)}


def build(jit_compile=False):
    from bert4keras.backend import keras
    from xtune_keras.model.losses import build_loss
    from xtune_keras.model.classifier import build_classifier
    from xtune_keras.train.optimizers import build_optimizer

    keras.utils.set_random_seed(0)
    model = build_classifier(os.path.join(ENCODER, "bert_config.json"), os.path.join(ENCODER, "bert_model.ckpt"),
                             8, HEADS)
    model.compile(optimizer=build_optimizer("adam", 1e-4), loss=build_loss("ce"), jit_compile=jit_compile)
    return model


def batch_of(batch_size, length, seed=0):
    import numpy as np
    from xtune_keras.data.batches import PaddedBatches

    rng = np.random.default_rng(seed)
    ids = [[101] + rng.integers(1000, 30000, length - 2).tolist() + [102] for _ in range(batch_size)]
    labels = np.eye(8, dtype=np.float32)[rng.integers(0, 8, batch_size)]
    return PaddedBatches(ids, [[0] * length] * batch_size, labels, batch_size)


def stepper(model, jit_compile=False):
    """``step(x, y)``: the model's ``train_step`` traced once (with XLA if asked), waiting for the
    loss. Not ``train_on_batch``: it builds a tf.data iterator per call and often returns only at
    the iterator's autotuning wake-up, 10 ms x (2^k - 1) after the call began (RESULTS.md §4)."""
    import tensorflow as tf

    step = tf.function(model.train_step, jit_compile=jit_compile, reduce_retracing=True)
    return lambda x, y: float(step((x, y))["loss"])


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_parts(args):
    import tensorflow as tf

    model = build()
    loss_fn = model.loss
    lengths = [int(n) for n in args.lengths.split(",")]
    batches = {n: batch_of(args.batch_size, n) for n in lengths}

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
        return tape.gradient(loss, model.trainable_variables)  # returned: else the graph prunes them

    forward_backward = tf.function(forward_backward, reduce_retracing=True)
    forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
    train_step = stepper(model)
    parts = {n: {"build batch": [], "forward": [], "forward+backward": [], "train step": []} for n in lengths}
    for n in lengths:  # trace every function at every shape once, untimed
        x, y = batches[n][0]
        forward(x), forward_backward(x, y), train_step(x, y)
    for _ in range(args.rounds):
        for n in lengths:
            x, y = batches[n][0]
            parts[n]["build batch"].append(timed(lambda: batches[n][0]))
            parts[n]["forward"].append(timed(lambda: forward(x)[0, 0].numpy()))
            parts[n]["forward+backward"].append(timed(lambda: forward_backward(x, y)))
            parts[n]["train step"].append(timed(lambda: train_step(x, y)))
    return {n: {part: {"median": statistics.median(t), "min": min(t)} for part, t in p.items()}
            for n, p in parts.items()}


def micro_steps(args):
    """One training step (trainer.train_step, traced once) on real random batches at max_len 256,
    whole and cut into k micro-batches, interleaved round by round."""
    import numpy as np
    import tensorflow as tf
    from bert4keras.tokenizers import Tokenizer
    from xtune_keras.train.adversarial import build_trainer
    from xtune_keras.data.batches import PaddedBatches
    from xtune_keras.model.losses import build_loss
    from xtune_keras.train.optimizers import build_optimizer

    splits, _ = common.read_data(args.data)
    tokenizer = Tokenizer(os.path.join(ENCODER, "vocab.txt"), do_lower_case=True)
    ids = [tokenizer.encode(t, maxlen=256)[0] for t in splits["train"][0][:args.batch_size * args.micro_rounds]]
    labels = np.eye(8, dtype=np.float32)[np.arange(len(ids)) % 8]
    counts = [1] + list(MICRO_BATCHES)
    steps, batches = {}, {}
    for k in counts:
        trainer = build_trainer(build(), micro_batches=max(k, 2))  # k=1: the trainer on whole batches
        trainer.compile(optimizer=build_optimizer("adam", 1e-4), loss=build_loss("ce"))
        batches[k] = PaddedBatches(ids, [[0] * len(t) for t in ids], labels, args.batch_size, micro_batches=k)
        # Every dimension unknown, as in Keras's fit on a Sequence: one trace for all part shapes.
        spec = tf.nest.map_structure(lambda a: tf.TensorSpec([None] * a.ndim, tf.as_dtype(a.dtype)),
                                     batches[k][0])
        steps[k] = tf.function(trainer.train_step, input_signature=[spec])
        steps[k](batches[k][0])  # trace, untimed
    times = {k: [] for k in counts}
    for i in range(len(batches[1])):  # the same examples in every column
        for k in counts:
            data = batches[k][i]
            times[k].append(timed(lambda: [float(v) for v in steps[k](data).values()]))
    return {str(k): {"median": statistics.median(t), "min": min(t)} for k, t in times.items()}


def xla(args):
    length = max(int(n) for n in args.lengths.split(","))
    x, y = batch_of(args.batch_size, length)[0]
    steps = {"plain": stepper(build(False)), "xla": stepper(build(True), jit_compile=True)}
    first = {kind: timed(lambda: step(x, y)) for kind, step in steps.items()}
    times = {"plain": [], "xla": []}
    for _ in range(args.xla_steps):
        for kind, step in steps.items():
            times[kind].append(timed(lambda: step(x, y)))
    return {"length": length, "first_step_s": first,
            "median_s": {k: statistics.median(v) for k, v in times.items()},
            "min_s": {k: min(v) for k, v in times.items()}}


def markdown(result, args):
    lines = []
    if "tokens" in result:
        lines += token_table(result["tokens"], args)
    if "parts" in result:
        lines += step_table(result["parts"], args)
    if "micro" in result:
        lines += micro_table(result["micro"], args)
    if "xla" in result:
        lines += xla_table(result["xla"], args)
    return "\n".join(lines)


def micro_table(micro, args):
    lines = ["### A training step on %d real random batches of %d at max_len 256, cut into k micro-batches "
             "(seconds: median / min)" % (args.micro_rounds, args.batch_size), "",
             "| k | step | whole batch / this |", "| ---: | ---: | ---: |"]
    for k, t in micro.items():
        lines.append("| %s | %.3f / %.3f | %.2fx |" % (k, t["median"], t["min"], micro["1"]["median"] / t["median"]))
    return lines + [""]


def token_table(tokens, args):
    micro = " | ".join("micro-batches %s" % k for k in MICRO_BATCHES)
    lines = ["### Padded tokens of one training epoch (%s, batch %d)" % (args.data, args.batch_size), "",
             "| max_len | real tokens | random batches | grouped by length (pools of 50) | whole epoch sorted "
             "| random / grouped | %s |" % micro,
             "| ---: | ---: | ---: | ---: | ---: | ---: |%s" % (" ---: |" * len(MICRO_BATCHES))]
    for max_len, c in tokens.items():
        split = " | ".join("%.0f (%.2fx)" % (c["micro_batches"][str(k)], c["random"] / c["micro_batches"][str(k)])
                           for k in MICRO_BATCHES)
        lines.append("| %s | %d | %.0f | %.0f | %d | %.2fx | %s |" % (
            max_len, c["real"], c["random"], c["grouped"], c["sorted_floor"], c["random"] / c["grouped"], split))
    return lines + [""]


def step_table(parts, args):
    lines = ["### Parts of a step, batch %d (seconds over %d interleaved rounds: median / min)"
             % (args.batch_size, args.rounds), "",
             "| padded length | build batch | forward | forward+backward | train step | train step per 1k tokens |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n, p in parts.items():
        cells = ["%.4f / %.4f" % (p[k]["median"], p[k]["min"]) for k in
                 ("build batch", "forward", "forward+backward", "train step")]
        per_k = p["train step"]["median"] / (args.batch_size * int(n)) * 1000
        lines.append("| %s | %s | %.3f |" % (n, " | ".join(cells), per_k))
    return lines + [""]


def xla_table(x, args):
    lines = ["### XLA at 32 x %d (%d alternated steps)" % (x["length"], args.xla_steps), "",
             "| | first step (trace/compile) s | median step s | min step s |", "| --- | ---: | ---: | ---: |"]
    for k in ("plain", "xla"):
        lines.append("| %s | %.2f | %.3f | %.3f |" % (k, x["first_step_s"][k], x["median_s"][k], x["min_s"][k]))
    return lines


def main(argv=None):
    args = parse(argv)
    from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
    run = {"tokens": token_counts, "steps": step_parts, "micro": micro_steps, "xla": xla}
    names = {"tokens": "tokens", "steps": "parts", "micro": "micro", "xla": "xla"}  # JSON keys as before
    result = {names[part]: run[part](args) for part in args.parts.split(",")}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(markdown(json.loads(json.dumps(result)), args))


if __name__ == "__main__":
    main()
