"""LOSSES: training objectives on logits (the model's last layer is linear, named ``logits``).

``bce`` pairs with a sigmoid per label (multi-label), ``ce`` with a softmax (single label).
Working on logits avoids the clipping that losses on probabilities need (log of 0).
"""
import tensorflow as tf
from bert4keras.backend import keras


@keras.utils.register_keras_serializable(package="xtune")
def bce(y_true, y_pred):
    """Binary cross-entropy per label, mean over labels; activation: sigmoid."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=y_pred), -1)


@keras.utils.register_keras_serializable(package="xtune")
def ce(y_true, y_pred):
    """Softmax cross-entropy against one-hot targets; activation: softmax."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.nn.softmax_cross_entropy_with_logits(labels=y_true, logits=y_pred)


LOSSES = {"bce": bce, "ce": ce}
# Which activation turns the logits into the probabilities each loss assumes.
ACTIVATIONS = {"bce": "sigmoid", "ce": "softmax"}
