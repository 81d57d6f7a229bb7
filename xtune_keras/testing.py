"""Tiny Google-format BERT checkpoints for tests and examples (``xtune tiny-checkpoint``).

Random weights with deliberately odd sizes, and a small vocabulary that still tokenizes English
words, digits and common Chinese characters, so tests can write real sentences.
"""
import json
import os

import numpy as np

from xtune_keras.convert.checkpoints import (CHECKPOINT_NAME, CONFIG_NAME, VOCAB_NAME, expected_shapes,
                                             save_variables)
from xtune_keras.errors import XtuneError
from xtune_keras.model.encoders import build_transformer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Order is fixed: ids must not change between versions.
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


def read_vocab_lines(path):
    """The tokens of a vocab.txt in id order (one a line, repeats kept: ids are line numbers)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise XtuneError("%s: cannot read the vocabulary (%s)" % (path, str(exc).splitlines()[0]))


def write_tiny_checkpoint(directory, model="bert", seed=0, vocab=None, **sizes):
    """Write bert_config.json, vocab.txt and a checkpoint with random weights; return their paths.
    ``vocab``: a vocab.txt to use instead of the tiny one (e.g. a real encoder's, so that real text
    tokenizes as it would for that encoder; ``sizes`` then give a model of any shape, BERT-base's
    for speed benchmarks).

    Values are drawn in numpy (stddev 0.02 like google-research/bert's initializer, LayerNorm
    gamma near 1) for exactly the variables a Google checkpoint of this model holds, including the
    pooler and MLM head, so further-pretraining code finds them too.
    """
    os.makedirs(directory, exist_ok=True)
    vocab = tiny_vocab() if vocab is None else read_vocab_lines(vocab)
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
