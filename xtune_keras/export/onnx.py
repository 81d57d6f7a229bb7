"""``xtune export MODEL.h5 DIR --format onnx [--quantize int8]``: the model as an ONNX graph for
ONNX Runtime, the CPU serving stack without TensorFlow.

The folder holds ``model.onnx`` (inputs ``token_ids`` and ``segment_ids``, int32 ``[batch, len]``,
padded with 0; output ``logits``, float32 ``[batch, labels]``: the SavedModel's ``from_ids``
signature), ``xtune_meta.json`` (the ``.h5``'s meta: labels, thresholds, activation, fields,
truncation, plus an ``export`` entry) and ``vocab.json`` (the tokenizer's ``{token: id}`` as in
the ``.h5``; a SentencePiece encoder's model beside it as ``spm.model``). Tokenizing stays in
Python (bert4keras's tokenizer and xtune's truncation, as for the ``.h5``): ONNX has no string ops
that reproduce them.

Steps: tf2onnx converts a ``tf.function`` around the Keras model (with the two handlers of
``onnx_ops``); ``onnx_fusions`` puts ONNX Runtime's fused attention, LayerNorm and GELU kernels in
place of bert4keras's layers, and for a [CLS] head computes the last block for the first token and
the position-wise ops of every block for the real tokens only (``onnx_padding``; ``fuse=False``,
``--no-fuse``: the graph as converted);
``--quantize int8`` quantizes the weights of every MatMul (and fused attention) to int8 with dynamic
(per batch) activation scales (``onnxruntime.quantization.quantize_dynamic``); ONNX Runtime's graph
optimizer at its extended level (constant folding, MatMul+Add and activation fusions; the level
that is not tied to one CPU; without ``SLOW_FUSIONS``) then rewrites it offline.
"""
import json
import os

import numpy as np
import tensorflow as tf  # xtune_keras/__init__ ran first: TF_USE_LEGACY_KERAS is set

import xtune_keras
from xtune_keras.errors import XtuneError
from xtune_keras.export.folders import (META_FILE, ONNX_MODEL_FILE as MODEL_FILE, ONNX_VOCAB_FILE as VOCAB_FILE,
                                        check_replaceable, is_onnx_export, staged_folder)
from xtune_keras.export.savedmodel import check_exportable
from xtune_keras.model.encoders import SentencePieceVocab

SPM_FILE = "spm.model"
OPSET = 17
QUANTIZE = (None, "int8")
INPUTS = ("token_ids", "segment_ids")
# ONNX Runtime fusions left out, offline and when a session loads the model: on the CPU measured
# (bench/RESULTS.md §6) SkipLayerNormalization took 2.6x the time of the Add + LayerNormalization it
# replaces (1.32 s against 0.50 s of an int8 pass over 800 texts).
SLOW_FUSIONS = ["SkipLayerNormFusion"]


def require_onnx():
    """tf2onnx, onnx and onnxruntime, imported, with xtune's op handlers; one line when missing."""
    try:
        import onnxruntime
        import tf2onnx
        from xtune_keras.export import onnx_ops  # noqa: F401  (registers the handlers)
    except ImportError as exc:
        raise XtuneError("ONNX export needs tf2onnx, onnx and onnxruntime (%s): "
                         "pip install tf2onnx==1.17.0 onnx onnxruntime" % exc)
    return tf2onnx, onnxruntime


def export_onnx(h5_path, out_dir, quantize=None, fuse=True):
    """Write the ONNX folder of ``h5_path`` to ``out_dir`` (replaced only if it is an earlier
    export); returns a summary. The folder appears complete or not at all."""
    from xtune_keras.model.modelfile import load_model_file, read_meta

    if quantize not in QUANTIZE:
        raise XtuneError("--quantize: %r is not one of %s" % (quantize, ", ".join(q for q in QUANTIZE if q)))
    meta, token_dict = read_meta(h5_path)
    check_exportable(meta, token_dict)
    check_replaceable(os.path.abspath(out_dir))
    tf2onnx, ort = require_onnx()
    model, meta, token_dict = load_model_file(h5_path)
    with staged_folder(out_dir) as folder:
        os.makedirs(folder)
        nodes, fused = _write_onnx(model, folder, quantize, fuse)
        _write_meta(folder, meta, token_dict, {
            "format": "onnx", "source": os.path.basename(h5_path), "quantize": quantize, "opset": OPSET,
            "inputs": list(INPUTS), "outputs": ["logits"], "fused": fused, "nodes": nodes,
            "xtune_version": xtune_keras.__version__, "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__, "onnxruntime": ort.__version__})
    return {"onnx": os.path.join(out_dir, MODEL_FILE), "quantize": quantize, "labels": meta["labels"],
            "max_len": meta["max_len"], "truncation": meta["truncation"], "fused": fused, "nodes": nodes}


def _write_onnx(model, folder, quantize, fuse):
    """model.onnx in ``folder``; returns its node count per op type and ``{layer class: fused count}``."""
    import onnx

    from xtune_keras.export.onnx_fusions import apply_fusions, first_token_only, fusable_layers, keep_outputs
    from xtune_keras.export.onnx_padding import drop_padding

    tf2onnx, ort = require_onnx()
    converted = os.path.join(folder, "converted.onnx")
    layers = fusable_layers(model) if fuse else []
    exposed = _convert(tf2onnx, model, layers, converted)
    fused = {}
    if layers:
        graph = onnx.load(converted)
        fused = apply_fusions(graph.graph, layers, exposed)
        keep_outputs(graph, ["logits"])
        if first_token_only(graph.graph):
            fused["FirstTokenOnly"] = 1
        packed = drop_padding(graph.graph)
        if packed:
            fused["DropPadding"] = packed
        onnx.save(graph, converted)
    source = converted
    if quantize == "int8":  # before ONNX Runtime's optimizer, whose own fused ops the quantizer does not know
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = os.path.join(folder, "quantized.onnx")
        # The fused ops (com.microsoft) stop ONNX's shape inference, which the quantizer asks for the
        # type of each MatMul's input; every activation here is float32.
        quantize_dynamic(converted, source, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    final = os.path.join(folder, MODEL_FILE)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = final
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=SLOW_FUSIONS)  # writes ``final``
    for path in {converted, source}:
        os.remove(path)
    counts = {}
    for node in onnx.load(final).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items())), fused


def _convert(tf2onnx, model, layers, path):
    """tf2onnx's graph of the logits, with the input and output of each of ``layers`` as an extra
    graph output (what ``onnx_fusions`` rewrites); returns ``{id(keras tensor): output name}``."""
    from bert4keras.backend import keras

    tensors = list({id(t): t for _, x, y in layers for t in (x, y)}.values())
    exposed = {id(t): "xtune_tensor_%d" % i for i, t in enumerate(tensors)}
    probe = keras.Model(model.inputs, [model.output] + tensors) if tensors else model
    specs = tuple(tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUTS)
    dtypes = [tensor.dtype for tensor in model.inputs]  # bert4keras inputs are float32

    @tf.function(input_signature=specs)
    def logits(token_ids, segment_ids):
        out = probe([tf.cast(token_ids, dtypes[0]), tf.cast(segment_ids, dtypes[1])], training=False)
        out = out if tensors else [out]
        named = {"logits": tf.cast(out[0], tf.float32)}
        named.update({exposed[id(t)]: value for t, value in zip(tensors, out[1:])})
        return named

    tf2onnx.convert.from_function(logits, input_signature=specs, opset=OPSET, output_path=path)
    return exposed


def _write_meta(folder, meta, token_dict, info):
    with open(os.path.join(folder, META_FILE), "w", encoding="utf-8") as f:
        json.dump(dict(meta, export=info), f, ensure_ascii=False, indent=2)
    with open(os.path.join(folder, VOCAB_FILE), "w", encoding="utf-8") as f:
        json.dump(dict(token_dict), f, ensure_ascii=False)
    if isinstance(token_dict, SentencePieceVocab):
        with open(os.path.join(folder, SPM_FILE), "wb") as f:
            f.write(token_dict.model_proto)


# --------------------------------------------------------------------------- using an ONNX folder


def read_onnx_export(directory):
    """``(meta, token_dict)`` of an ONNX folder, as ``modelfile.read_meta`` gives them for the .h5."""
    if not is_onnx_export(directory):
        raise XtuneError("%s: not an xtune ONNX folder (needs %s, %s and %s)"
                         % (directory, MODEL_FILE, META_FILE, VOCAB_FILE))
    with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    with open(os.path.join(directory, VOCAB_FILE), encoding="utf-8") as f:
        token_dict = json.load(f)
    spm = os.path.join(directory, SPM_FILE)
    if os.path.isfile(spm):
        with open(spm, "rb") as f:
            token_dict = SentencePieceVocab(token_dict, f.read())
    return meta, token_dict


def onnx_logits(directory, threads=None):
    """``logits(token_ids, segment_ids)`` of the folder's model in an ONNX Runtime session."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(os.path.join(directory, MODEL_FILE), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=SLOW_FUSIONS)

    def logits(token_ids, segment_ids):
        feed = {"token_ids": np.asarray(token_ids, np.int32), "segment_ids": np.asarray(segment_ids, np.int32)}
        return session.run(["logits"], feed)[0]

    return logits
