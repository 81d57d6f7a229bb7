"""HEADS: the layers stacked on the encoder's sequence output, one registry entry per head.

A head is ``fn(x, name, **options) -> tensor``. Heads compose in the order the YAML lists them,
e.g. ``[{type: cls}, {type: mlp, units: [256]}]`` is the write-up's baseline "bert + mlp(256)".
Options are flat keyword arguments; an unknown option is a one-line error listing valid ones.
"""
import inspect

from bert4keras.backend import keras

from xtune_keras.errors import XtuneError
from xtune_keras.layers import TokenSlice


def cls_head(x, name):
    """The [CLS] vector of the sequence (Sun et al. 2019 classify from it)."""
    return TokenSlice(index=0, name=name)(x)


def mlp_head(x, name, units=(256,), activation="relu", dropout=0.1):
    """Dense layers (units list), each followed by dropout; works on vectors and sequences."""
    for i, n in enumerate(units):
        x = keras.layers.Dense(n, activation=activation, name="%s-dense-%d" % (name, i))(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="%s-dropout-%d" % (name, i))(x)
    return x


HEADS = {
    "cls": cls_head,
    "mlp": mlp_head,
}


def head_options(head_type):
    """Valid option names of a head type (its keyword arguments)."""
    params = inspect.signature(HEADS[head_type]).parameters
    return [p for p in params if p not in ("x", "name")]


def validate_head(spec, where):
    """Check one ``{type: ..., **options}`` entry; ``where`` names it in errors (e.g. model.heads[1])."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise XtuneError("%s: a head is a mapping with a 'type' key; valid types: %s"
                         % (where, ", ".join(HEADS)))
    if spec["type"] not in HEADS:
        raise XtuneError("%s.type: unknown head %r; valid: %s" % (where, spec["type"], ", ".join(HEADS)))
    valid = head_options(spec["type"])
    for key in spec:
        if key != "type" and key not in valid:
            raise XtuneError("%s: unknown option %r for head %r; valid: %s"
                             % (where, key, spec["type"], ", ".join(valid) or "(none)"))


def apply_heads(x, specs):
    """Stack the heads in order; each gets a stable layer name ``head-<i>-<type>``."""
    for i, spec in enumerate(specs):
        validate_head(spec, "model.heads[%d]" % i)
        options = {k: v for k, v in spec.items() if k != "type"}
        x = HEADS[spec["type"]](x, name="head-%d-%s" % (i, spec["type"]), **options)
    return x
