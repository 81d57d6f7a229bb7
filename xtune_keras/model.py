"""The classifier: encoder -> stacked heads -> ``logits`` (Dense, linear)."""
from bert4keras.backend import keras

from xtune_keras.encoders import build_transformer
from xtune_keras.errors import XtuneError
from xtune_keras.heads import apply_heads

LOGITS = "logits"


def build_classifier(config_path, checkpoint_path, num_labels, heads, model="bert"):
    """A Keras model ``[Input-Token, Input-Segment] -> logits[num_labels]``."""
    transformer = build_transformer(config_path, checkpoint_path, model=model)
    encoder = transformer.model
    x = apply_heads(encoder.output, heads)
    if len(x.shape) != 2:
        raise XtuneError(
            "model.heads: the head stack ends on a sequence %s; end it with a pooling head such as "
            "'cls'" % (tuple(x.shape),)
        )
    logits = keras.layers.Dense(num_labels, name=LOGITS)(x)
    return keras.models.Model(encoder.inputs, logits, name="xtune_classifier")
