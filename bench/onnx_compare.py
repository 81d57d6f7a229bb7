"""Two ONNX folders of one model, timed in alternating passes over the same batches: for a change to
the export, the folder written before it against the one written after, in one run.

    .venv/bin/python bench/onnx_compare.py BEFORE_DIR AFTER_DIR [--data data/reuters-r8/test.csv]
        [--repeats 8]

The texts in batches of 64 in input order, each padded to its longest (``export_throughput.py``'s
(b)); one two-thread session per folder, one untimed warm-up batch each, then ``--repeats`` rounds
of one pass per folder (the order swapped every round, so a slow spell of the machine hits both).
Prints the CPU, the padding share of the token slots, the median and fastest pass of each folder,
their ratio, and how far the two folders' logits and decisions are apart.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xtune_keras import compat  # noqa: E402,F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np  # noqa: E402
from export_throughput import padded_batches, padding_share  # noqa: E402

from xtune_keras.cpu import machine_description  # noqa: E402
from xtune_keras.export.onnx import onnx_logits, read_onnx_export  # noqa: E402
from xtune_keras.inference import probabilities, read_examples  # noqa: E402
from xtune_keras.train.metrics import decide  # noqa: E402


def timed_pass(logits, padded):
    start = time.perf_counter()
    out = np.concatenate([logits(*batch) for batch in padded])
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--data", default="data/reuters-r8/test.csv")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()

    print(machine_description())
    meta, token_dict = read_onnx_export(args.after)
    padded = padded_batches(meta, token_dict, read_examples(meta, args.data, with_labels=False))
    print("%d texts, %d batches, %.1f%% of the token slots are padding"
          % (sum(len(ids) for ids, _ in padded), len(padded), 100.0 * padding_share(padded)))
    folders = {"before": onnx_logits(args.before), "after": onnx_logits(args.after)}
    times, outputs = {name: [] for name in folders}, {}
    for logits in folders.values():
        logits(*padded[0])  # warm-up
    for round_ in range(args.repeats):
        for name in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
            seconds, outputs[name] = timed_pass(folders[name], padded)
            times[name].append(seconds)
    for name, folder in (("before", args.before), ("after", args.after)):
        print("%-6s %s: median %.2f s, fastest %.2f s over %d passes (%s)"
              % (name, folder, np.median(times[name]), min(times[name]), len(times[name]),
                 " ".join("%.2f" % t for t in times[name])))
    print("after / before: median %.3f, fastest %.3f"
          % (np.median(times["after"]) / np.median(times["before"]), min(times["after"]) / min(times["before"])))
    difference = np.abs(outputs["after"] - outputs["before"]).max()
    decided = {name: decide(probabilities(meta, logits), meta["multi_label"], meta["threshold"])
               for name, logits in outputs.items()}
    agree = int((decided["after"] == decided["before"]).all(axis=1).sum())
    print("logits: largest difference %.3g; decisions (the model's thresholds) equal on %d of %d texts"
          % (difference, agree, len(outputs["after"])))


if __name__ == "__main__":
    main()
