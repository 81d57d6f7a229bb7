"""Inference throughput of the exported SavedModel against the Keras .h5 path, on the same texts.

    .venv/bin/python bench/export_throughput.py [--model checkpoints/demo_reuters_r8_minilm.h5]
        [--data data/reuters-r8/test.csv] [--export-dir bench/out/demo_export] [--repeats 3]

Rows (all on the same texts, batches of 64):
  (a) SavedModel ``serving_default`` on raw text (tokenizer and truncation in the graph);
  (b) Keras ``model.predict`` in a Python loop over batches tokenized beforehand (bert4keras,
      not timed);
  (c) ``xtune predict MODEL.h5`` end to end in a subprocess (start-up, reading, tokenizing, writing);
  (d) ``xtune predict EXPORT_DIR`` end to end in a subprocess.
(a) and (b) report the median of ``--repeats`` passes after one untimed warm-up batch (tracing).
Prints a Markdown table, then how far (a)'s probabilities are from (b)'s.
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np
import tensorflow as tf
from bert4keras.snippets import sequence_padding
from bert4keras.tokenizers import Tokenizer

from xtune_keras.export.savedmodel import export_model, raw_texts, require_tensorflow_text
from xtune_keras.inference import read_examples
from xtune_keras.model.modelfile import load_model_file
from xtune_keras.data.truncation import encode_examples

BATCH = 64


def batches(items, size=BATCH):
    return [items[i:i + size] for i in range(0, len(items), size)]


def median_pass_seconds(run_pass, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_pass()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def saved_model_pass(directory, text1, text2, repeats):
    """(seconds, probabilities) of serving_default over all texts in batches of 64."""
    require_tensorflow_text()
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    pairs = list(zip(batches(text1), batches(text2)))
    serve(text1=tf.constant(pairs[0][0]), text2=tf.constant(pairs[0][1]))  # warm-up

    def run():
        return np.concatenate([serve(text1=tf.constant(a), text2=tf.constant(b))["probabilities"].numpy()
                               for a, b in pairs])

    return median_pass_seconds(run, repeats), run()


def keras_pass(model, meta, token_dict, examples, repeats):
    """(seconds, probabilities) of model.predict over batches tokenized beforehand."""
    tokenizer = Tokenizer(token_dict, do_lower_case=meta["lowercase"])
    ids, segments = encode_examples(tokenizer, examples, meta["max_len"], meta["truncation"], meta["head_ratio"])
    padded = [[sequence_padding(i).astype(np.int32), sequence_padding(s).astype(np.int32)]
              for i, s in zip(batches(ids), batches(segments))]
    model.predict(padded[0], verbose=0)  # warm-up

    def run():
        return np.concatenate([model.predict(batch, verbose=0) for batch in padded])

    logits = run()
    probs = 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))
    return median_pass_seconds(run, repeats), probs


def cli_seconds(model_path, data_path):
    """Wall time of one `xtune predict` process, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "xtune_keras.cli", "predict", model_path, data_path,
                               "-o", os.path.join(tmp, "pred.csv")], capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr)
    return seconds


def row(name, count, seconds, note):
    return "| %s | %d | %.2f | %.1f | %s |" % (name, count, seconds, count / seconds, note)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/demo_reuters_r8_minilm.h5")
    parser.add_argument("--data", default="data/reuters-r8/test.csv")
    parser.add_argument("--export-dir", default="bench/out/demo_export")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    export_model(args.model, args.export_dir)
    export_seconds = time.perf_counter() - start
    model, meta, token_dict = load_model_file(args.model)
    if meta["activation"] != "sigmoid":
        sys.exit("this benchmark compares sigmoid models (the demo model)")
    examples = read_examples(meta, args.data, with_labels=False)
    text1, text2 = raw_texts(meta, args.data)
    count = len(examples)

    a_seconds, a_probs = saved_model_pass(args.export_dir, text1, text2, args.repeats)
    b_seconds, b_probs = keras_pass(model, meta, token_dict, examples, args.repeats)
    c_seconds = cli_seconds(args.model, args.data)
    d_seconds = cli_seconds(args.export_dir, args.data)

    print("%s, %d CPU cores, TensorFlow %s, model %s (max_len %d, %s truncation), %d texts from %s, "
          "load average %.2f" % (platform.processor() or platform.machine(), os.cpu_count(), tf.__version__,
                                 os.path.basename(args.model), meta["max_len"], meta["truncation"], count,
                                 args.data, os.getloadavg()[0]))
    print()
    print("| path | texts | seconds | texts/s | what is timed |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(row("(a) SavedModel `serving_default`, raw text", count, a_seconds,
              "batches of %d; tokenizer + truncation in the graph; median of %d" % (BATCH, args.repeats)))
    print(row("(b) Keras `model.predict` loop, pre-tokenized", count, b_seconds,
              "batches of %d; bert4keras tokenizing not timed; median of %d" % (BATCH, args.repeats)))
    print(row("(c) `xtune predict MODEL.h5`", count, c_seconds, "one process, start-up to CSV written"))
    print(row("(d) `xtune predict EXPORT_DIR`", count, d_seconds, "one process, start-up to CSV written"))
    print()
    threshold = np.asarray(meta["threshold"])
    decisions_equal = np.array_equal(a_probs > threshold, b_probs > threshold)
    print("(a) vs (b): max |probability difference| %.2e; decisions identical: %s; export took %.1f s"
          % (np.abs(a_probs - b_probs).max(), decisions_equal, export_seconds))


if __name__ == "__main__":
    main()
