"""LOSSES: training objectives on logits (the model's last layer is linear, named ``logits``).

A loss is chosen in YAML by its type name, with options as a mapping::

    model:
      loss: bce                                   # or
      loss: {type: focal, alpha: 0.25, gamma: 2}

Each loss returns one value per example; Keras's reduction averages them over the batch.
``ACTIVATIONS`` names the function that turns logits into the probabilities each loss assumes
(what evaluation and prediction apply to the model's output). Working on logits avoids the
clipping that losses on probabilities need (log of 0).
"""
import inspect
import math

import numpy as np
import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.errors import XtuneError
from xtune_keras.registry import Registry

# Constructor arguments every Keras loss has; they are not options a user sets in YAML.
_KERAS_ARGS = ("self", "name", "reduction")


class _OptionsLoss(keras.losses.Loss):
    """Base: a loss whose constructor keywords (besides name/reduction) are its options.

    ``get_config`` returns every option, so Keras's default ``from_config`` (``cls(**config)``)
    rebuilds the same loss, e.g. when a compiled model is loaded from an ``.h5``. Each subclass
    sets ``activation``: the function that turns logits into the probabilities it assumes.
    """

    @classmethod
    def option_defaults(cls):
        """``{option: default}`` read from the constructor signature (one source of truth)."""
        params = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in params if p.name not in _KERAS_ARGS}

    def get_config(self):
        options = {name: getattr(self, name) for name in self.option_defaults()}
        return {**super().get_config(), **options}


class _SmoothedLoss(_OptionsLoss):
    """Base of the two cross-entropies: one option, ``label_smoothing`` (eps), and the smoothed
    targets ``y * (1 - eps) + eps / classes`` (Szegedy et al. 2016, section 7)."""

    def __init__(self, label_smoothing=0.0, name=None, reduction=keras.losses.Reduction.AUTO):
        super().__init__(name=name, reduction=reduction)
        self.label_smoothing = float(label_smoothing)

    def targets(self, y_true, y_pred, classes):
        eps = self.label_smoothing
        return tf.cast(y_true, y_pred.dtype) * (1.0 - eps) + eps / classes


@keras.utils.register_keras_serializable(package="xtune")
class SigmoidBCE(_SmoothedLoss):
    """Binary cross-entropy per label, mean over labels; activation: sigmoid.

    Binary relevance, one independent yes/no problem per label (Tsoumakas & Katakis 2007,
    "Multi-label classification: an overview"). Label smoothing (Szegedy et al. 2016, "Rethinking
    the Inception architecture", CVPR) applied to each label's two classes: targets
    ``y * (1 - eps) + eps / 2``.
    """

    activation = "sigmoid"

    def __init__(self, label_smoothing=0.0, name="bce", reduction=keras.losses.Reduction.AUTO):
        super().__init__(label_smoothing, name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        targets = self.targets(y_true, y_pred, 2.0)  # each label's two classes
        per_label = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=y_pred)
        return tf.reduce_mean(per_label, axis=-1)


@keras.utils.register_keras_serializable(package="xtune")
class SoftmaxCE(_SmoothedLoss):
    """Softmax cross-entropy against one-hot targets (single label); activation: softmax.

    Label smoothing as in Szegedy et al. 2016 ("Rethinking the Inception architecture", CVPR,
    section 7): targets ``y * (1 - eps) + eps / K`` over the K labels.
    """

    activation = "softmax"

    def __init__(self, label_smoothing=0.0, name="ce", reduction=keras.losses.Reduction.AUTO):
        super().__init__(label_smoothing, name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        targets = self.targets(y_true, y_pred, tf.cast(tf.shape(y_pred)[-1], y_pred.dtype))
        return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=y_pred)


@keras.utils.register_keras_serializable(package="xtune")
class SigmoidFocal(_OptionsLoss):
    """Focal loss per label, mean over labels; activation: sigmoid.

    Lin et al. 2017, "Focal Loss for Dense Object Detection" (ICCV, arXiv:1708.02002):
    ``FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)``, with ``p_t = p`` and ``alpha_t = alpha`` for
    a positive label, ``p_t = 1 - p`` and ``alpha_t = 1 - alpha`` for a negative one.
    The write-up's PyTorch snippet calls ``nn.Sigmoid(y_pred)``, which constructs a module instead
    of applying the sigmoid (a bug); this implements the paper's formula.

    Computed in log space from the logits x, so it stays finite for any |x|:
    ``log p = -softplus(-x)``, ``log(1 - p) = -softplus(x)`` and ``q ** gamma = exp(gamma * log q)``.
    With ``gamma=0, alpha=0.5`` it is half the binary cross-entropy.
    """

    activation = "sigmoid"

    def __init__(self, alpha=0.25, gamma=2.0, name="focal", reduction=keras.losses.Reduction.AUTO):
        super().__init__(name=name, reduction=reduction)
        self.alpha, self.gamma = float(alpha), float(gamma)

    def call(self, y_true, y_pred):
        y = tf.cast(y_true, y_pred.dtype)
        log_p = -tf.nn.softplus(-y_pred)  # log sigmoid(x)
        log_not_p = -tf.nn.softplus(y_pred)  # log(1 - sigmoid(x))
        positive = -self.alpha * tf.exp(self.gamma * log_not_p) * log_p
        negative = -(1.0 - self.alpha) * tf.exp(self.gamma * log_p) * log_not_p
        return tf.reduce_mean(y * positive + (1.0 - y) * negative, axis=-1)


@keras.utils.register_keras_serializable(package="xtune")
class MultilabelCE(_OptionsLoss):
    """Multi-label categorical cross-entropy ("concurrent softmax", the write-up's criterion2).

    Su Jianlin 2020, "将“softmax+交叉熵”推广到多标签分类问题" (https://kexue.fm/archives/7359):
    ``log(1 + sum_{i negative} e^{s_i}) + log(1 + sum_{j positive} e^{-s_j})``, summed (not
    averaged) over labels. The "1 +" is a threshold class with logit 0, so every positive label is
    pushed above 0 and every negative below: decide with ``logit > 0``, which equals
    ``sigmoid(logit) > 0.5``; activation: sigmoid. Written with logsumexp over the scores and a 0
    logit, so logits of +-1e4 do not overflow. Targets are 0/1 (above 0.5 counts as positive).
    """

    activation = "sigmoid"

    def __init__(self, name="multilabel_ce", reduction=keras.losses.Reduction.AUTO):
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true, y_pred):
        positive = tf.cast(y_true, y_pred.dtype) > 0.5
        # -inf drops a score from its sum (e^-inf = 0) and passes no gradient to it.
        excluded = tf.constant(-np.inf, dtype=y_pred.dtype)
        negative_scores = tf.where(positive, excluded, y_pred)
        positive_scores = tf.where(positive, -y_pred, excluded)
        zero = tf.zeros_like(y_pred[..., :1])
        negative_term = tf.reduce_logsumexp(tf.concat([negative_scores, zero], -1), axis=-1)
        positive_term = tf.reduce_logsumexp(tf.concat([positive_scores, zero], -1), axis=-1)
        return negative_term + positive_term


# Allowed option values, checked before a run starts (a bad value would train without error).
SMOOTHING = {"label_smoothing": (lambda v: 0.0 <= v < 1.0, "in [0, 1)")}
LOSSES = Registry("loss type", skip=_KERAS_ARGS)
LOSSES.register("bce", SigmoidBCE, checks=SMOOTHING)
LOSSES.register("ce", SoftmaxCE, checks=SMOOTHING)
LOSSES.register("focal", SigmoidFocal, checks={"alpha": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
                                               "gamma": (lambda v: v >= 0.0, ">= 0")})
LOSSES.register("multilabel_ce", MultilabelCE)
# Which activation turns the logits into the probabilities each loss assumes.
ACTIVATIONS = {name: LOSSES.get(name).activation for name in LOSSES}


def build_loss(spec, where="model.loss"):
    """A Keras loss instance from ``"bce"`` or ``{"type": "focal", "gamma": 2.0, ...}``."""
    name, options = _parse(spec, where)
    return LOSSES.get(name)(**options)


def loss_type(spec, where="model.loss"):
    """The type name of a loss spec (the key of ``LOSSES`` and ``ACTIVATIONS``)."""
    return _parse(spec, where)[0]


def validate_loss(spec, where="model.loss"):
    """Raise XtuneError (one line naming ``where``) if ``spec`` is not a valid loss spec."""
    _parse(spec, where)


def _parse(spec, where):
    """``(type name, {option: float})``, or a one-line XtuneError naming ``where``."""
    if isinstance(spec, str):
        name, raw = spec, {}
    elif isinstance(spec, dict):
        raw = dict(spec)
        name = raw.pop("type", None)
        if name is None:
            raise XtuneError("%s: a loss mapping needs 'type'; valid types: %s" % (where, LOSSES.valid()))
    else:
        raise XtuneError("%s: expected a loss type name or {type: ..., options} (got %r)" % (where, spec))
    LOSSES.get(name, where)
    return name, LOSSES.check_options(name, raw, where, coerce=_option_value)


def _option_value(value, key, where):
    """Options are numbers; strings such as ``"1e-3"`` (YAML 1.1 reads them as text) are parsed."""
    number = None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number):
        raise XtuneError("%s.%s must be a finite number (got %r)" % (where, key, value))
    return number
