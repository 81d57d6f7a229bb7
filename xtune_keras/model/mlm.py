"""The masked-language model of further pretraining: the encoder plus bert4keras's MLM head, with
the vocabulary projection computed at the masked positions only.

bert4keras's ``with_mlm`` head is ``MLM-Dense`` (hidden -> hidden, the encoder's activation),
``MLM-Norm``, the token embedding ``Embedding-Token`` reused as the output matrix (one tied
variable), ``MLM-Bias``. Applied to every token, the ``hidden x vocab`` projection costs about as
much as MiniLM's whole encoder (30k vocabulary) and four times as much for e5 (250k); here the
same layers run on the ``[batch, slots, hidden]`` gathered at the masked positions, so a
checkpoint written from them is the one ``build_transformer_model(..., with_mlm=True)`` reads.
"""
import warnings

import numpy as np
import tensorflow as tf
from bert4keras.backend import keras
from bert4keras.models import build_transformer_model

from xtune_keras.convert.checkpoints import _mapped_weights, checkpoint_shapes
from xtune_keras.errors import XtuneError
from xtune_keras.model.classifier import layer_output
from xtune_keras.model.encoders import read_config
from xtune_keras.model.layers import UnmaskedLayer, register

MLM_HEAD = "cls/predictions/"
POSITIONS_INPUT = "Input-Masked-Positions"
HEAD_LAYERS = ("MLM-Dense", "MLM-Norm", "Embedding-Token", "MLM-Bias")


@register
class GatherPositions(UnmaskedLayer):
    """``[sequence, positions]`` -> the vectors at ``positions`` (per example), ``[batch, slots, dim]``."""

    def call(self, inputs):
        sequence, positions = inputs
        return tf.gather(sequence, tf.cast(positions, tf.int32), batch_dims=1)


def build_mlm_transformer(config_path, model="bert", dropout=None, attention_dropout=None):
    """A bert4keras transformer object with its MLM head (logits, no softmax)."""
    read_config(config_path)
    overrides = {k: v for k, v in (("dropout_rate", dropout), ("attention_dropout_rate", attention_dropout))
                 if v is not None}
    return build_transformer_model(config_path, None, model=model, with_mlm="linear", return_keras_model=False,
                                   **overrides)


def load_available(transformer, prefix, fresh_head=False):
    """Load every mapped variable the checkpoint has. The encoder's must all be there (else a
    one-line error); missing ``cls/predictions/*`` (or all of them with ``fresh_head``) keep their
    fresh initialisation. Returns the names of the head variables that start fresh."""
    stored = checkpoint_shapes(prefix)
    reader = tf.train.load_checkpoint(prefix)
    fresh = []
    for name, weight in _mapped_weights(transformer):
        if name.startswith(MLM_HEAD) and (fresh_head or name not in stored):
            fresh.append(name)
            continue
        if name not in stored:
            raise XtuneError("%s: variable %s is missing" % (prefix, name))
        if tuple(stored[name]) != tuple(weight.shape):
            raise XtuneError("%s: variable %s has shape %s but the config implies %s"
                             % (prefix, name, list(stored[name]), list(weight.shape)))
        weight.assign(reader.get_tensor(name))
    return fresh


def build_mlm_model(transformer, slots):
    """``{Input-Token, Input-Segment, Input-Masked-Positions} -> logits [batch, slots, vocab]``,
    sharing every layer (and so every variable) with ``transformer``."""
    keras_model = transformer.model
    positions = keras.layers.Input(shape=(slots,), dtype="int32", name=POSITIONS_INPUT)
    x = GatherPositions(name="MLM-Gather")([layer_output(transformer, transformer.num_hidden_layers - 1), positions])
    x = keras_model.get_layer("MLM-Dense")(x)
    x = keras_model.get_layer("MLM-Norm")(x)
    x = keras_model.get_layer("Embedding-Token")(x, mode="dense")
    x = keras_model.get_layer("MLM-Bias")(x)
    return keras.models.Model(keras_model.inputs + [positions], x, name="xtune_mlm")


def warn_fresh_head(prefix, fresh):
    if fresh:
        warnings.warn("%s: the MLM head starts fresh (not in the checkpoint, or encoder.fresh_head): %s"
                      % (prefix, ", ".join(sorted(fresh))), stacklevel=2)


@keras.utils.register_keras_serializable(package="xtune")
class MaskedLMLoss(keras.losses.Loss):
    """Cross-entropy over the labelled slots only (label -1: an unused slot): the mean over the
    masked tokens of the batch, as google-research/bert's ``get_masked_lm_output``."""

    def __init__(self, name="mlm_loss", reduction=keras.losses.Reduction.AUTO):
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        labels = tf.cast(y_true, tf.int32)
        used = tf.cast(labels >= 0, y_pred.dtype)
        per_slot = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=y_pred)
        return tf.reduce_sum(per_slot * used) / tf.maximum(tf.reduce_sum(used), 1.0)


@keras.utils.register_keras_serializable(package="xtune")
class MaskedLMAccuracy(keras.metrics.Metric):
    """Share of masked tokens whose top logit is the original token."""

    def __init__(self, name="mlm_acc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_weight(name="right", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.cast(y_true, tf.int32)
        used = labels >= 0
        hits = tf.logical_and(used, tf.equal(tf.argmax(y_pred, -1, output_type=tf.int32), labels))
        self.right.assign_add(tf.reduce_sum(tf.cast(hits, tf.float32)))
        self.count.assign_add(tf.reduce_sum(tf.cast(used, tf.float32)))

    def result(self):
        return self.right / tf.maximum(self.count, 1.0)

    def reset_state(self):
        self.right.assign(0.0)
        self.count.assign(0.0)


def tied_output_matrix(mlm_model):
    """The variable the vocabulary projection multiplies by: the token embedding itself."""
    return mlm_model.get_layer("Embedding-Token").embeddings


def perplexity(loss):
    return float(np.exp(min(float(loss), 50.0)))
