"""HEADS: the layers stacked on the encoder's sequence output, one registry entry per head.

A head is ``fn(x, mask, name, **options) -> tensor``: ``x`` is a sequence ``[batch, tokens, dim]``
or a vector ``[batch, dim]``, ``mask`` the float padding mask ``[batch, tokens]``. Heads compose in
the order the YAML lists them, e.g. the write-up's variants

    bert + mlp(256)                    [{type: cls}, {type: mlp, units: [256]}]
    bert + mlp(512,256) + avg-pooling  [{type: mlp, units: [512, 256]}, {type: avg}]
    bert + mlp(512,256) + textcnn      [{type: mlp, units: [512, 256]}, {type: textcnn}]

Options are flat keyword arguments; an unknown option is a one-line error listing valid ones.
A new head is one function here with ``@HEADS.register("name")`` and one test (see the README).
"""
from bert4keras.backend import keras
from bert4keras.layers import LayerNormalization  # bert4keras registers this name for .h5 loading

from xtune_keras.errors import XtuneError
from xtune_keras.model.layers import MaskedPooling, TokenSlice, TransformerBlock, ZeroMasked
from xtune_keras.registry import Registry

POOLER_LAYER = "Pooler-Dense"  # takes the checkpoint's bert/pooler/dense weights (see classifier.py)

HEADS = Registry("head", skip=("x", "mask", "name"))


def _needs_sequence(x, name):
    if len(x.shape) != 3:
        raise XtuneError("model.heads: head %s needs a token sequence but gets a vector; put it "
                         "before the pooling head" % name)


@HEADS.register("cls")
def cls_head(x, mask, name):
    """The [CLS] vector (Sun et al. 2019 classify from it)."""
    _needs_sequence(x, name)
    return TokenSlice(index=0, name=name)(x)


@HEADS.register("pooler")
def pooler_head(x, mask, name):
    """[CLS] through BERT's pretrained pooler (Dense + tanh, trained on next-sentence prediction)."""
    _needs_sequence(x, name)
    cls = TokenSlice(index=0, name=name)(x)
    return keras.layers.Dense(int(x.shape[-1]), activation="tanh", name=POOLER_LAYER)(cls)


def _pooling_head(mode):
    def head(x, mask, name):
        _needs_sequence(x, name)
        return MaskedPooling(mode, name=name)([x, mask])

    head.__doc__ = "%s pooling over the real tokens (padding excluded)." % mode
    return head


@HEADS.register("mlp")
def mlp_head(x, mask, name, units=(256,), activation="relu", dropout=0.1):
    """Dense layers (units list), each followed by dropout; works on vectors and sequences."""
    for i, n in enumerate(units):
        x = keras.layers.Dense(n, activation=activation, name="%s-dense-%d" % (name, i))(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="%s-dropout-%d" % (name, i))(x)
    return x


@HEADS.register("textcnn")
def textcnn_head(x, mask, name, kernel_sizes=(3, 4, 5), filters=128, activation="relu", dropout=0.1):
    """Kim (2014) TextCNN: one Conv1D per kernel size, max over real tokens, concatenated."""
    _needs_sequence(x, name)
    x = ZeroMasked(name=name + "-zero-padding")([x, mask])
    pooled = []
    for size in kernel_sizes:
        conv = keras.layers.Conv1D(filters, size, padding="same", activation=activation,
                                   name="%s-conv%d" % (name, size))(x)
        pooled.append(MaskedPooling("max", name="%s-max%d" % (name, size))([conv, mask]))
    x = keras.layers.Concatenate(name=name + "-concat")(pooled) if len(pooled) > 1 else pooled[0]
    return keras.layers.Dropout(dropout, name=name + "-dropout")(x) if dropout else x


@HEADS.register("resnet")
def resnet_head(x, mask, name, blocks=2, units=256, activation="relu", dropout=0.1):
    """Residual dense blocks (He et al. 2016): x + Dense(Dense(x)), then LayerNorm."""
    width = int(x.shape[-1])
    for i in range(blocks):
        h = keras.layers.Dense(units, activation=activation, name="%s-%d-in" % (name, i))(x)
        h = keras.layers.Dense(width, name="%s-%d-out" % (name, i))(h)
        if dropout:
            h = keras.layers.Dropout(dropout, name="%s-%d-dropout" % (name, i))(h)
        x = keras.layers.Add(name="%s-%d-add" % (name, i))([x, h])
        x = LayerNormalization(epsilon=1e-12, name="%s-%d-norm" % (name, i))(x)
    return x


@HEADS.register("densenet")
def densenet_head(x, mask, name, blocks=3, growth=64, activation="relu", dropout=0.1):
    """Densely connected blocks (Huang et al. 2017): each sees the concat of all before it."""
    features = [x]
    for i in range(blocks):
        joined = features[0] if len(features) == 1 else keras.layers.Concatenate(
            name="%s-%d-concat" % (name, i))(features)
        h = keras.layers.Dense(growth, activation=activation, name="%s-%d-dense" % (name, i))(joined)
        if dropout:
            h = keras.layers.Dropout(dropout, name="%s-%d-dropout" % (name, i))(h)
        features.append(h)
    return keras.layers.Concatenate(name=name + "-out")(features)


@HEADS.register("transformer")
def transformer_head(x, mask, name, num_heads=2, key_dim=None, ff_units=None, dropout=0.1):
    """One more transformer encoder block on top of the encoder, over the real tokens."""
    _needs_sequence(x, name)
    return TransformerBlock(num_heads, key_dim, ff_units, dropout, name=name)([x, mask])


for _mode in ("avg", "max", "min"):
    HEADS.register(_mode, _pooling_head(_mode))


def head_options(head_type):
    """Valid option names of a head type (its keyword arguments)."""
    return list(HEADS.options(head_type))


def validate_head(spec, where):
    """Check one ``{type: ..., **options}`` entry; ``where`` names it in errors (e.g. model.heads[1])."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise XtuneError("%s: a head is a mapping with a 'type' key; valid types: %s" % (where, HEADS.valid()))
    HEADS.get(spec["type"], where + ".type")
    HEADS.check_options(spec["type"], {k: v for k, v in spec.items() if k != "type"}, where)


def apply_heads(x, mask, specs):
    """Stack the heads in order; each gets a stable layer name ``head-<i>-<type>``."""
    for i, spec in enumerate(specs):
        validate_head(spec, "model.heads[%d]" % i)
        options = {k: v for k, v in spec.items() if k != "type"}
        x = HEADS.get(spec["type"])(x, mask, name="head-%d-%s" % (i, spec["type"]), **options)
    return x
