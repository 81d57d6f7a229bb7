"""Google-format BERT checkpoints: write, read, and check against a config.

A Google checkpoint is a TF "V2 bundle" (``<prefix>.index`` + ``<prefix>.data-*``) keyed by the
original variable names (``bert/encoder/layer_0/attention/self/query/kernel`` ...). bert4keras's
``save_weights_as_checkpoint`` writes one through a TF1 ``Session``; here the ``SaveV2`` op runs
eagerly, which writes the same bundle without graphs or sessions.
"""
import os

import tensorflow as tf

from xtune_keras.errors import XtuneError

CONFIG_NAME = "bert_config.json"
VOCAB_NAME = "vocab.txt"
CHECKPOINT_NAME = "bert_model.ckpt"

def save_variables(variables, prefix):
    """Write ``{name: array}`` as a Google-format checkpoint at ``prefix`` (no TF1 session)."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    names = sorted(variables)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(variables[n]) for n in names],
    )
    # The small text file that tf.train.latest_checkpoint reads, as Google's releases ship it.
    with open(os.path.join(os.path.dirname(os.path.abspath(prefix)), "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "%s"\n' % os.path.basename(prefix))


def load_variables(prefix):
    """Every variable of a checkpoint as ``{name: numpy array}``."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def checkpoint_shapes(prefix):
    """``{name: shape}`` of a checkpoint, or an XtuneError naming the path when unreadable."""
    try:
        return {name: tuple(shape) for name, shape in tf.train.list_variables(prefix)}
    except (tf.errors.OpError, ValueError) as exc:
        raise XtuneError("%s: not a readable TensorFlow checkpoint (%s)" % (prefix, _first_line(exc)))


def _first_line(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _mapped_weights(transformer):
    """``(google_name, keras_weight)`` pairs of a built bert4keras transformer's variable mapping."""
    for layer_name, names in transformer.variable_mapping().items():
        layer = transformer.layers.get(transformer.prefixed(layer_name))
        if layer is not None:
            yield from zip(names, layer.trainable_weights)


# bert4keras keeps this one transposed relative to the checkpoint (see BERT.load_variable).
_TRANSPOSED = "cls/seq_relationship/output_weights"


def transformer_variables(transformer):
    """``{google_name: value}`` of a built bert4keras transformer, via its variable mapping."""
    return {name: weight.numpy().T if name == _TRANSPOSED else weight.numpy()
            for name, weight in _mapped_weights(transformer)}


def expected_shapes(transformer):
    """``{google_name: shape}`` that a checkpoint must hold for this transformer."""
    shapes = {}
    for name, weight in _mapped_weights(transformer):
        if name == "bert/embeddings/word_embeddings" and transformer.keep_tokens is not None:
            continue  # keep_tokens selects rows: the stored vocabulary may be larger
        shape = tuple(weight.shape)
        shapes[name] = shape[::-1] if name == _TRANSPOSED else shape
    return shapes


def check_checkpoint(transformer, prefix, config_path):
    """Raise an XtuneError naming the first variable that is missing or of the wrong shape."""
    stored = checkpoint_shapes(prefix)
    for name, shape in expected_shapes(transformer).items():
        if name not in stored:
            raise XtuneError(
                "%s: variable %s is missing (the model built from %s needs it)"
                % (prefix, name, config_path)
            )
        if stored[name] != shape:
            raise XtuneError(
                "%s: variable %s has shape %s but %s implies %s"
                % (prefix, name, list(stored[name]), config_path, list(shape))
            )


def save_transformer_checkpoint(transformer, prefix):
    """Write a bert4keras transformer's weights as a Google checkpoint (replaces TF1 code)."""
    save_variables(transformer_variables(transformer), prefix)
