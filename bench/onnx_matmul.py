"""How fast this CPU runs the int8 export's matrix products against float32: ONNX Runtime's
``DynamicQuantizeMatMul`` (what ``xtune export --quantize int8`` makes of each MatMul), with int8
and with uint8 weights, against its float32 ``MatMul`` and TensorFlow's, at the products of the
demo model (MiniLM: hidden 384, feed-forward 1536) on one batch's real tokens.

    .venv/bin/python bench/onnx_matmul.py [--tokens 5200] [--rounds 7]

Each product is a one-node graph with a constant weight; every kind runs one product per round, in
an order rotated each round, and the median round is reported as GOP/s (2 x tokens x K x N per
second). Only one ONNX Runtime session exists at a time: an idle session's threads keep spinning
for a while after its run and take the cores from the next session's run (seen as float32 at 50
instead of 80 GOP/s when three sessions were alive together).
"""
import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xtune_keras import compat  # noqa: E402,F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xtune_keras.cpu import machine_description  # noqa: E402

# (name, K, N) of a MiniLM block's products: QKV, attention output, feed-forward in and out.
SHAPES = (("qkv", 384, 1152), ("attention_out", 384, 384), ("ffn_in", 384, 1536), ("ffn_out", 1536, 384))
KINDS = ("onnx_float32", "onnx_int8_weights", "onnx_uint8_weights", "tensorflow_float32")


def weight_inputs(weight, kind):
    """Initializers of ``y = x @ weight`` for ``kind``: the float matrix, or the quantized one with
    its scale and zero point (symmetric int8 as the export's QuantType.QInt8, or uint8 around 128)."""
    if kind == "onnx_float32":
        return [numpy_helper.from_array(weight, "w")]
    scale = float(np.abs(weight).max()) / 127
    if kind == "onnx_int8_weights":
        quantized, zero = np.clip(np.round(weight / scale), -127, 127).astype(np.int8), np.int8(0)
    else:
        quantized = (np.clip(np.round(weight / scale), -127, 127) + 128).astype(np.uint8)
        zero = np.uint8(128)
    return [numpy_helper.from_array(quantized, "w"), numpy_helper.from_array(np.array(scale, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(zero), "w_zero")]


def onnx_product(weight, kind):
    """A session computing ``x @ weight`` the way the export does for ``kind``."""
    k, n = weight.shape
    if kind == "onnx_float32":
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
    else:
        node = helper.make_node("DynamicQuantizeMatMul", ["x", "w", "w_scale", "w_zero"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "product", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              weight_inputs(weight, kind))
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["y"], {"x": x})[0]


def tensorflow_product(weight):
    constant = tf.constant(weight)
    traced = tf.function(lambda x: tf.matmul(x, constant))
    return lambda x: traced(x).numpy()


def seconds_of(kind, x, weight):
    """One timed product after a warm-up, its session gone before the next kind starts."""
    run = tensorflow_product(weight) if kind == "tensorflow_float32" else onnx_product(weight, kind)
    run(x)
    start = time.perf_counter()
    run(x)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5200, help="rows of x (a batch of 64 x ~81 real tokens)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(machine_description())
    print("ONNX Runtime %s, TensorFlow %s, x: %d rows" % (ort.__version__, tf.__version__, args.tokens))
    rng = np.random.default_rng(0)
    print("| product | K x N | " + " | ".join("%s GOP/s" % kind for kind in KINDS) + " | int8 / float32 (ONNX) |")
    print("| --- | --- |" + " ---: |" * (len(KINDS) + 1))
    for name, k, n in SHAPES:
        x = rng.standard_normal((args.tokens, k)).astype(np.float32)
        weight = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        times = collections.defaultdict(list)
        for round_ in range(args.rounds):
            for kind in KINDS[round_ % len(KINDS):] + KINDS[:round_ % len(KINDS)]:
                times[kind].append(seconds_of(kind, x, weight))
        rate = {kind: 2.0 * args.tokens * k * n / np.median(times[kind]) / 1e9 for kind in KINDS}
        print("| %s | %d x %d | %s | %.2f |" % (name, k, n, " | ".join("%.1f" % rate[kind] for kind in KINDS),
                                               rate["onnx_int8_weights"] / rate["onnx_float32"]))


if __name__ == "__main__":
    main()
