"""ONNX Runtime's fused kernels in place of bert4keras's attention, LayerNorm and feed-forward layers.

tf2onnx converts each bert4keras layer op by op, and ONNX Runtime's own fusions do not recognise
the result: bert4keras masks attention scores with ``where(mask, a, -inf)`` over a broadcast
``[batch, heads, len, len]`` tensor and divides with ``divide_no_nan`` in LayerNorm, so a profile of
the int8 graph spends most of its time in elementwise ops (Where, Expand, Mul, Add, Transpose) and
little in the quantized matrix products (bench/RESULTS.md §6).

How the rewrite works, without matching op patterns: the model is converted with every fusable
layer's input and output as extra graph outputs, so their tensor names are known; each such
layer's output is then recomputed from its input by fused nodes, with weights read from the Keras
layer (``com.microsoft.Attention`` with a raw padding mask, ONNX ``LayerNormalization``,
``com.microsoft.Gelu``); the extra outputs are dropped and every node nothing reads any more is
removed. A layer whose configuration the fused op does not express exactly (another attention
normalisation, extra attention inputs such as relative positions, a conditional LayerNorm, a gated
or other activation) is left as tf2onnx converted it.

Each fusion is one function in ``FUSIONS`` (keyed by bert4keras's class name) that returns the
nodes, or None to leave the layer alone.
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from xtune_keras.registry import Registry

MS_DOMAIN = "com.microsoft"
FUSIONS = Registry("ONNX fusion")
TOKEN_IDS = "token_ids"  # the graph input that bert4keras's padding mask comes from (token id 0)


class FusedNodes:
    """New nodes and initializers for one graph; names are unique by a running counter under
    ``scope``, which each rewrite of a graph names differently (two counters from 1 under one scope
    would give two tensors one name, and a reader the wrong one)."""

    def __init__(self, scope="xtune_fused"):
        self.nodes, self.initializers, self._count, self.scope = [], [], 0, scope

    def name(self, stem):
        self._count += 1
        return "%s/%s_%d" % (self.scope, stem, self._count)

    def const(self, stem, array, dtype=np.float32):
        tensor = numpy_helper.from_array(np.asarray(array, dtype), self.name(stem))
        self.initializers.append(tensor)
        return tensor.name

    def node(self, op, inputs, output=None, domain=None, **attrs):
        output = output or self.name(op.lower()) + ":0"
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.name(op), domain=domain, **attrs))
        return output

    def linear(self, x, kernel, bias=None, output=None, stem=""):
        """``x @ kernel + bias`` (no bias: ``x @ kernel``) with the two as new initializers."""
        y = self.node("MatMul", [x, self.const(stem + "kernel", kernel)])
        if bias is not None:
            return self.node("Add", [y, self.const(stem + "bias", bias)], output)
        return self.node("Identity", [y], output) if output else y

    def dense(self, x, dense, output=None):
        """``x @ kernel + bias`` of a Keras Dense layer (its activation is the caller's)."""
        return self.linear(x, dense.kernel.numpy(), dense.bias.numpy() if dense.use_bias else None, output)

    def padding_mask(self):
        """int32 ``[batch, len]``: 1 where the token id is not 0 (bert4keras's ``mask_zero``), built once."""
        if not hasattr(self, "_mask"):
            zero = self.const("zero", 0, np.int32)
            self._mask = self.node("Cast", [self.node("Not", [self.node("Equal", [TOKEN_IDS, zero])])],
                                   to=TensorProto.INT32)
        return self._mask


def is_bert4keras(layer, class_name):
    return type(layer).__name__ == class_name and type(layer).__module__.startswith("bert4keras")


def layer_inputs(layer):
    return list(layer.input) if isinstance(layer.input, (list, tuple)) else [layer.input]


def single_input(layer):
    """The layer's one input tensor (the three inputs of self-attention being the same), or None."""
    inputs = layer_inputs(layer)
    return inputs[0] if len({id(t) for t in inputs}) == 1 else None


@FUSIONS.register("MultiHeadAttention")
def fuse_attention(layer, x, y, fused):
    """bert4keras's softmax self-attention as ``com.microsoft.Attention`` (one QKV product, scaled
    scores, the padding mask on the keys) followed by the output projection."""
    if (len(layer_inputs(layer)) != 3 or single_input(layer) is None or layer.normalization != "softmax"
            or layer.key_size != layer.head_size or layer.return_attention_scores):
        return None
    dense = (layer.q_dense, layer.k_dense, layer.v_dense)
    weights = np.concatenate([d.kernel.numpy() for d in dense], axis=1)
    bias = (np.concatenate([d.bias.numpy() for d in dense]) if layer.use_bias
            else np.zeros(weights.shape[1], np.float32))
    scale = 1.0 / np.sqrt(layer.key_size) if layer.attention_scale else 1.0
    attended = fused.node("Attention", [x, fused.const("qkv_kernel", weights), fused.const("qkv_bias", bias),
                                        fused.padding_mask()],
                          domain=MS_DOMAIN, num_heads=layer.heads, scale=float(scale))
    return fused.dense(attended, layer.o_dense, y)


@FUSIONS.register("LayerNormalization")
def fuse_layer_norm(layer, x, y, fused):
    """bert4keras's unconditional LayerNorm as ONNX ``LayerNormalization`` (opset 17)."""
    if (layer.conditional or not (layer.zero_mean and layer.unit_variance)
            or layer.scale not in (True, False, None) or layer.offset not in (True, False, None)):
        return None
    width = int(layer.input_shape[-1])
    gamma = layer.gamma.numpy() if layer.scale is True else np.ones(width, np.float32)
    beta = layer.beta.numpy() if layer.offset is True else np.zeros(width, np.float32)
    return fused.node("LayerNormalization", [x, fused.const("gamma", gamma), fused.const("beta", beta)], y,
                      axis=-1, epsilon=float(layer.epsilon))


# The activations whose ONNX Runtime kernel computes the same function as bert4keras's.
ACTIVATIONS = {"gelu_erf": ("Gelu", MS_DOMAIN), "gelu_tanh": ("FastGelu", MS_DOMAIN), "relu": ("Relu", None)}


@FUSIONS.register("FeedForward")
def fuse_feed_forward(layer, x, y, fused):
    """bert4keras's two-Dense feed-forward block with its activation as one fused kernel."""
    if len(layer.activation) != 1:  # gated (GLU-style) feed-forward: left as converted
        return None
    op = ACTIVATIONS.get(getattr(layer.activation[0], "__name__", None))
    if op is None:
        return None
    hidden = fused.dense(x, layer.i0_dense)
    return fused.dense(fused.node(op[0], [hidden], domain=op[1]), layer.o_dense, y)


def fusable_layers(model):
    """``[(layer, input tensor, output tensor)]`` of the layers a fusion may replace."""
    found = []
    for layer in model.layers:
        name = type(layer).__name__
        if name in FUSIONS and is_bert4keras(layer, name) and len(layer._inbound_nodes) == 1:
            x = single_input(layer)
            if x is not None:
                found.append((layer, x, layer.output))
    return found


def apply_fusions(graph, layers, tensor_names):
    """Rewrite ``graph`` (an ONNX GraphProto) in place: each of ``layers`` (from
    :func:`fusable_layers`) whose fusion applies is recomputed by fused nodes; ``tensor_names`` maps
    ``id(keras tensor)`` to the graph output that exposes it. Returns ``{class name: count}``."""
    fused, done = FusedNodes(), {}
    producers = {out: node for node in graph.node for out in node.output}
    aliases = {output.name: underlying_tensor(output.name, producers) for output in graph.output}
    for layer, x, y in layers:
        x_name, y_name = aliases[tensor_names[id(x)]], aliases[tensor_names[id(y)]]
        if FUSIONS.get(type(layer).__name__)(layer, x_name, y_name, fused) is None:
            continue
        graph.node.remove(producers[y_name])  # the converted layer's last node; the rest dies below
        done[type(layer).__name__] = done.get(type(layer).__name__, 0) + 1
    graph.node.extend(fused.nodes)
    graph.initializer.extend(fused.initializers)
    return done


# Ops that compute each token position from that position alone (given 2-D weights for MatMul and
# the last axis for LayerNormalization): after the last attention, a head that reads one token
# needs them for that token only.
POSITION_WISE = {"MatMul", "Add", "LayerNormalization", "Gelu", "FastGelu", "BiasGelu", "Relu", "Identity"}


def first_token_only(graph):
    """When the model's head reads only the first token of the encoder's last layer (``TokenSlice``
    index 0, the [CLS] heads), compute that layer for that token alone: its attention for the first
    query (against every position's keys and values, :func:`first_query_attention`), then the
    output projection, the residual adds (the residual input gathered at position 0), the
    LayerNorms and the feed-forward block. Exact: every op after the attention is position-wise, so
    the other positions' outputs of this layer could only reach the logits through the head, which
    drops them. Returns the number of layers rewritten (0 or 1); anything else in the chain leaves
    the graph as it is."""
    producers = {out: node for node in graph.node for out in node.output}
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    attentions = [node for node in graph.node if node.op_type == "Attention" and node.domain == MS_DOMAIN]
    if not attentions:
        return 0
    attention = attentions[-1]
    slices = [node for node in graph.node if is_first_token_slice(node, weights)]
    if len(slices) != 1:
        return 0
    outputs = {output.name for output in graph.output}
    chain = position_wise_chain(slices[0], attention, producers, readers, weights, outputs)
    if chain is None:
        return 0
    fused = FusedNodes("xtune_first_token")
    first = fused.node("Gather", [attention.input[0], fused.const("first_token", [0], np.int64)], axis=1)
    at_first_token = {attention.input[0]: first,
                      attention.output[0]: first_query_attention(attention, first, weights, fused)}
    for node in chain:
        for i, name in enumerate(node.input):
            node.input[i] = at_first_token.get(name, name)
    graph.node.extend(fused.nodes)
    graph.initializer.extend(fused.initializers)
    prune(graph)  # the full attention has no reader left; the new nodes go before their readers
    return 1


def first_query_attention(attention, first, weights, fused):
    """What ``attention`` (``com.microsoft.Attention``: one QKV product, the padding mask) gives
    at position 0 alone, ``[batch, 1, hidden]``: the query of the first token (``first``) against
    the keys and values of every position, in ``com.microsoft.MultiHeadAttention``. Saves the
    other positions' queries, scores, softmax and weighted sums of the last layer."""
    x, kernel, bias, mask = attention.input[:4]
    kernels, biases = np.split(weights[kernel], 3, axis=1), np.split(weights[bias], 3)
    q, k, v = (fused.linear(source, kernels[i], biases[i], stem=stem)
               for i, (source, stem) in enumerate(((first, "query_"), (x, "key_"), (x, "value_"))))
    attrs = {a.name: helper.get_attribute_value(a) for a in attention.attribute}
    return fused.node("MultiHeadAttention", [q, k, v, "", mask],
                      domain=MS_DOMAIN, num_heads=attrs["num_heads"], scale=attrs["scale"])


def is_first_token_slice(node, weights):
    """``x[:, 0:1]`` (tf2onnx's form of ``x[:, 0]``, a Squeeze follows): axis 1 from 0 to 1, any
    other axis it names whole (from 0 to at least int32's maximum, step 1)."""
    if node.op_type != "Slice" or len(node.input) < 4 or not all(n in weights for n in node.input[1:] if n):
        return False
    starts, ends, axes = (weights[n].tolist() for n in node.input[1:4])
    steps = weights[node.input[4]].tolist() if len(node.input) > 4 and node.input[4] else [1] * len(axes)
    cut = {axis: (start, end, step) for start, end, axis, step in zip(starts, ends, axes, steps)}
    whole = all(start == 0 and end >= 2 ** 31 - 1 and step == 1
                for axis, (start, end, step) in cut.items() if axis != 1)
    return cut.get(1) == (0, 1, 1) and whole


def position_wise_chain(first_slice, attention, producers, readers, weights, graph_outputs):
    """The nodes from ``attention``'s output to what ``first_slice`` reads, if all are position-wise,
    read nothing but each other, weights, the attention's output and its input, and their outputs
    are read by nothing else (the slice excepted); otherwise None."""
    edge = {attention.output[0], attention.input[0]}
    chain, seen, todo = [], set(), [first_slice.input[0]]
    while todo:
        node = producers.get(todo.pop())
        if node is None:
            return None  # a graph input: not the last layer's block
        if id(node) in seen:
            continue
        if not is_position_wise(node, weights):
            return None
        seen.add(id(node))
        chain.append(node)
        todo += [name for name in node.input if name and name not in weights and name not in edge]
    if not any(attention.output[0] in node.input for node in chain):
        return None
    allowed = seen | {id(first_slice)}
    for node in chain:
        for out in node.output:
            if out in graph_outputs or any(id(reader) not in allowed for reader in readers.get(out, ())):
                return None
    return chain


def is_position_wise(node, weights):
    """One of POSITION_WISE whose constant inputs are per-feature vectors (a MatMul's: a 2-D kernel)."""
    if node.op_type not in POSITION_WISE:
        return False
    if node.op_type == "MatMul":
        return node.input[1] in weights and weights[node.input[1]].ndim == 2
    if node.op_type == "LayerNormalization" and any(a.i != -1 for a in node.attribute if a.name == "axis"):
        return False
    return all(weights[name].ndim <= 1 for name in node.input if name in weights)


def underlying_tensor(name, producers):
    """The tensor behind a graph output: through the Identity nodes tf2onnx puts before outputs."""
    node = producers.get(name)
    while node is not None and node.op_type == "Identity":
        name = node.input[0]
        node = producers.get(name)
    return name


def keep_outputs(model, names):
    """Only the graph outputs in ``names``; then every node and initializer nothing reads is removed
    and the nodes are put back in an order where each comes after what it reads."""
    graph = model.graph
    for output in [o for o in graph.output if o.name not in names]:
        graph.output.remove(output)
    prune(graph)  # leaves the nodes in topological order
    del graph.value_info[:]  # shapes of removed tensors; ONNX Runtime infers them again
    if MS_DOMAIN not in {opset.domain for opset in model.opset_import}:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def prune(graph):
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(topological_order(graph)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    unused = [init for init in graph.initializer if init.name not in needed]
    for init in unused:
        graph.initializer.remove(init)


def topological_order(graph):
    """The graph's nodes, each after the producers of its inputs (Kahn's algorithm, stable)."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
    nodes = list(graph.node)
    waiting = [len({producers[n] for n in node.input if n in producers}) for node in nodes]
    readers = {}
    for i, node in enumerate(nodes):
        for j in {producers[n] for n in node.input if n in producers}:
            readers.setdefault(j, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    order = []
    while ready:
        i = ready.pop(0)
        order.append(nodes[i])
        for j in readers.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        raise ValueError("ONNX fusion left a cycle in the graph")
    return order
