"""Optimizers: bert4keras Adam (on the legacy base, see compat) under names that reload from .h5.

tf-keras resolves the class name ``Adam`` in a saved ``.h5`` to its own legacy Adam, which rejects
bert4keras's ``bias_correction`` argument; a distinct registered class name avoids that.
"""
from bert4keras import optimizers as b4k_optimizers
from bert4keras.backend import keras


@keras.utils.register_keras_serializable(package="xtune")
class XtuneAdam(b4k_optimizers.Adam):
    """bert4keras Adam (epsilon 1e-6 as in google-research/bert) with a reloadable name."""

    def __init__(self, learning_rate=0.001, name="XtuneAdam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


OPTIMIZERS = {"adam": XtuneAdam}


def build_optimizer(name, learning_rate):
    """An optimizer by registry name with the given learning rate."""
    return OPTIMIZERS[name](learning_rate=learning_rate)
