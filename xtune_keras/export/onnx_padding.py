"""The encoder's position-wise work on real tokens only: its products, GELU, adds and LayerNorms skip [PAD].

A batch is padded to its longest text, and the Keras model computes every padded position like a
real one. Every op of a BERT block except the attention core computes each position from that
position alone, so the export runs those ops on a packed ``[tokens, width]`` tensor of the real
tokens (token id not 0) and scatters back to ``[batch, len, width]`` only where an attention core
needs the positions: the padding-free transformer of ByteTransformer (Zhai et al. 2023,
https://arxiv.org/abs/2210.03052), here with plain ONNX Gather ops around ONNX Runtime's CPU kernels.
So that its QKV product runs packed too, each ``com.microsoft.Attention`` becomes that product on
the packed tokens, scattered back and split, and ``com.microsoft.MultiHeadAttention`` (scores, the
same padding mask, softmax, weighted sum).

Exact for the logits: in Keras a padded position's value reaches another position only as a key or
value of a masked attention (weight 0), so it may be anything; here it is 0. The rewrite applies
only when every op outside the packed region that reads it is such an attention (a fused
attention's input, the keys and values of ``first_query_attention``) or the [CLS] head's gather of position 0 (left
by ``onnx_fusions.first_token_only``; position 0 is [CLS], never padding). A head that reads every
position (TextCNN, pooling, several layers) would see 0 where Keras has values, so such a graph is
left as it is.
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from xtune_keras.export.onnx_fusions import MS_DOMAIN, FusedNodes, is_position_wise, prune


def drop_padding(graph):
    """Rewrite ``graph`` (fused, see :mod:`onnx_fusions`) in place so that its position-wise ops
    from the first attention's input on run on real tokens only. Returns the number of attention
    cores fed from the packed tensors (0: the graph is unchanged)."""
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    first = next((n for n in graph.node if n.op_type == "Attention" and n.domain == MS_DOMAIN), None)
    if first is None:
        return 0
    start = first.input[0]
    region = packed_region(graph, start, weights)
    if region is None:
        return 0
    packed, full_readers = region
    attention_cores = sum(1 for i in full_readers if "Attention" in graph.node[i].op_type)
    packing = Packing(FusedNodes("xtune_packing"), first.input[3])  # masked: packed_region checked
    packed_start = packing.pack(start)
    fused_attentions = [i for i in full_readers if graph.node[i].op_type == "Attention"]
    for index in fused_attentions:  # their outputs keep their names, now made by MultiHeadAttention
        node = graph.node[index]
        split_attention(node, packed_start if node.input[0] == start else node.input[0], weights, packing)
    packed_outputs = {graph.node[i].output[0]: packing.pack(graph.node[i].output[0]) for i in fused_attentions}
    natively_packed = packed - {start} - set(packed_outputs)
    for index, node in enumerate(graph.node):
        if index in fused_attentions:
            continue
        if index in full_readers:  # a masked attention's keys and values, or position 0: scattered back
            node.input[:] = [packing.unpack(name) if name in natively_packed else name for name in node.input]
        elif any(name in packed for name in node.input):  # position-wise: on the packed tensors
            node.input[:] = [packed_outputs.get(name, packed_start if name == start else name)
                             for name in node.input]
    kept = [node for index, node in enumerate(graph.node) if index not in fused_attentions]
    del graph.node[:]
    graph.node.extend(kept + packing.fused.nodes)
    graph.initializer.extend(packing.fused.initializers)
    prune(graph)  # the new nodes go before their readers
    return attention_cores


def split_attention(attention, packed_x, weights, packing):
    """``com.microsoft.Attention`` (input, QKV kernel and bias, padding mask) as its QKV product on
    the packed tokens, scattered back, split and fed to ``com.microsoft.MultiHeadAttention`` with
    the same mask and heads; the output keeps the attention's name."""
    fused = packing.fused
    kernel, bias, mask = attention.input[1:4]
    qkv = packing.unpack(fused.linear(packed_x, weights[kernel], weights[bias], stem="qkv_"))
    q, k, v = (fused.name(part) + ":0" for part in ("query", "key", "value"))
    fused.nodes.append(helper.make_node("Split", [qkv], [q, k, v], name=fused.name("Split"), axis=2))
    attrs = {a.name: helper.get_attribute_value(a) for a in attention.attribute}
    fused.nodes.append(helper.make_node(
        "MultiHeadAttention", [q, k, v, "", mask], [attention.output[0]], name=fused.name("MultiHeadAttention"),
        domain=MS_DOMAIN, **{key: attrs[key] for key in ("num_heads", "scale") if key in attrs}))


def packed_region(graph, start, weights):
    """``(tensor names computed packed, indices of the nodes that read them in full)`` from ``start``
    forward, or None when a node reading the region is neither position-wise nor allowed to read
    it in full (see the module's doc)."""
    packed, full_readers = {start}, set()
    for index, node in enumerate(graph.node):  # topological order (keep_outputs and first_token_only leave it so)
        reads = [name for name in node.input if name in packed]
        if not reads:
            continue
        if is_packable(node, packed, weights):
            packed.update(node.output)
        elif is_masked_self_attention(node) and reads == [node.input[0]]:
            full_readers.add(index)
            packed.update(node.output)  # packed again after it: its readers are position-wise
        elif reads_padding_harmlessly(node, packed, weights):
            full_readers.add(index)
        else:
            return None
    outputs = {output.name for output in graph.output}
    if not full_readers or packed & outputs:
        return None
    return packed, full_readers


def is_masked_self_attention(node):
    """``com.microsoft.Attention`` as ``onnx_fusions`` writes it: input, QKV kernel and bias, and
    the padding mask, nothing else (``split_attention`` keeps only the heads and the scale)."""
    return (node.op_type == "Attention" and node.domain == MS_DOMAIN and len(node.input) == 4
            and node.input[3] != "" and {a.name for a in node.attribute} <= {"num_heads", "scale"})


def is_packable(node, packed, weights):
    """Position-wise, and every input that is not a weight comes from the region."""
    if not is_position_wise(node, weights):
        return False
    return all(name in packed or name in weights for name in node.input if name)


def reads_padding_harmlessly(node, packed, weights):
    """A masked attention reading keys and values from the region (not its query), or a gather of
    position 0 along the length axis."""
    if node.op_type == "MultiHeadAttention" and node.domain == MS_DOMAIN:
        return node.input[0] not in packed and len(node.input) > 4 and node.input[4] != ""
    if node.op_type == "Gather" and node.input[1] in weights:
        axis = {a.name: a.i for a in node.attribute}.get("axis", 0)
        return axis == 1 and weights[node.input[1]].tolist() == [0]
    return False


class Packing:
    """The gathers between ``[batch, len, width]`` and ``[tokens, width]`` (the real tokens in
    row-major order), with the index tensors built once from ``mask``, the attentions' int32
    ``[batch, len]`` padding mask (1 for a real token)."""

    def __init__(self, fused, mask):
        self.fused, self._unpacked = fused, {}
        real = fused.node("Reshape", [mask, fused.const("flat", [-1], np.int64)])
        self.rows = fused.node("Squeeze", [fused.node("NonZero", [real]), fused.const("axis0", [0], np.int64)])
        ones = fused.node("Cast", [real], to=TensorProto.INT64)
        # row of each position in the packed tensor plus one; 0 for padding (a zero row put first)
        self.slots = fused.node("Mul", [fused.node("CumSum", [ones, fused.const("axis", 0, np.int64)]), ones])
        self.shape = fused.node("Concat", [fused.node("Shape", [mask]),
                                           fused.const("width", [-1], np.int64)], axis=0)

    def pack(self, name):
        """``[batch, len, width]`` -> ``[tokens, width]``."""
        return self.fused.node("Gather", [self.fused.node("Flatten", [name], axis=2), self.rows], axis=0)

    def unpack(self, name):
        """``[tokens, width]`` -> ``[batch, len, width]`` with zeros at padded positions (once per tensor)."""
        if name not in self._unpacked:
            fused = self.fused
            with_zero_row = fused.node("Pad", [name, fused.const("pads", [1, 0, 0, 0], np.int64)])
            self._unpacked[name] = fused.node("Reshape", [fused.node("Gather", [with_zero_row, self.slots],
                                                                      axis=0), self.shape])
        return self._unpacked[name]
