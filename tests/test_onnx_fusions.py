"""onnx_fusions' graph surgery: order, pruning, and the layers it leaves alone (the parity of the
fused graphs with Keras is in test_export_onnx)."""
import numpy as np
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (make install)")
from onnx import TensorProto, helper  # noqa: E402

from xtune_keras.export.onnx_fusions import (FUSIONS, FusedNodes, keep_outputs, topological_order,  # noqa: E402
                                             underlying_tensor)


def toy_model():
    """y = relu(x) + 1 kept; z = neg(x) an extra output; the nodes listed consumers first."""
    nodes = [helper.make_node("Add", ["r", "one"], ["y"], name="add"),
             helper.make_node("Identity", ["y"], ["y_out"], name="out"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Neg", ["x"], ["z"], name="neg")]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y_out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
                     helper.make_tensor("unused", TensorProto.FLOAT, [], [2.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_topological_order_puts_producers_first():
    names = [node.name for node in topological_order(toy_model().graph)]
    assert names.index("relu") < names.index("add") < names.index("out")


def test_keep_outputs_prunes_what_nothing_reads_and_orders_the_graph():
    model = toy_model()
    keep_outputs(model, ["y_out"])
    assert [node.name for node in model.graph.node] == ["relu", "add", "out"]
    assert [init.name for init in model.graph.initializer] == ["one"]
    assert "com.microsoft" in {opset.domain for opset in model.opset_import}
    onnx.checker.check_model(model)
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0], [1.0, 3.0])


def test_underlying_tensor_goes_through_identities():
    graph = toy_model().graph
    producers = {out: node for node in graph.node for out in node.output}
    assert underlying_tensor("y_out", producers) == "y"
    assert underlying_tensor("z", producers) == "z"


def built(layer, width=8):
    from bert4keras.backend import keras

    layer(keras.layers.Input((None, width)))
    return layer


def test_layers_a_fused_kernel_does_not_express_exactly_are_left_alone():
    from bert4keras.layers import FeedForward, LayerNormalization

    gated = built(FeedForward(units=12, activation=["gelu", "linear"]))
    swish = built(FeedForward(units=12, activation="swish"))
    plain_norm = built(LayerNormalization(zero_mean=False))
    for layer in (gated, swish, plain_norm):
        fused = FusedNodes()
        assert FUSIONS.get(type(layer).__name__)(layer, "x", "y", fused) is None
        assert fused.nodes == []


def test_a_gelu_feed_forward_becomes_matmuls_around_one_gelu():
    from bert4keras.layers import FeedForward

    fused = FusedNodes()
    out = FUSIONS.get("FeedForward")(built(FeedForward(units=12, activation="gelu")), "x", "y", fused)
    assert out == "y"
    assert [node.op_type for node in fused.nodes] == ["MatMul", "Add", "Gelu", "MatMul", "Add"]
    assert fused.nodes[2].domain == "com.microsoft"
