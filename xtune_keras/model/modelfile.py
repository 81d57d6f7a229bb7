"""The ``.h5`` model file: Keras model plus what predicting needs, stored beside it in the file.

A trained ``.h5`` carries its label names, decision rule, text fields, truncation rule and the
tokenizer vocabulary in an ``xtune`` group (with a SentencePiece encoder, its serialized model
too), so ``xtune evaluate/predict MODEL.h5`` need nothing else. Keras ignores groups it does not
know. Files are written to a temporary name and renamed, so an interrupted save never destroys
the previous model.
"""
import json
import logging
import os

import h5py
import numpy as np
from bert4keras.backend import keras

from xtune_keras.model.encoders import SentencePieceVocab
from xtune_keras.errors import XtuneError
from xtune_keras.model.layers import custom_objects

class _UncompiledSaveFilter(logging.Filter):
    """Keras's save tries to build the compiled metrics of the model it writes; the classifier
    inside an adversarial or micro-batch trainer is never compiled (the trainer is), and Keras
    then warns "Compiled the loaded model, but the compiled metrics have yet to be built" at every
    checkpoint. The warning is about nothing: that model has no metrics to build."""

    def filter(self, record):
        return "the compiled metrics have yet to be built" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_UncompiledSaveFilter())

META_GROUP = "xtune"
SENTENCEPIECE_DATASET = "sentencepiece_model"


def save_model_file(model, path, meta, token_dict, include_optimizer=False):
    """Save ``model`` + meta + the tokenizer's ``{token: id}`` to ``path`` atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.tmp.h5" % os.path.basename(path))
    model.save(tmp, include_optimizer=include_optimizer, save_format="h5")
    with h5py.File(tmp, "a") as f:
        group = f.require_group(META_GROUP)
        group.attrs["meta"] = json.dumps(meta, ensure_ascii=False)
        # A dataset, not an attribute: attributes are limited to 64 KiB, vocabularies are larger.
        group.create_dataset("token_dict", data=json.dumps(token_dict, ensure_ascii=False),
                             dtype=h5py.string_dtype("utf-8"))
        if isinstance(token_dict, SentencePieceVocab):  # opaque bytes: np.void keeps NULs
            group.create_dataset(SENTENCEPIECE_DATASET, data=np.void(token_dict.model_proto))
    os.replace(tmp, path)


def update_meta(path, **changes):
    """Change entries of the stored meta (e.g. thresholds tuned after training) in place."""
    with h5py.File(path, "a") as f:
        meta = json.loads(f[META_GROUP].attrs["meta"])
        meta.update(changes)
        f[META_GROUP].attrs["meta"] = json.dumps(meta, ensure_ascii=False)


def read_meta(path):
    """``(meta, token_dict)`` from an xtune ``.h5``; a SentencePiece model's ``token_dict`` is an
    ``encoders.SentencePieceVocab`` (it carries the serialized model)."""
    if not os.path.isfile(path):
        raise XtuneError("%s: model file not found" % path)
    try:
        with h5py.File(path, "r") as f:
            if META_GROUP not in f:
                raise XtuneError("%s: not an xtune model (no '%s' group); train it with xtune" % (path, META_GROUP))
            meta = json.loads(f[META_GROUP].attrs["meta"])
            raw = f[META_GROUP]["token_dict"][()]
            token_dict = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            if SENTENCEPIECE_DATASET in f[META_GROUP]:
                token_dict = SentencePieceVocab(token_dict, f[META_GROUP][SENTENCEPIECE_DATASET][()].tobytes())
    except OSError as exc:
        raise XtuneError("%s: not an HDF5 model file (%s)" % (path, str(exc).splitlines()[0]))
    return meta, token_dict


def load_model_file(path, precision="float32"):
    """``(keras_model, meta, token_dict)``; the model is loaded without compiling, in float32 even
    when it was trained under a mixed-precision policy (its weights are float32 either way), or
    under ``precision`` (a mixed policy; ``auto`` as in training), its logits float32."""
    from xtune_keras.train.precision import resolve_precision

    meta, token_dict = read_meta(path)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"]) if "model_config" in f.attrs else None
    policy = resolve_precision(precision)[0]
    changed = config is not None and as_float32(config)
    if config is not None and policy != "float32":
        with_policy(config, policy)
    if not changed and policy == "float32":
        return keras.models.load_model(path, custom_objects=custom_objects(), compile=False), meta, token_dict
    # what load_model reads besides ours: bert4keras registers its layers as global custom objects
    objects = dict(keras.utils.get_custom_objects(), **custom_objects())
    model = keras.models.model_from_config(config, custom_objects=objects)
    model.load_weights(path)
    return model, meta, token_dict


FLOAT32_LAYERS = ("logits",)  # model/classifier.py: float32 under every policy


def with_policy(model_config, policy):
    """Every layer of a (float32) functional model config computes under ``policy``, except its
    inputs and ``FLOAT32_LAYERS``."""
    for layer in model_config["config"]["layers"]:
        if layer["class_name"] != "InputLayer" and layer["config"].get("name") not in FLOAT32_LAYERS:
            layer["config"]["dtype"] = policy


def as_float32(node):
    """Replaces every mixed-precision policy in a Keras model config by float32; True if any was."""
    changed = False
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, dict) and value.get("class_name") == "Policy":
            changed = changed or value["config"]["name"] != "float32"
            node[key] = "float32"
        elif isinstance(value, str) and key == "dtype" and value.startswith("mixed_"):
            node[key], changed = "float32", True
        else:
            changed = as_float32(value) or changed
    return changed
