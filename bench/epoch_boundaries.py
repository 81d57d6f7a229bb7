"""Where a training run's time goes outside its steps, with tf.data's autotuning thread on the
datasets Keras builds (Keras's default) and off (xtune's default since this bench), in one run.

    .venv/bin/python bench/epoch_boundaries.py [--train 480] [--valid 200] [--test 200]
        [--epochs 2] [--rounds 2] [--override key=value ...]

Runs ``xtune train experiments/demo_reuters_r8_minilm.yaml`` (``FineTuneRecipe``, the demo's
settings: MiniLM, max_len 128, batch 32, micro-batches 4) on the first ``--train`` / ``--valid`` /
``--test`` rows of the demo's R8 splits, ``--epochs`` epochs without early stopping, once per
setting of ``xtune_keras.compat.TF_DATA_AUTOTUNE`` in each round (ABBA order). Each run is timed
from start to end and cut by Keras's epoch hooks into: the steps (epoch begin to epoch end), the
epoch boundaries (an epoch's end to the next one's begin: validation pass, checkpoint, and the
deletion of the epoch's iterator), and the tail (the last epoch's end to the run's end: the same,
then the test pass). Prints the CPU, each run's parts, and the median of each part per setting.
"""
import argparse
import os
import statistics
import tempfile
import time

from xtune_keras import compat  # noqa: E402  (first: TensorFlow with the bert4keras repairs)
import pandas as pd  # noqa: E402
from bert4keras.backend import keras  # noqa: E402

from xtune_keras.cpu import machine_description  # noqa: E402
from xtune_keras.recipes.finetune import FineTuneRecipe  # noqa: E402
from xtune_keras.schema import load_config  # noqa: E402

EXPERIMENT = os.path.join("experiments", "demo_reuters_r8_minilm.yaml")
SETTINGS = {"autotune on (Keras default)": True, "autotune off (xtune)": False}


class EpochStamps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begins, self.ends = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.begins.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


class Stamper:
    """The recipe hook: EpochStamps first in the callback list, before validation and checkpoint."""

    def __init__(self):
        self.stamps = EpochStamps()

    def callbacks(self, recipe):
        return [self.stamps]


def subsets(out, sizes):
    """The first rows of each demo split, as CSVs in ``out``; the overrides that point at them."""
    overrides = []
    for part, rows in sizes.items():
        path = os.path.join(out, "%s.csv" % part)
        pd.read_csv(os.path.join("data", "reuters-r8", "%s.csv" % part)).head(rows).to_csv(path, index=False)
        overrides.append("data.%s=%s" % (part, path))
    return overrides


def timed_run(config):
    """{part: seconds} of one ``FineTuneRecipe`` run."""
    stamper = Stamper()
    start = time.perf_counter()
    FineTuneRecipe(config, echo=False, hooks=[stamper]).run(force=True)
    end = time.perf_counter()
    begins, ends = stamper.stamps.begins, stamper.stamps.ends
    return {
        "run": end - start,
        "before the first epoch": begins[0] - start,
        "steps": sum(e - b for b, e in zip(begins, ends)),
        "epoch boundaries": sum(b - e for e, b in zip(ends, begins[1:])),
        "tail": end - ends[-1],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=480)
    parser.add_argument("--valid", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--override", action="append", default=[], help="one more key=value for the config")
    args = parser.parse_args()
    print(machine_description())
    results = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as out:
        overrides = subsets(out, {"train": args.train, "valid": args.valid, "test": args.test}) + [
            "train.epochs=%d" % args.epochs, "train.patience=%d" % (args.epochs + 1),
            "output.runs_dir=%s" % os.path.join(out, "runs"), "output.h5=%s" % os.path.join(out, "model.h5"),
            "output.tensorboard=false", "data.cache=false"] + args.override
        config = load_config(EXPERIMENT, overrides)
        for round_ in range(args.rounds):
            names = list(SETTINGS) if round_ % 2 == 0 else list(SETTINGS)[::-1]
            for name in names:
                compat.TF_DATA_AUTOTUNE = SETTINGS[name]
                parts = timed_run(config)
                results[name].append(parts)
                print("round %d, %s: %s" % (round_, name, ", ".join("%s %.2f s" % kv for kv in parts.items())),
                      flush=True)
    print("| setting | runs | " + " | ".join("%s s (median)" % part for part in results[names[0]][0]) + " |")
    print("| --- | ---: |" + " ---: |" * len(results[names[0]][0]))
    for name, runs in results.items():
        print("| %s | %d | %s |" % (name, len(runs), " | ".join(
            "%.2f" % statistics.median(run[part] for run in runs) for part in runs[0])))


if __name__ == "__main__":
    main()
