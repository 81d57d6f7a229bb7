"""Peer benchmark, xtune side: ``xtune train experiments/demo_reuters_r8_minilm.yaml <overrides>``.

Runs what ``xtune train`` runs (``FineTuneRecipe(config).run(force=True)``) in this process, with
one hook (the recipes' public observation API, see ``recipes/base.py``) and nothing else changed:

* ``callbacks``: a timing callback first in the callback list (its epoch-end hook runs before
  xtune's validation pass, checkpoint and logger: only training is timed, see common.StepClock);
* ``after_setup_data``: the token ids' digests, and the training batches wrapped in a recorder of
  each batch's padded shape;
* ``after_evaluate``: the test logits, which the recipe computes on the final weights
  (``train.restore_best=false``) and scores itself; they become predictions.csv for the scorer.

The overrides that make the run identical to the two peers are in ``OVERRIDES`` below.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

EXPERIMENT = os.path.join("experiments", "demo_reuters_r8_minilm.yaml")


def overrides(args):
    data = args.data
    return [
        "data.train=%s" % os.path.join(data, "train.csv"),
        "data.valid=%s" % os.path.join(data, "valid.csv"),
        "data.test=%s" % os.path.join(data, "test.csv"),
        "data.multi_label=false",  # single-label task (one label a row): softmax over 8 classes
        "model.loss=ce",
        "data.max_len=%d" % args.max_len,
        "data.cache=false",  # tokenize in the run, like the peers (it is not timed either way)
        "encoder.dir=%s" % args.encoder,
        "train.lr=%r" % args.lr,
        "train.batch_size=%d" % args.batch_size,
        "train.epochs=%d" % args.epochs,
        "train.patience=%d" % (args.epochs + 1),  # never stops early: every system runs all epochs
        "train.restore_best=false",  # test on the final epoch's weights, as the peers
        "seed=%d" % args.seed,
        "output.runs_dir=%s" % os.path.join(args.out, "runs"),
        "output.h5=%s" % os.path.join(args.out, "xtune.h5"),
        "output.tensorboard=false",
    ] + list(args.xtune_override or [])


def batching(train):
    """How the xtune side pads, in words, for the report's batching column."""
    words = ("per batch, grouped by length (train.group_by_length, pools of %d batches)" % train["length_pool"]
             if train["group_by_length"] else "per batch")
    if train["micro_batches"] > 1:
        words += ", each cut by length into %d micro-batches (train.micro_batches)" % train["micro_batches"]
    return words


def main(argv=None):
    p = common.side_arguments(__doc__.split("\n")[0])
    p.add_argument("--xtune-override", action="append", default=[],
                   help="one more key=value for xtune train (repeatable), e.g. train.deterministic=false")
    args = p.parse_args(argv)
    args.encoder = args.encoder or os.path.join("checkpoints", "all-MiniLM-L6-v2")
    os.makedirs(args.out, exist_ok=True)

    from xtune_keras import __version__ as xtune_version
    from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
    import numpy as np
    import tensorflow as tf
    from bert4keras.backend import keras

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from xtune_keras.recipes.finetune import FineTuneRecipe
    from xtune_keras.schema import load_config

    clock, shapes, seen = common.StepClock(), common.ShapeLog(), {}
    Timer = common.keras_timer(keras, clock)

    class ShapeRecorder(keras.utils.Sequence):
        """The training batches, unchanged, with each batch's padded shape recorded."""

        def __init__(self, batches):
            super().__init__()
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            batch = self.batches[index]
            parts = batch[0] if isinstance(batch[0], tuple) else (batch[0],)  # train.micro_batches
            shapes.add_parts([part["Input-Token"].shape for part in parts if len(part["Input-Token"])])
            return batch

        def on_epoch_end(self):
            self.batches.on_epoch_end()

    class Observer:
        def callbacks(self, recipe):
            return [Timer()]

        def after_setup_data(self, recipe):
            encoded = recipe.prepared["encoded"]
            seen["digests"] = {name: common.ids_digest(ids) for name, (ids, _) in encoded.items()}
            seen["sizes"] = {name: len(ids) for name, (ids, _) in encoded.items()}
            recipe.batches["train"] = ShapeRecorder(recipe.batches["train"])

        def after_evaluate(self, recipe):
            seen["last_logits"] = np.asarray(recipe.logits["test"])

    config = load_config(EXPERIMENT, overrides(args))
    argv_train = ["train", EXPERIMENT] + overrides(args) + ["--force"]
    result = FineTuneRecipe(config, hooks=[Observer()]).run(force=True)
    run_dir = result["run_dir"]
    with open(os.path.join(run_dir, "labels.json"), encoding="utf-8") as f:
        names = json.load(f)["labels"]
    test_logits = seen["last_logits"]
    common.write_predictions(os.path.join(args.out, "predictions.csv"), names, test_logits.argmax(-1))

    timing = clock.summary(seen["sizes"]["train"], args.batch_size)
    common.write_summary(args.out, {
        "system": "xtune",
        "batching": batching(config["train"]),
        "command": "xtune " + " ".join(argv_train),
        "timing": timing,
        **shapes.summary(clock),
        "steps_run": sum(timing["steps_per_epoch"]),
        "token_digests": seen["digests"],
        "labels": names,
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "TF default (0)"},
        "versions": {"tensorflow": tf.__version__, "xtune_keras": xtune_version},
        "deterministic_ops": config["train"]["deterministic"],
        "own_test_metrics": result.get("test"),
        "valid_per_epoch": _valid_log(os.path.join(run_dir, "metrics.jsonl")),
    })
    print("xtune side: %s" % json.dumps(timing))


def _valid_log(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows.append({k: row.get(k) for k in ("epoch", "loss", "val_loss", "val_acc", "val_macro_f1")})
    return rows


if __name__ == "__main__":
    main()
