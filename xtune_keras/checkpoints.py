"""Google-format BERT checkpoints: write, read, check against a config, and tiny ones for tests.

A Google checkpoint is a TF "V2 bundle" (``<prefix>.index`` + ``<prefix>.data-*``) keyed by the
original variable names (``bert/encoder/layer_0/attention/self/query/kernel`` ...). bert4keras's
``save_weights_as_checkpoint`` writes one through a TF1 ``Session``; here the ``SaveV2`` op runs
eagerly, which writes the same bundle without graphs or sessions.
"""
import json
import os

import numpy as np
import tensorflow as tf

from xtune_keras.errors import XtuneError

CONFIG_NAME = "bert_config.json"
VOCAB_NAME = "vocab.txt"
CHECKPOINT_NAME = "bert_model.ckpt"

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# A small vocabulary that still tokenizes English words, digits and common Chinese characters,
# so tests can write real sentences. Order is fixed: ids must not change between versions.
TINY_WORDS = (
    "the a of to and in is for on that with by as at from it be this are was not or "
    "price stock bank oil trade grain market company share shares profit loss year said "
    "road street city water power noise repair complaint address please fix broken light "
    "good bad great movie book phone service fast slow happy sad ##s ##ed ##ing ##er ##ly"
).split()
TINY_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?;:-()'\"/")
TINY_HAN = list(
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产"
    "种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从"
    "业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又"
    "么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位"
    "入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放"
    "决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受"
    "联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离"
    "华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复"
    "容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值"
    "号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参"
    "红细引听该铁价严龙飞噪音投诉地址小区物业维修路灯漏水停电"
)


def save_variables(variables, prefix):
    """Write ``{name: array}`` as a Google-format checkpoint at ``prefix`` (no TF1 session)."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    names = sorted(variables)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(variables[n]) for n in names],
    )
    # The small text file that tf.train.latest_checkpoint reads, as Google's releases ship it.
    with open(os.path.join(os.path.dirname(os.path.abspath(prefix)), "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "%s"\n' % os.path.basename(prefix))


def load_variables(prefix):
    """Every variable of a checkpoint as ``{name: numpy array}``."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def checkpoint_shapes(prefix):
    """``{name: shape}`` of a checkpoint, or an XtuneError naming the path when unreadable."""
    try:
        return {name: tuple(shape) for name, shape in tf.train.list_variables(prefix)}
    except (tf.errors.OpError, ValueError) as exc:
        raise XtuneError("%s: not a readable TensorFlow checkpoint (%s)" % (prefix, _first_line(exc)))


def _first_line(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _mapped_weights(transformer):
    """``(google_name, keras_weight)`` pairs of a built bert4keras transformer's variable mapping."""
    for layer_name, names in transformer.variable_mapping().items():
        layer = transformer.layers.get(transformer.prefixed(layer_name))
        if layer is not None:
            yield from zip(names, layer.trainable_weights)


# bert4keras keeps this one transposed relative to the checkpoint (see BERT.load_variable).
_TRANSPOSED = "cls/seq_relationship/output_weights"


def transformer_variables(transformer):
    """``{google_name: value}`` of a built bert4keras transformer, via its variable mapping."""
    return {name: weight.numpy().T if name == _TRANSPOSED else weight.numpy()
            for name, weight in _mapped_weights(transformer)}


def expected_shapes(transformer):
    """``{google_name: shape}`` that a checkpoint must hold for this transformer."""
    shapes = {}
    for name, weight in _mapped_weights(transformer):
        if name == "bert/embeddings/word_embeddings" and transformer.keep_tokens is not None:
            continue  # keep_tokens selects rows: the stored vocabulary may be larger
        shape = tuple(weight.shape)
        shapes[name] = shape[::-1] if name == _TRANSPOSED else shape
    return shapes


def check_checkpoint(transformer, prefix, config_path):
    """Raise an XtuneError naming the first variable that is missing or of the wrong shape."""
    stored = checkpoint_shapes(prefix)
    for name, shape in expected_shapes(transformer).items():
        if name not in stored:
            raise XtuneError(
                "%s: variable %s is missing (the model built from %s needs it)"
                % (prefix, name, config_path)
            )
        if stored[name] != shape:
            raise XtuneError(
                "%s: variable %s has shape %s but %s implies %s"
                % (prefix, name, list(stored[name]), config_path, list(shape))
            )


def save_transformer_checkpoint(transformer, prefix):
    """Write a bert4keras transformer's weights as a Google checkpoint (replaces TF1 code)."""
    save_variables(transformer_variables(transformer), prefix)


def tiny_config(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=13,
                max_position_embeddings=64, vocab_size=None):
    """A BERT config with deliberately odd sizes, so shape mix-ups cannot cancel out."""
    return {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "type_vocab_size": 2,
        "vocab_size": vocab_size or len(tiny_vocab()),
    }


def tiny_vocab():
    """Tokens in id order, each once (a repeated token would shift every later id)."""
    return list(dict.fromkeys(SPECIAL_TOKENS + TINY_WORDS + TINY_CHARS + list(TINY_HAN)))


def write_tiny_checkpoint(directory, model="bert", seed=0, **sizes):
    """Write bert_config.json, vocab.txt and a checkpoint with random weights; return their paths.

    Values are drawn in numpy (stddev 0.02 like google-research/bert's initializer, LayerNorm
    gamma near 1) for exactly the variables a Google checkpoint of this model holds, including the
    pooler and MLM head, so further-pretraining code finds them too.
    """
    from xtune_keras.encoders import build_transformer

    os.makedirs(directory, exist_ok=True)
    vocab = tiny_vocab()
    config = tiny_config(vocab_size=len(vocab), **sizes)
    if model == "albert":
        config["embedding_size"] = max(2, config["hidden_size"] // 2 + 1)
    config_path = os.path.join(directory, CONFIG_NAME)
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(directory, VOCAB_NAME), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    transformer = build_transformer(config_path, model=model, with_pool=True, with_mlm=True)
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in sorted(expected_shapes(transformer).items()):
        if name.endswith("gamma"):
            values[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            values[name] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    prefix = os.path.join(directory, CHECKPOINT_NAME)
    save_variables(values, prefix)
    return {"config": config_path, "checkpoint": prefix, "vocab": os.path.join(directory, VOCAB_NAME)}
