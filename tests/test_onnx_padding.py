"""onnx_padding.drop_padding on small hand-made graphs: the same logits with the position-wise ops on
real tokens only, and graphs whose padded positions something reads left alone (the parity of
exported models with Keras is in test_export_onnx)."""
import numpy as np
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (make install)")
ort = pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime (make install)")
from onnx import TensorProto, helper  # noqa: E402

from xtune_keras.export.onnx_fusions import MS_DOMAIN, FusedNodes, keep_outputs  # noqa: E402
from xtune_keras.export.onnx_padding import drop_padding  # noqa: E402

WIDTH, HEADS = 8, 2


def encoder_graph(head):
    """Embeddings of ``token_ids`` -> two blocks (attention, residual add, LayerNorm, GELU
    feed-forward) -> ``head(fused, hidden)``, the logits."""
    rng = np.random.default_rng(0)
    fused = FusedNodes()
    x = fused.node("Gather", [fused.const("embeddings", rng.normal(size=(20, WIDTH))), "token_ids"], axis=0)
    for _ in range(2):
        attended = fused.node("Attention", [x, fused.const("qkv", rng.normal(size=(WIDTH, 3 * WIDTH))),
                                            fused.const("qkv_bias", rng.normal(size=3 * WIDTH)),
                                            fused.padding_mask()], domain=MS_DOMAIN, num_heads=HEADS)
        x = layer_norm(fused, fused.node("Add", [fused.linear(attended, rng.normal(size=(WIDTH, WIDTH))), x]))
        hidden = fused.node("Gelu", [fused.linear(x, rng.normal(size=(WIDTH, 16)), rng.normal(size=16))],
                            domain=MS_DOMAIN)
        x = layer_norm(fused, fused.node("Add", [fused.linear(hidden, rng.normal(size=(16, WIDTH))), x]))
    fused.node("Identity", [head(fused, x)], "logits")
    graph = helper.make_graph(fused.nodes, "encoder",
                              [helper.make_tensor_value_info("token_ids", TensorProto.INT32, [None, None])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, WIDTH])],
                              initializer=fused.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    keep_outputs(model, ["logits"])
    return model


def layer_norm(fused, x):
    return fused.node("LayerNormalization", [x, fused.const("gamma", np.ones(WIDTH)),
                                             fused.const("beta", np.zeros(WIDTH))], axis=-1)


def first_token(fused, x):
    return fused.node("Squeeze", [fused.node("Gather", [x, fused.const("first", [0], np.int64)], axis=1),
                                  fused.const("axis1", [1], np.int64)])


def mean_over_positions(fused, x):  # reads the padded positions too
    return fused.node("ReduceMean", [x], axes=[1], keepdims=0)


def logits(model, token_ids):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"token_ids": token_ids})[0]


TOKENS = np.array([[1, 5, 6, 7, 2], [1, 9, 2, 0, 0], [1, 2, 0, 0, 0]], np.int32)


def test_a_first_token_head_gets_the_same_logits_with_padding_dropped():
    model = encoder_graph(first_token)
    before = logits(model, TOKENS)
    assert drop_padding(model.graph) == 2
    onnx.checker.check_model(model)
    outputs = [name for node in model.graph.node for name in node.output]
    assert len(outputs) == len(set(outputs))  # the rewrite's names (its own scope) meet none of the graph's
    ops = [node.op_type for node in model.graph.node]
    assert "NonZero" in ops and "Attention" not in ops and ops.count("MultiHeadAttention") == 2
    np.testing.assert_allclose(logits(model, TOKENS), before, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits(model, TOKENS[:1, :3]), logits(encoder_graph(first_token), TOKENS[:1, :3]),
                               atol=1e-5, rtol=0)  # no padding at all


def test_position_wise_ops_run_on_the_real_tokens_only():
    model = encoder_graph(first_token)
    drop_padding(model.graph)
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    gelu = [node.input[0] for node in model.graph.node if node.op_type == "Gelu"][0]
    model.graph.output.append(helper.make_tensor_value_info(gelu, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), session_options, providers=["CPUExecutionProvider"])
    shape = session.run([gelu], {"token_ids": TOKENS})[0].shape
    assert shape == (int((TOKENS != 0).sum()), 16)


def test_a_head_that_reads_every_position_leaves_the_graph_alone():
    model = encoder_graph(mean_over_positions)
    before = model.SerializeToString()
    assert drop_padding(model.graph) == 0
    assert model.SerializeToString() == before


def test_an_attention_without_the_padding_mask_leaves_the_graph_alone():
    model = encoder_graph(first_token)
    for node in model.graph.node:
        if node.op_type == "Attention":
            node.input[3] = ""  # padded keys would count: zeros in their place would change the logits
    before = model.SerializeToString()
    assert drop_padding(model.graph) == 0
    assert model.SerializeToString() == before


def test_a_graph_without_fused_attention_is_left_alone():
    fused = FusedNodes()
    fused.node("Cast", ["token_ids"], "logits", to=TensorProto.FLOAT)
    graph = helper.make_graph(fused.nodes, "plain",
                              [helper.make_tensor_value_info("token_ids", TensorProto.INT32, [None, None])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    assert drop_padding(graph) == 0 and len(graph.node) == 1
