"""Shared by the three sides of the peer benchmark; pure Python (no TensorFlow, no torch), so the
TF venv (.venv) and the Hugging Face venv (bench/out/venv-hf) both import it.

* the side's command line (one set of knobs for all three);
* reading the CSVs exactly as xtune does (whitespace collapsed, label stripped, sorted names);
* ``StepClock``: what is timed (see its docstring);
* the summary JSON and the predictions CSV every side writes.
"""
import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import time

# The task every side trains (see README.md, "Fairness"): single-label, softmax cross-entropy.
HEAD_UNITS = 256
HEAD_DROPOUT = 0.1
WARMUP_STEPS = 3  # steps of epoch 1 left out of the "after warm-up" throughput


def side_arguments(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", required=True, help="folder with train.csv, valid.csv, test.csv")
    p.add_argument("--out", required=True, help="folder for summary.json and predictions.csv")
    p.add_argument("--encoder", default=None, help="Google-format folder (TF sides) or HF BertModel folder")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="intra-op threads (TF intra_op_parallelism / torch.set_num_threads)")
    return p


def clean_text(value):
    """A cell as xtune's data.py reads it: stripped, runs of whitespace collapsed to one space."""
    return " ".join(str(value or "").split())


def read_split(path):
    """``(texts, labels)`` of one CSV with columns text,label (one label a row)."""
    texts, labels = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            texts.append(clean_text(row["text"]))
            labels.append(str(row["label"]).strip())
    return texts, labels


def read_data(folder):
    """``{split: (texts, labels)}`` and the sorted label names (xtune's LabelVocab order)."""
    splits = {name: read_split(os.path.join(folder, name + ".csv")) for name in ("train", "valid", "test")}
    names = sorted({label for _, labels in splits.values() for label in labels})
    return splits, names


def ids_digest(token_ids):
    """sha1 of the unpadded token id lists, to check that every side feeds the same ids."""
    h = hashlib.sha1()
    for ids in token_ids:
        h.update((",".join(str(int(i)) for i in ids) + ";").encode("ascii"))
    return h.hexdigest()[:16]


def keras_timer(keras, clock):
    """A Keras callback class feeding ``clock`` (a StepClock) from fit's hooks; ``keras`` is passed
    in because this module imports no TensorFlow (the HF venv uses it too)."""

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            clock.epoch_begin()

        def on_train_batch_end(self, batch, logs=None):
            clock.step_end()

        def on_epoch_end(self, epoch, logs=None):
            clock.epoch_end()

    return Timer


class StepClock:
    """Wall-clock of training only.

    An epoch is timed from the framework's epoch-begin hook to its epoch-end hook, called before
    anything else the side does at epoch end (validation, checkpoints, logging). So it covers the
    training steps and the feeding of their batches (shuffling, per-batch padding, tensor
    conversion) and nothing else: no start-up, model building, tokenizing, validation or test.
    The end of every step is stamped too, for the "after warm-up" rate (epoch 1 without its first
    ``WARMUP_STEPS`` steps, which include graph tracing / first-call allocation).
    """

    def __init__(self):
        self.epochs = []  # [{"begin", "end", "step_ends": [...]}]

    def epoch_begin(self):
        self.epochs.append({"begin": time.perf_counter(), "end": None, "step_ends": []})

    def step_end(self):
        if self.epochs:
            self.epochs[-1]["step_ends"].append(time.perf_counter())

    def epoch_end(self):
        if self.epochs and self.epochs[-1]["end"] is None:
            self.epochs[-1]["end"] = time.perf_counter()

    def summary(self, train_size, batch_size):
        per_epoch, steady_seconds, steady_examples, steps = [], 0.0, 0, []
        for i, e in enumerate(self.epochs):
            seconds = e["end"] - e["begin"]
            per_epoch.append(round(seconds, 4))
            steps.append(len(e["step_ends"]))
            if i == 0 and len(e["step_ends"]) > WARMUP_STEPS:
                steady_seconds += e["end"] - e["step_ends"][WARMUP_STEPS - 1]
                steady_examples += train_size - WARMUP_STEPS * batch_size
            elif i > 0:
                steady_seconds += seconds
                steady_examples += train_size
        total = sum(per_epoch)
        return {
            "epoch_seconds": per_epoch,
            "steps_per_epoch": steps,
            "train_seconds": round(total, 4),
            "train_examples": train_size * len(self.epochs),
            "examples_per_s": round(train_size * len(self.epochs) / total, 3) if total else None,
            "steady_seconds": round(steady_seconds, 4),
            "steady_examples": steady_examples,
            "steady_examples_per_s": round(steady_examples / steady_seconds, 3) if steady_seconds else None,
            "mean_step_seconds": round(total / max(sum(steps), 1), 4),
        }


class ShapeLog:
    """(batch, padded length) of every training batch as the side's batcher builds it; a batch
    cut into micro-batches (xtune's train.micro_batches) logs one shape per part."""

    def __init__(self):
        self.steps = []  # ([(batch, length), ...], time) per training batch
        self.recording = True

    def add(self, batch, length):
        self.add_parts([(batch, length)])

    def add_parts(self, parts):
        if self.recording:
            self.steps.append(([(int(b), int(n)) for b, n in parts], time.perf_counter()))

    def in_window(self, clock):
        """Per batch, the part shapes built while training ran (between the first epoch's begin
        and the last epoch's end): the batches that were trained on, give or take a prefetched
        one (the consumer of this list checks the count against the steps run)."""
        if not clock.epochs:
            return []
        start, end = clock.epochs[0]["begin"], clock.epochs[-1]["end"]
        return [parts for parts, t in self.steps if start <= t <= end]

    def summary(self, clock):
        """``batch_shapes`` (every part's shape) and ``logged_steps`` of the batches trained on
        while the clock ran, for a side's summary.json."""
        return self._fields(self.in_window(clock))

    def first(self, count=None):
        """The same fields for the first ``count`` batches logged (all of them when None)."""
        return self._fields([parts for parts, _ in self.steps[:count]])

    @staticmethod
    def _fields(steps):
        return {"batch_shapes": [list(shape) for parts in steps for shape in parts], "logged_steps": len(steps)}


def write_predictions(path, names, pred_index):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "pred"])
        for row, j in enumerate(pred_index, start=1):
            w.writerow([row, names[int(j)]])


def write_summary(out, summary):
    summary = dict(summary, python=sys.version.split()[0], platform=platform.platform(),
                   cpu_count=os.cpu_count())
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
        f.write("\n")
