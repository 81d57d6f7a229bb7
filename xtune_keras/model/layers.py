"""Small registered layers used instead of ``Lambda``.

A ``Lambda`` stores its function as marshalled Python bytecode in the ``.h5``; loading it under
another Python version crashes. These layers store only their config, so they reload anywhere.
"""
import tensorflow as tf
from bert4keras.backend import keras

NEG_INF = -1e9  # large but finite: masked positions must not win a max, nor give inf - inf


def register(cls):
    return keras.utils.register_keras_serializable(package="xtune")(cls)


class UnmaskedLayer(keras.layers.Layer):
    """Base of our layers: their outputs carry no Keras mask (bert4keras's encoder propagates
    one, and a vector or a pooled sequence must not inherit the token mask)."""

    def compute_mask(self, inputs, mask=None):
        return None


class ModeLayer(UnmaskedLayer):
    """Base of a layer with one ``mode`` option out of ``MODES``, checked and saved in its config."""

    MODES = ()

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError("%s mode must be one of %s, got %r" % (type(self).__name__, self.MODES, mode))
        self.mode = mode

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@register
class TokenSlice(UnmaskedLayer):
    """The vector of one token position of a sequence, e.g. index 0 for [CLS]."""

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index]

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@register
class PaddingMask(UnmaskedLayer):
    """Token ids -> float mask, 1 for real tokens and 0 for padding (id 0)."""

    def call(self, token_ids):
        return tf.cast(tf.not_equal(token_ids, 0), self.compute_dtype)


@register
class ZeroMasked(UnmaskedLayer):
    """``[sequence, mask]`` -> the sequence with padded positions set to 0, so that a convolution
    sees the same zeros past the last real token however long the batch's padding is."""

    def call(self, inputs):
        x, mask = inputs
        return x * tf.cast(mask, x.dtype)[:, :, None]


@register
class MaskedPooling(ModeLayer):
    """Mean, max or min over the real tokens of ``[sequence, mask]`` (padding excluded)."""

    MODES = ("avg", "max", "min")

    def __init__(self, mode="avg", **kwargs):
        super().__init__(mode, **kwargs)

    def call(self, inputs):
        x, mask = inputs
        mask = tf.cast(mask, x.dtype)[:, :, None]
        if self.mode == "avg":
            return tf.reduce_sum(x * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        if self.mode == "max":
            return tf.reduce_max(x + (1.0 - mask) * NEG_INF, 1)
        return tf.reduce_min(x - (1.0 - mask) * NEG_INF, 1)


@register
class LayerCombine(ModeLayer):
    """Combine several encoder layers' sequences: elementwise mean or max, or concat on features
    (the "last 4 layers" pooling of Sun et al. 2019 and of competition solutions)."""

    MODES = ("mean", "max", "concat")

    def __init__(self, mode="concat", **kwargs):
        super().__init__(mode, **kwargs)

    def call(self, inputs):
        if self.mode == "concat":
            return tf.concat(inputs, -1)
        stacked = tf.stack(inputs, 0)
        return tf.reduce_mean(stacked, 0) if self.mode == "mean" else tf.reduce_max(stacked, 0)


@register
class TransformerBlock(UnmaskedLayer):
    """One post-LayerNorm transformer encoder block over ``[sequence, mask]`` (Vaswani et al.)."""

    def __init__(self, num_heads=2, key_dim=None, ff_units=None, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.key_dim, self.ff_units, self.dropout = num_heads, key_dim, ff_units, dropout

    def build(self, input_shape):
        width = int(input_shape[0][-1])
        key_dim = self.key_dim or max(1, width // self.num_heads)
        self.attention = keras.layers.MultiHeadAttention(self.num_heads, key_dim, dropout=self.dropout,
                                                         name="attention")
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-12, name="norm1")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-12, name="norm2")
        self.ff_in = keras.layers.Dense(self.ff_units or 4 * width, activation="gelu", name="ff_in")
        self.ff_out = keras.layers.Dense(width, name="ff_out")
        self.drop = keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def call(self, inputs, training=None):
        x, mask = inputs
        attend = tf.cast(mask[:, None, :], tf.bool)  # [batch, 1, keys]: every query sees real keys
        h = self.attention(x, x, attention_mask=attend, training=training)
        x = self.norm1(x + self.drop(h, training=training))
        h = self.ff_out(self.ff_in(x))
        return self.norm2(x + self.drop(h, training=training))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "ff_units": self.ff_units, "dropout": self.dropout}


def custom_objects():
    """Everything a saved xtune model needs to reload: our layers, losses, optimizers, bert4keras."""
    return dict(keras.utils.get_custom_objects())
