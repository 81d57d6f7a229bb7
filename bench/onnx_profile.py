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
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xtune_keras import compat  # noqa: E402,F401  (first: tf.keras 2 for bert4keras)
import onnxruntime as ort  # noqa: E402
from export_throughput import padded_batches  # noqa: E402

from xtune_keras.cpu import cpu_description  # noqa: E402
from xtune_keras.export.onnx import MODEL_FILE, SLOW_FUSIONS, read_onnx_export  # noqa: E402
from xtune_keras.inference import read_examples  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--data", default="data/reuters-r8/test.csv")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    meta, token_dict = read_onnx_export(args.folder)
    texts = read_examples(meta, args.data, with_labels=False)
    feeds = [{"token_ids": ids, "segment_ids": segments}  # in file order, as export_throughput.py's (b)
             for ids, segments in padded_batches(meta, token_dict, texts, args.batch)]
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
