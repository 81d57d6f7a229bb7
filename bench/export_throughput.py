"""Inference throughput of the exports (SavedModel, ONNX float32 and int8) against the Keras .h5
path, on the same texts.

    .venv/bin/python bench/export_throughput.py [--model checkpoints/demo_reuters_r8_minilm.h5]
        [--data data/reuters-r8/test.csv] [--export-dir bench/out/demo_export] [--repeats 3]

Rows (all on the same texts, batches of 64):
  (a) SavedModel ``serving_default`` on raw text (tokenizer and truncation in the graph);
  (b) Keras ``model.predict`` in a Python loop over batches tokenized beforehand (bert4keras,
      not timed);
  (c) ``xtune predict MODEL.h5`` end to end in a subprocess (start-up, reading, tokenizing, writing);
  (d) ``xtune predict EXPORT_DIR`` end to end in a subprocess;
  (e), (f) ONNX Runtime on the float32 and the int8 ONNX export (``xtune export --format onnx
      [--quantize int8]``: ONNX Runtime's fused attention, LayerNorm and GELU), fed the batches of (b);
  (g) ``xtune predict`` on the int8 ONNX folder end to end in a subprocess;
  (h), (i) as (e), (f) with ``--no-fuse`` (the graph as tf2onnx converts it).
(a), (b), (e), (f), (h) and (i) report the median of ``--repeats`` passes after one untimed warm-up batch.
Prints the CPU and its flags, a Markdown table, how far (a)'s and (e)'s probabilities are from
(b)'s, and the int8 model's decisions and macro-F1 against float32's on the labelled texts.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np
import tensorflow as tf
from bert4keras.snippets import sequence_padding

from xtune_keras.cpu import machine_description
from xtune_keras.data.tables import LabelVocab
from xtune_keras.export.onnx import export_onnx, onnx_logits
from xtune_keras.export.savedmodel import export_model, raw_texts, require_tensorflow_text
from xtune_keras.inference import read_examples
from xtune_keras.train.metrics import classification_metrics
from xtune_keras.model.encoders import tokenizer_from_vocab
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


def padded_batches(meta, token_dict, examples, size=BATCH):
    """``[token_ids, segment_ids]`` batches of ``size`` in input order, tokenized and truncated by
    the meta's rules (those of ``inference.encoded_batches``, without its sorting by length), each
    padded to its longest text."""
    tokenizer = tokenizer_from_vocab(token_dict, do_lower_case=meta["lowercase"])
    ids, segments = encode_examples(tokenizer, examples, meta["max_len"], meta["truncation"], meta["head_ratio"],
                                    meta.get("truncation2"))
    return [[sequence_padding(i).astype(np.int32), sequence_padding(s).astype(np.int32)]
            for i, s in zip(batches(ids, size), batches(segments, size))]


def padding_share(padded):
    """The share of the batches' token slots that hold padding (token id 0)."""
    slots = sum(ids.size for ids, _ in padded)
    return sum(int((ids == 0).sum()) for ids, _ in padded) / slots


def sigmoid(logits):
    return 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))


def keras_pass(model, padded, repeats):
    """(seconds, probabilities) of model.predict over batches tokenized beforehand."""
    model.predict(padded[0], verbose=0)  # warm-up

    def run():
        return np.concatenate([model.predict(batch, verbose=0) for batch in padded])

    return median_pass_seconds(run, repeats), sigmoid(run())


def onnx_pass(directory, padded, repeats):
    """(seconds, probabilities) of an ONNX export in ONNX Runtime over the batches of (b)."""
    logits = onnx_logits(directory)
    logits(*padded[0])  # warm-up

    def run():
        return np.concatenate([logits(*batch) for batch in padded])

    return median_pass_seconds(run, repeats), sigmoid(run())


def decisions(probs, threshold):
    return probs > np.asarray(threshold)


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
    onnx_dirs = {}
    for quantize in ("float32", "int8"):
        for fuse, suffix in ((True, ""), (False, "_unfused")):
            directory = onnx_dirs[quantize + suffix] = "%s_onnx_%s%s" % (args.export_dir, quantize, suffix)
            export_onnx(args.model, directory, quantize=None if quantize == "float32" else quantize, fuse=fuse)
    model, meta, token_dict = load_model_file(args.model)
    if meta["activation"] != "sigmoid":
        sys.exit("this benchmark compares sigmoid models (the demo model)")
    examples = read_examples(meta, args.data, with_labels=True)
    text1, text2 = raw_texts(meta, args.data)
    count = len(examples)
    padded = padded_batches(meta, token_dict, examples)

    a_seconds, a_probs = saved_model_pass(args.export_dir, text1, text2, args.repeats)
    b_seconds, b_probs = keras_pass(model, padded, args.repeats)
    e_seconds, e_probs = onnx_pass(onnx_dirs["float32"], padded, args.repeats)
    f_seconds, f_probs = onnx_pass(onnx_dirs["int8"], padded, args.repeats)
    h_seconds, h_probs = onnx_pass(onnx_dirs["float32_unfused"], padded, args.repeats)
    i_seconds, i_probs = onnx_pass(onnx_dirs["int8_unfused"], padded, args.repeats)
    c_seconds = cli_seconds(args.model, args.data)
    d_seconds = cli_seconds(args.export_dir, args.data)
    g_seconds = cli_seconds(onnx_dirs["int8"], args.data)

    import onnxruntime
    print("%s, TensorFlow %s, ONNX Runtime %s, model %s (max_len %d, %s truncation), "
          "%d texts from %s, load average %.2f"
          % (machine_description(), tf.__version__, onnxruntime.__version__,
             os.path.basename(args.model), meta["max_len"], meta["truncation"], count, args.data,
             os.getloadavg()[0]))
    print()
    print("| path | texts | seconds | texts/s | what is timed |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(row("(a) SavedModel `serving_default`, raw text", count, a_seconds,
              "batches of %d; tokenizer + truncation in the graph; median of %d" % (BATCH, args.repeats)))
    print(row("(b) Keras `model.predict` loop, pre-tokenized", count, b_seconds,
              "batches of %d; bert4keras tokenizing not timed; median of %d" % (BATCH, args.repeats)))
    print(row("(c) `xtune predict MODEL.h5`", count, c_seconds, "one process, start-up to CSV written"))
    print(row("(d) `xtune predict EXPORT_DIR`", count, d_seconds, "one process, start-up to CSV written"))
    print(row("(e) ONNX float32 in ONNX Runtime, pre-tokenized", count, e_seconds,
              "the batches of (b); median of %d; %.2fx (b)" % (args.repeats, b_seconds / e_seconds)))
    print(row("(f) ONNX int8 in ONNX Runtime, pre-tokenized", count, f_seconds,
              "the batches of (b); median of %d; %.2fx (b)" % (args.repeats, b_seconds / f_seconds)))
    print(row("(g) `xtune predict ONNX_INT8_DIR`", count, g_seconds, "one process, start-up to CSV written"))
    print(row("(h) ONNX float32, `--no-fuse`", count, h_seconds,
              "as (e); %.2fx (b); (e) is %.2fx (h)" % (b_seconds / h_seconds, h_seconds / e_seconds)))
    print(row("(i) ONNX int8, `--no-fuse`", count, i_seconds,
              "as (f); %.2fx (b); (f) is %.2fx (i)" % (b_seconds / i_seconds, i_seconds / f_seconds)))
    print()
    threshold = meta["threshold"]
    for name, probs in (("(a)", a_probs), ("(e)", e_probs), ("(f)", f_probs), ("(h)", h_probs), ("(i)", i_probs)):
        print("%s vs (b): max |probability difference| %.2e; decisions identical: %s"
              % (name, np.abs(probs - b_probs).max(),
                 np.array_equal(decisions(probs, threshold), decisions(b_probs, threshold))))
    y_true = LabelVocab(meta["labels"]).encode(examples)
    for name, int8, float32 in (("(f) vs (e)", f_probs, e_probs), ("(i) vs (h)", i_probs, h_probs)):
        agree = (decisions(int8, threshold) == decisions(float32, threshold)).all(axis=1)
        f1 = [classification_metrics(y_true, probs, meta["multi_label"], threshold)["macro_f1"]
              for probs in (int8, float32)]
        print("int8 vs float32 ONNX %s: decisions equal on %d of %d texts (%.2f%%); macro-F1 %.4f vs %.4f "
              "(difference %+.4f)" % (name, agree.sum(), count, 100.0 * agree.mean(), f1[0], f1[1], f1[0] - f1[1]))
    print("SavedModel export took %.1f s" % export_seconds)


if __name__ == "__main__":
    main()
