"""The classifier: encoder layer(s) -> stacked heads -> ``logits`` (Dense, linear)."""
import re

import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.model.encoders import build_transformer
from xtune_keras.errors import XtuneError
from xtune_keras.model.heads import POOLER_LAYER, apply_heads
from xtune_keras.model.layers import LayerCombine, PaddingMask

LOGITS = "logits"
ENCODER_LAYER = "Transformer-%d-FeedForward-Norm"  # the output of transformer layer %d
SHARED_ENCODER_LAYER = "Transformer-FeedForward-Norm"  # ALBERT: one layer called once per depth
ENCODER_PREFIXES = ("Embedding-", "Transformer-")


def encoder_output(transformer, output_layer=-1, pool_layers=1, pool_mode="concat"):
    """The sequence the heads read: layer ``output_layer`` (0-based, negative from the top; the
    write-up's "output layer 11" of 12 is -1), or the combination of the ``pool_layers`` layers
    ending there (Sun et al. 2019 try the last 4, concatenated / mean / max)."""
    count = transformer.num_hidden_layers
    top = output_layer + count if output_layer < 0 else output_layer
    if not 0 <= top < count:
        raise XtuneError("encoder.output_layer: %d is outside the %d layers of this encoder"
                         % (output_layer, count))
    if not 1 <= pool_layers <= top + 1:
        raise XtuneError("encoder.pool_layers: %d layers do not fit below output layer %d"
                         % (pool_layers, top))
    outputs = [layer_output(transformer, i) for i in range(top - pool_layers + 1, top + 1)]
    if len(outputs) == 1:
        return outputs[0]
    return LayerCombine(pool_mode, name="Encoder-Last%d-%s" % (pool_layers, pool_mode))(outputs)


def layer_output(transformer, index):
    """Output of transformer layer ``index``; ALBERT shares one layer, so take its index-th call."""
    if ENCODER_LAYER % index in transformer.layers:
        return transformer.layers[ENCODER_LAYER % index].output
    return transformer.layers[SHARED_ENCODER_LAYER].get_output_at(index)


def build_classifier(config_path, checkpoint_path, num_labels, heads, model="bert", output_layer=-1,
                     pool_layers=1, pool_mode="concat", dropout=None, attention_dropout=None):
    """A Keras model ``[Input-Token, Input-Segment] -> logits[num_labels]``."""
    encoder = build_encoder(config_path, checkpoint_path, model, output_layer, pool_layers, pool_mode, dropout,
                            attention_dropout)
    return classifier_on(encoder, num_labels, heads, checkpoint_path)


def build_encoder(config_path, checkpoint_path, model="bert", output_layer=-1, pool_layers=1, pool_mode="concat",
                  dropout=None, attention_dropout=None):
    """``(inputs, sequence the heads read, padding mask)`` of the pretrained encoder: what every
    task's classifier of a multi-task run shares."""
    overrides = {k: v for k, v in (("dropout_rate", dropout), ("attention_dropout_rate", attention_dropout))
                 if v is not None}
    transformer = build_transformer(config_path, checkpoint_path, model=model, **overrides)
    inputs = transformer.model.inputs
    mask = PaddingMask(name="Padding-Mask")(inputs[0])
    return inputs, encoder_output(transformer, output_layer, pool_layers, pool_mode), mask


def classifier_on(encoder, num_labels, heads, checkpoint_path=None):
    """The heads and the ``logits`` layer on an encoder of ``build_encoder``, as a model."""
    inputs, sequence, mask = encoder
    x = apply_heads(sequence, mask, heads)
    if len(x.shape) != 2:
        raise XtuneError("model.heads: the head stack ends on a sequence %s; end it with a pooling "
                         "head such as cls, pooler, avg, max or textcnn" % (tuple(x.shape),))
    # float32 under every precision policy: losses, metrics and thresholds read float32 logits
    logits = keras.layers.Dense(num_labels, name=LOGITS, dtype="float32")(x)
    classifier = keras.models.Model(inputs, logits, name="xtune_classifier")
    if checkpoint_path and any(layer.name == POOLER_LAYER for layer in classifier.layers):
        load_pooler(classifier.get_layer(POOLER_LAYER), checkpoint_path)
    return classifier


def load_pooler(layer, checkpoint_path):
    """The checkpoint's pooler weights, read alone (not the whole checkpoint) into ``layer``."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    names = ("bert/pooler/dense/kernel", "bert/pooler/dense/bias")
    missing = [n for n in names if not reader.has_tensor(n)]
    if missing:
        raise XtuneError("%s: head 'pooler' needs %s, which this checkpoint lacks; use head 'cls'"
                         % (checkpoint_path, missing[0]))
    layer.set_weights([reader.get_tensor(n) for n in names])


def is_encoder_layer(name):
    return name.startswith(ENCODER_PREFIXES)


def freeze_layers(model, freeze=False, pattern=None):
    """Mark encoder layers (all, or those whose name matches ``pattern``) not trainable.

    Returns the frozen layer names. Keras needs a (re)compile after a change of ``trainable``.
    """
    try:
        matcher = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise XtuneError("encoder.freeze_pattern: invalid regex %r (%s)" % (pattern, exc))
    frozen = []
    for layer in model.layers:
        if (freeze and is_encoder_layer(layer.name)) or (matcher and matcher.search(layer.name)):
            layer.trainable = False
            frozen.append(layer.name)
    if (freeze or pattern) and not frozen:
        raise XtuneError("encoder.freeze_pattern: %r matches no layer (names look like "
                         "Embedding-Token, Transformer-3-FeedForward, head-1-mlp-dense-0)" % pattern)
    return frozen


def unfreeze_layers(model, names):
    for name in names:
        model.get_layer(name).trainable = True
