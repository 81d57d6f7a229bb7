"""Small registered layers used instead of ``Lambda``.

A ``Lambda`` stores its function as marshalled Python bytecode in the ``.h5``; loading it under
another Python version crashes. These layers store only their config, so they reload anywhere.
"""
from bert4keras.backend import keras


@keras.utils.register_keras_serializable(package="xtune")
class TokenSlice(keras.layers.Layer):
    """The vector of one token position of a sequence, e.g. index 0 for [CLS]."""

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "index": self.index}


CUSTOM_LAYERS = {"TokenSlice": TokenSlice}


def custom_objects():
    """Everything a saved xtune model needs to reload: our layers, losses, optimizers, bert4keras."""
    return dict(keras.utils.get_custom_objects())

