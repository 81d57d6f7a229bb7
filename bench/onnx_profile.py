"""Where an ONNX export's time goes: ONNX Runtime's profiler, kernel time summed per op type.

    .venv/bin/python bench/onnx_profile.py bench/out/demo_export_onnx_int8 [--data data/reuters-r8/test.csv]

Runs the folder's model.onnx as xtune runs it (the same disabled fusions) on the texts of ``--data``,
tokenized by the folder's meta, in batches of 64 (one untimed warm-up batch); prints the CPU, the
seconds of the pass and the op types by kernel time.
"""
import argparse
import collections
import json
import os
import tempfile
import time

from xtune_keras import compat  # noqa: F401  (first: tf.keras 2 for bert4keras)
import numpy as np
import onnxruntime as ort
from bert4keras.snippets import sequence_padding

from xtune_keras.cpu import cpu_description
from xtune_keras.data.truncation import encode_examples
from xtune_keras.export.onnx import MODEL_FILE, SLOW_FUSIONS, read_onnx_export
from xtune_keras.inference import read_examples
from xtune_keras.model.encoders import tokenizer_from_vocab


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--data", default="data/reuters-r8/test.csv")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    meta, token_dict = read_onnx_export(args.folder)
    tokenizer = tokenizer_from_vocab(token_dict, do_lower_case=meta["lowercase"])
    texts = read_examples(meta, args.data, with_labels=False)
    ids, segments = encode_examples(tokenizer, texts, meta["max_len"], meta["truncation"], meta["head_ratio"],
                                    meta.get("truncation2"))
    feeds = [{"token_ids": sequence_padding(ids[i:i + args.batch]).astype(np.int32),
              "segment_ids": sequence_padding(segments[i:i + args.batch]).astype(np.int32)}
             for i in range(0, len(ids), args.batch)]  # in file order, as export_throughput.py batches
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(os.path.join(args.folder, MODEL_FILE), options,
                                       providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS)
        session.run(["logits"], feeds[0])
        started = time.perf_counter()
        for feed in feeds:
            session.run(["logits"], feed)
        seconds = time.perf_counter() - started
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
    per_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    print("%s, ONNX Runtime %s; %s: %d texts in %.2f s (%.1f texts/s, with the profiler on)"
          % (cpu_description(), ort.__version__, args.folder, len(texts), seconds, len(texts) / seconds))
    print("\n| op | kernel seconds | share |\n| --- | ---: | ---: |")
    for op, micros in per_op.most_common(10):
        print("| %s | %.3f | %.1f%% |" % (op, micros / 1e6, 100.0 * micros / total))


if __name__ == "__main__":
    main()
