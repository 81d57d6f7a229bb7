"""Hugging Face ``BertModel`` folder -> Google-format BERT checkpoint directory.

A Hugging Face BERT folder holds ``config.json``, ``vocab.txt`` and ``model.safetensors`` (or the
older pickled ``pytorch_model.bin``), with PyTorch parameter names (``encoder.layer.0.attention.
self.query.weight``). bert4keras loads Google's layout instead: ``bert_config.json``, ``vocab.txt``
and a TF checkpoint keyed ``bert/encoder/layer_0/attention/self/query/kernel``. The conversion is a
renaming plus a transpose of every ``nn.Linear`` weight (PyTorch stores ``[out, in]``, a TF dense
kernel is ``[in, out]``); values are copied bit for bit.

``model.safetensors`` is read with the ``safetensors`` package's numpy API; reading
``pytorch_model.bin`` needs ``torch``.
"""
import json
import logging
import os
import re
import shutil

import numpy as np

from xtune_keras.convert.checkpoints import CHECKPOINT_NAME, CONFIG_NAME, VOCAB_NAME, save_variables
from xtune_keras.errors import XtuneError

logger = logging.getLogger(__name__)

HF_CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"

# bert4keras's BERT hard-codes LayerNormalization(epsilon=1e-12), as Google's BERT does.
LAYER_NORM_EPS = 1e-12

# Google's bert_config.json keys, with Hugging Face BertConfig's defaults for the ones a config
# may leave out. The size keys have no default: a config without them is not a BERT config.
GOOGLE_CONFIG_DEFAULTS = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": None,
    "initializer_range": 0.02,
    "intermediate_size": None,
    "max_position_embeddings": 512,
    "num_attention_heads": None,
    "num_hidden_layers": None,
    "type_vocab_size": 2,
    "vocab_size": None,
}

# Hugging Face activation name -> the name bert4keras resolves to the same function. bert4keras's
# "gelu" is the exact erf form (as HF's "gelu"); "gelu_tanh" is registered by xtune_keras.compat.
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

# Tensors a BertModel state dict carries that are not weights (index buffers) or that repeat
# another tensor (the MLM decoder is tied to the word embeddings and to cls.predictions.bias).
_NOT_WEIGHTS = (
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
)

_LAYER_INDEX = re.compile(r"^encoder\.layer\.(\d+)\.")


def read_safetensors(path):
    """``{name: array}`` of a ``.safetensors`` file; floats come back as float32, because that is
    what a Google checkpoint and bert4keras hold."""
    import ml_dtypes  # (ships with TensorFlow; teaches numpy the BF16 dtype safetensors stores)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, TypeError, ValueError) as exc:
        raise XtuneError("%s: not a readable safetensors file (%s)" % (path, str(exc).splitlines()[0]))
    floats = (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)
    return {name: array.astype(np.float32) if array.dtype in floats else array for name, array in tensors.items()}


def read_hf_weights(src_dir):
    """``{name: array}`` from ``model.safetensors``, else ``pytorch_model.bin``, in ``src_dir``."""
    path = _weights_path(src_dir)
    if path.endswith(SAFETENSORS_NAME):
        return read_safetensors(path)
    return _read_torch_weights(path)


def _weights_path(src_dir):
    for name in (SAFETENSORS_NAME, TORCH_WEIGHTS_NAME):
        path = os.path.join(src_dir, name)
        if os.path.isfile(path):
            return path
    raise XtuneError(
        "no weights file in %s (expected %s or %s)" % (src_dir, SAFETENSORS_NAME, TORCH_WEIGHTS_NAME)
    )


def _read_torch_weights(path):
    """A pickled PyTorch state dict as numpy arrays (floats widened to float32, like safetensors)."""
    try:
        import torch  # only this older format needs it; it is not a dependency of xtune_keras
    except ImportError:
        raise XtuneError(
            "%s: reading a PyTorch weights file needs torch, which is not installed "
            "(pip install torch, or provide %s instead)" % (path, SAFETENSORS_NAME)
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling fails in many ways; each means "not a state dict"
        raise XtuneError("%s: not a readable PyTorch state dict (%s)" % (path, str(exc).strip().splitlines()[0]))
    return {
        name: (tensor.float() if tensor.is_floating_point() else tensor).numpy()
        for name, tensor in state.items()
    }


def _dense(hf, google):
    # nn.Linear.weight is [out, in]; a TF dense kernel is [in, out].
    return {hf + ".weight": (google + "/kernel", True), hf + ".bias": (google + "/bias", False)}


def _layer_norm(hf, google):
    # transformers < 4 (and TF-converted checkpoints) named the LayerNorm parameters gamma/beta.
    return {
        hf + ".weight": (google + "/gamma", False), hf + ".gamma": (google + "/gamma", False),
        hf + ".bias": (google + "/beta", False), hf + ".beta": (google + "/beta", False),
    }


def _encoder_names(num_layers):
    """``{hf_name: (google_name, transpose)}`` of every tensor the encoder needs."""
    names = {
        "embeddings.%s.weight" % kind: ("bert/embeddings/%s" % kind, False)
        for kind in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    }
    names.update(_layer_norm("embeddings.LayerNorm", "bert/embeddings/LayerNorm"))
    for i in range(num_layers):
        hf, google = "encoder.layer.%d." % i, "bert/encoder/layer_%d/" % i
        for part in ("query", "key", "value"):
            names.update(_dense(hf + "attention.self." + part, google + "attention/self/" + part))
        names.update(_dense(hf + "attention.output.dense", google + "attention/output/dense"))
        names.update(_layer_norm(hf + "attention.output.LayerNorm", google + "attention/output/LayerNorm"))
        names.update(_dense(hf + "intermediate.dense", google + "intermediate/dense"))
        names.update(_dense(hf + "output.dense", google + "output/dense"))
        names.update(_layer_norm(hf + "output.LayerNorm", google + "output/LayerNorm"))
    return names


def _head_names():
    """``{hf_name: (google_name, transpose)}`` of the optional pooler, MLM and NSP heads."""
    names = _dense("pooler.dense", "bert/pooler/dense")
    names.update(_dense("cls.predictions.transform.dense", "cls/predictions/transform/dense"))
    names.update(_layer_norm("cls.predictions.transform.LayerNorm", "cls/predictions/transform/LayerNorm"))
    names["cls.predictions.bias"] = ("cls/predictions/output_bias", False)
    # Google stores the NSP weights as [2, hidden], the same layout as nn.Linear: no transpose.
    names["cls.seq_relationship.weight"] = ("cls/seq_relationship/output_weights", False)
    names["cls.seq_relationship.bias"] = ("cls/seq_relationship/output_bias", False)
    return names


def hf_to_google(weights, num_layers, source="the weights", ignored=None):
    """Google-named float32 variables from Hugging Face BERT tensors.

    Names may carry a ``bert.`` prefix (BertForPreTraining and friends). Tensors that are not
    BERT weights are skipped; their names are appended to ``ignored`` when a list is given, and
    logged. ``source`` names the weights file in error messages.
    """
    encoder, table = _encoder_names(num_layers), _head_names()
    table.update(encoder)
    variables, origin = {}, {}
    for name, value in weights.items():
        short = name[len("bert."):] if name.startswith("bert.") else name
        if short in _NOT_WEIGHTS:
            continue
        if short not in table:
            _check_layer_index(short, num_layers, source)
            if ignored is not None:
                ignored.append(name)
            logger.info("%s: ignoring tensor %s (not part of BERT)", source, name)
            continue
        google, transpose = table[short]
        if google in origin:
            raise XtuneError("%s: tensors %s and %s both hold %s" % (source, origin[google], name, google))
        value = np.asarray(value, dtype=np.float32)
        variables[google], origin[google] = np.ascontiguousarray(value.T if transpose else value), name
    _check_encoder_complete(variables, encoder, source)
    return variables


def _check_layer_index(name, num_layers, source):
    # A layer the config does not count would otherwise be dropped without a word.
    match = _LAYER_INDEX.match(name)
    if match and int(match.group(1)) >= num_layers:
        raise XtuneError(
            "%s: tensor %s belongs to layer %s, but the config has num_hidden_layers=%d"
            % (source, name, match.group(1), num_layers)
        )


def _check_encoder_complete(variables, encoder, source):
    wanted = {}
    for hf, (google, _) in encoder.items():
        wanted.setdefault(google, hf)  # the first (modern) spelling names the missing tensor
    for google, hf in wanted.items():
        if google not in variables:
            raise XtuneError("%s: tensor %s is missing (needed for %s)" % (source, hf, google))


def hf_config_to_google(hf_config, source=HF_CONFIG_NAME):
    """A Google ``bert_config.json`` dict from a Hugging Face BERT ``config.json`` dict."""
    _check_bert_architecture(hf_config, source)
    missing = [key for key, default in GOOGLE_CONFIG_DEFAULTS.items() if default is None and key not in hf_config]
    if missing:
        raise XtuneError("%s: missing BERT config key(s) %s" % (source, ", ".join(missing)))
    config = {key: hf_config.get(key, default) for key, default in GOOGLE_CONFIG_DEFAULTS.items()}
    if config["hidden_act"] not in _ACTIVATIONS:
        raise XtuneError(
            "%s: hidden_act %r is not supported; supported: %s"
            % (source, config["hidden_act"], ", ".join(_ACTIVATIONS))
        )
    config["hidden_act"] = _ACTIVATIONS[config["hidden_act"]]
    if config["hidden_size"] % config["num_attention_heads"]:
        raise XtuneError(
            "%s: hidden_size %d is not a multiple of num_attention_heads %d"
            % (source, config["hidden_size"], config["num_attention_heads"])
        )
    return config


def _check_bert_architecture(hf_config, source):
    """Reject configs whose weights would load but compute something else in bert4keras's BERT."""
    eps = hf_config.get("layer_norm_eps", LAYER_NORM_EPS)
    if eps != LAYER_NORM_EPS:
        raise XtuneError(
            "%s: layer_norm_eps is %r, but bert4keras's BERT hard-codes %r" % (source, eps, LAYER_NORM_EPS)
        )
    if hf_config.get("model_type", "bert") != "bert":
        raise XtuneError("%s: model_type is %r; only 'bert' can be converted" % (source, hf_config["model_type"]))
    position = hf_config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise XtuneError(
            "%s: position_embedding_type is %r; bert4keras's BERT has only 'absolute'" % (source, position)
        )


def expected_shape(google_name, config):
    """The shape a Google BERT variable has under ``config`` (a Google config dict)."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    rules = (
        ("bert/embeddings/word_embeddings", (config["vocab_size"], hidden)),
        ("bert/embeddings/position_embeddings", (config["max_position_embeddings"], hidden)),
        ("bert/embeddings/token_type_embeddings", (config["type_vocab_size"], hidden)),
        ("cls/predictions/output_bias", (config["vocab_size"],)),
        ("cls/seq_relationship/output_weights", (2, hidden)),
        ("cls/seq_relationship/output_bias", (2,)),
        ("/intermediate/dense/kernel", (hidden, inner)),
        ("/intermediate/dense/bias", (inner,)),
        ("/attention/output/dense/kernel", (hidden, hidden)),
        ("/output/dense/kernel", (inner, hidden)),  # checked after the attention output above
        ("/kernel", (hidden, hidden)),
    )
    for suffix, shape in rules:
        if google_name.endswith(suffix):
            return shape
    return (hidden,)  # biases of hidden-sized dense layers, LayerNorm gamma and beta


def check_shapes(variables, config, source):
    """Raise an XtuneError naming the first variable whose shape disagrees with the config."""
    for name in sorted(variables):
        shape, want = tuple(variables[name].shape), expected_shape(name, config)
        if shape != want:
            raise XtuneError(
                "%s: %s has shape %s but the config implies %s" % (source, name, list(shape), list(want))
            )


def convert_hf(src_dir, dst_dir):
    """Convert a Hugging Face BERT folder into a Google-format one that bert4keras loads.

    Returns ``{'config', 'checkpoint', 'vocab'}`` paths in ``dst_dir``. Everything is read and
    checked before ``dst_dir`` is touched, so a bad source leaves nothing half-written.
    """
    if not os.path.isdir(src_dir):
        raise XtuneError("Hugging Face model folder not found: %s" % src_dir)
    config_path = _source_file(src_dir, HF_CONFIG_NAME, "model config")
    vocab_path = _source_file(src_dir, VOCAB_NAME, "WordPiece vocabulary")
    weights_path = _weights_path(src_dir)
    config = hf_config_to_google(_read_json(config_path), config_path)
    _check_vocab(vocab_path, config["vocab_size"])
    ignored = []
    variables = hf_to_google(read_hf_weights(src_dir), config["num_hidden_layers"], weights_path, ignored)
    check_shapes(variables, config, weights_path)
    if ignored:
        logger.warning("%s: ignored %d tensor(s) that are not BERT weights: %s",
                       weights_path, len(ignored), ", ".join(ignored))
    return _write_google_dir(dst_dir, config, vocab_path, variables)


def _source_file(src_dir, name, what):
    path = os.path.join(src_dir, name)
    if not os.path.isfile(path):
        raise XtuneError("%s not found: %s" % (what, path))
    return path


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise XtuneError("%s: not a JSON config (%s)" % (path, exc))
    if not isinstance(config, dict):
        raise XtuneError("%s: not a JSON object" % path)
    return config


def _check_vocab(vocab_path, vocab_size):
    # A token id past the embedding table fails only at lookup time, deep inside TensorFlow.
    try:
        with open(vocab_path, encoding="utf-8") as f:
            count = sum(1 for line in f if line.strip())
    except UnicodeDecodeError as exc:
        raise XtuneError("%s: vocab is not UTF-8 (%s)" % (vocab_path, exc))
    if count > vocab_size:
        raise XtuneError("%s: %d tokens but the config has vocab_size=%d" % (vocab_path, count, vocab_size))


def _write_google_dir(dst_dir, config, vocab_path, variables):
    """Write checkpoint, vocab and config; the config goes last, so it marks a complete folder."""
    if os.path.exists(dst_dir) and not os.path.isdir(dst_dir):
        raise XtuneError("output folder is a file: %s" % dst_dir)
    os.makedirs(dst_dir, exist_ok=True)
    paths = {
        "config": os.path.join(dst_dir, CONFIG_NAME),
        "checkpoint": os.path.join(dst_dir, CHECKPOINT_NAME),
        "vocab": os.path.join(dst_dir, VOCAB_NAME),
    }
    save_variables(variables, paths["checkpoint"])
    if os.path.abspath(vocab_path) != os.path.abspath(paths["vocab"]):
        shutil.copyfile(vocab_path, paths["vocab"])
    with open(paths["config"], "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return paths
