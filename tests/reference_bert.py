"""A NumPy BERT encoder forward pass over Hugging Face parameter names, for parity tests.

It reads the PyTorch-layout tensors (``encoder.layer.0.attention.self.query.weight``, ``[out, in]``)
directly and computes in float64, so it shares nothing with bert4keras or with the converter:
if both agree with it, the conversion preserved the model. Dropout is off (inference).
"""
import math

import numpy as np

LAYER_NORM_EPS = 1e-12
# Added to attention scores of padding keys; exp() of it is exactly 0 in float64.
MASK_VALUE = -1e9

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    """The exact GELU, x * Phi(x), that Hugging Face's "gelu" and Google's BERT use."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _param(weights, name):
    """A tensor by its BertModel name, accepting a ``bert.`` prefix and old gamma/beta names."""
    old = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    for candidate in (name, "bert." + name, old, "bert." + old):
        if candidate in weights:
            return np.asarray(weights[candidate], dtype=np.float64)
    raise KeyError(name)


def _linear(weights, name, x):
    # nn.Linear: y = x W^T + b, with W stored [out, in].
    return x @ _param(weights, name + ".weight").T + _param(weights, name + ".bias")


def _layer_norm(weights, name, x):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed = (x - mean) / np.sqrt(var + LAYER_NORM_EPS)
    return normed * _param(weights, name + ".weight") + _param(weights, name + ".bias")


def _embeddings(weights, token_ids, segment_ids):
    positions = np.arange(token_ids.shape[1])
    x = (
        _param(weights, "embeddings.word_embeddings.weight")[token_ids]
        + _param(weights, "embeddings.position_embeddings.weight")[positions][None]
        + _param(weights, "embeddings.token_type_embeddings.weight")[segment_ids]
    )
    return _layer_norm(weights, "embeddings.LayerNorm", x)


def _self_attention(weights, prefix, x, key_bias, num_heads):
    batch, length, hidden = x.shape
    size = hidden // num_heads

    def heads(part):  # [batch, length, hidden] -> [batch, heads, length, size]
        y = _linear(weights, prefix + "attention.self." + part, x)
        return y.reshape(batch, length, num_heads, size).transpose(0, 2, 1, 3)

    q, k, v = heads("query"), heads("key"), heads("value")
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + key_bias
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    return _linear(weights, prefix + "attention.output.dense", context)


def _layer(weights, index, x, key_bias, num_heads):
    prefix = "encoder.layer.%d." % index
    attended = _self_attention(weights, prefix, x, key_bias, num_heads)
    x = _layer_norm(weights, prefix + "attention.output.LayerNorm", x + attended)
    inner = gelu(_linear(weights, prefix + "intermediate.dense", x))
    out = _linear(weights, prefix + "output.dense", inner)
    return _layer_norm(weights, prefix + "output.LayerNorm", x + out)


def bert_sequence_output(weights, token_ids, segment_ids, num_layers, num_heads, pad_id=0):
    """BertModel's last hidden state, float64 ``[batch, length, hidden]``.

    Keys equal to ``pad_id`` are masked out of attention (as ``attention_mask = ids != pad``).
    """
    token_ids, segment_ids = np.asarray(token_ids), np.asarray(segment_ids)
    key_bias = np.where(token_ids == pad_id, MASK_VALUE, 0.0)[:, None, None, :]
    x = _embeddings(weights, token_ids, segment_ids)
    for index in range(num_layers):
        x = _layer(weights, index, x, key_bias, num_heads)
    return x
