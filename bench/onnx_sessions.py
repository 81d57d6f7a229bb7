"""Whether one ONNX Runtime session of two threads leaves a core idle: the int8 (or float32) ONNX
folder over the texts in batches of 64 (input order, each padded to its longest, as
``export_throughput.py``'s (b)), one two-thread session against two one-thread sessions that each
take half of every batch at the same time (``session.run`` releases the GIL).

    .venv/bin/python bench/onnx_sessions.py bench/out/demo_export_onnx_int8 [--data data/reuters-r8/test.csv]
        [--repeats 5]

Rows: one session; two sessions on the halves as they are; each half cut to its own longest text;
sorted by length before halving (this one drops padding the Keras peer keeps: not a fair row).
Prints the CPU, the padding share, each row's largest logit difference from the first (dynamic
int8 quantization scales by the whole batch, so halves get other scales) and the pass times.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xtune_keras import compat  # noqa: E402,F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from export_throughput import padded_batches, padding_share  # noqa: E402

from xtune_keras.cpu import machine_description  # noqa: E402
from xtune_keras.export.onnx import MODEL_FILE, SLOW_FUSIONS, read_onnx_export  # noqa: E402
from xtune_keras.inference import read_examples  # noqa: E402


def session(folder, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(os.path.join(folder, MODEL_FILE), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=SLOW_FUSIONS)


def run(one_session, ids, segments):
    return one_session.run(["logits"], {"token_ids": ids, "segment_ids": segments})[0]


def trimmed(ids, segments):
    longest = max(int((ids != 0).sum(axis=1).max()), 1)
    return ids[:, :longest], segments[:, :longest]


def on_halves(sessions, pool, ids, segments, sort, trim):
    order = np.argsort(-(ids != 0).sum(axis=1), kind="stable") if sort else np.arange(len(ids))
    parts = np.array_split(order, len(sessions))
    futures = [pool.submit(run, s, *(trimmed(ids[p], segments[p]) if trim else (ids[p], segments[p])))
               for s, p in zip(sessions, parts)]
    logits = [f.result() for f in futures]
    out = np.empty((len(ids), logits[0].shape[1]), np.float32)
    for part, values in zip(parts, logits):
        out[part] = values
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--data", default="data/reuters-r8/test.csv")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    meta, token_dict = read_onnx_export(args.folder)
    padded = padded_batches(meta, token_dict, read_examples(meta, args.data, with_labels=True))
    print("%s; %s; %d token slots, %.1f%% padding" % (machine_description(), args.folder,
                                                        sum(ids.size for ids, _ in padded),
                                                        100.0 * padding_share(padded)))
    two_threads, one_thread_each, pool = session(args.folder, 2), [session(args.folder, 1) for _ in range(2)], \
        ThreadPoolExecutor(2)
    rows = {
        "one session, 2 threads": lambda b: run(two_threads, *b),
        "two sessions x 1 thread, halves untrimmed": lambda b: on_halves(one_thread_each, pool, *b, False, False),
        "two sessions x 1 thread, halves": lambda b: on_halves(one_thread_each, pool, *b, False, True),
        "two sessions x 1 thread, sorted halves": lambda b: on_halves(one_thread_each, pool, *b, True, True),
    }
    reference = np.concatenate([run(two_threads, *b) for b in padded])  # also the warm-up
    for name, predict in rows.items():
        difference = np.abs(np.concatenate([predict(b) for b in padded]) - reference).max()
        print("%s: max |logit difference| from the first row %.2e" % (name, difference))
    times = {name: [] for name in rows}
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the VM hits every row
        for name, predict in rows.items():
            start = time.perf_counter()
            for batch in padded:
                predict(batch)
            times[name].append(time.perf_counter() - start)
    first = np.median(times["one session, 2 threads"])
    for name, values in times.items():
        print("%-42s median %.2f s (%.2f of the first), fastest %.2f s" % (name, np.median(values),
                                                                          np.median(values) / first, min(values)))


if __name__ == "__main__":
    main()
