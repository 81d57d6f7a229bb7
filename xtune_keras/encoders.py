"""Encoders: a Google-format checkpoint directory loaded by bert4keras.

roberta-wwm checkpoints (chinese_roberta_wwm_ext, RoBERTa-large-pair) are BERT-format and load
with ``model: bert``; ``albert`` uses bert4keras's ALBERT mapping.
"""
import json
import os

from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer, load_vocab

from xtune_keras.checkpoints import CHECKPOINT_NAME, CONFIG_NAME, VOCAB_NAME, check_checkpoint
from xtune_keras.errors import XtuneError

MODELS = ("bert", "roberta", "albert")


def resolve_encoder_paths(directory=None, config=None, checkpoint=None, vocab=None):
    """Paths of config, checkpoint prefix and vocab; explicit paths win over the directory."""
    if directory:
        config = config or os.path.join(directory, CONFIG_NAME)
        checkpoint = checkpoint or os.path.join(directory, CHECKPOINT_NAME)
        vocab = vocab or os.path.join(directory, VOCAB_NAME)
    if not config or not os.path.isfile(config):
        raise XtuneError("encoder config not found: %s (set encoder.dir or encoder.config)" % config)
    if not vocab or not os.path.isfile(vocab):
        raise XtuneError("encoder vocab not found: %s (set encoder.dir or encoder.vocab)" % vocab)
    if checkpoint and not os.path.exists(checkpoint + ".index"):
        raise XtuneError("encoder checkpoint not found: %s(.index)" % checkpoint)
    return {"config": config, "checkpoint": checkpoint, "vocab": vocab}


def read_config(config_path):
    try:
        with open(config_path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise XtuneError("%s: not a JSON BERT config (%s)" % (config_path, exc))


def build_transformer(config_path, checkpoint_path=None, model="bert", **kwargs):
    """A bert4keras transformer object; checkpoint shapes are checked before loading."""
    if model not in MODELS:
        raise XtuneError("encoder.model: unknown model %r; valid: %s" % (model, ", ".join(MODELS)))
    read_config(config_path)
    transformer = build_transformer_model(
        config_path, None, model=model, return_keras_model=False, **kwargs
    )
    if checkpoint_path:
        check_checkpoint(transformer, checkpoint_path, config_path)
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer


def build_tokenizer(vocab_path, do_lower_case=True):
    try:
        token_dict = load_vocab(vocab_path)
    except UnicodeDecodeError as exc:
        raise XtuneError("%s: vocab is not UTF-8 (%s)" % (vocab_path, exc))
    return Tokenizer(token_dict, do_lower_case=do_lower_case)
