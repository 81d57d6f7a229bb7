"""A config's data made ready for a model: tables read, labels collected, texts tokenized (through
the token cache), all input checks on the way. Recipes call ``prepare_data``."""
import os

from xtune_keras.data.tables import LabelVocab, load_examples, split_examples
from xtune_keras.data.token_cache import cache_key, cached_encode, tokenizer_id
from xtune_keras.data.truncation import encode_examples
from xtune_keras.model.encoders import build_tokenizer, resolve_encoder_paths


def read_split(data, path):
    return load_examples(
        path, data["text1"], data["text2"], data["label"], multi_label=data["multi_label"],
        label_sep=data["label_sep"], clean_patterns=data["clean_patterns"],
    )


def load_splits(data):
    """``{'train', 'valid', 'test'}`` Examples; 'test' is None when no test file is set."""
    train = read_split(data, data["train"])
    if data["valid"]:
        valid = read_split(data, data["valid"])
    else:
        train, valid = split_examples(train, data["valid_ratio"], data["split_seed"])
    test = read_split(data, data["test"]) if data["test"] else None
    return {"train": train, "valid": valid, "test": test}


def encode_split(tokenizer, examples, data):
    return encode_examples(tokenizer, examples, data["max_len"], data["truncation"], data["head_ratio"],
                           data["truncation2"])


def prepare_data(config):
    """Examples, labels, tokenizer and token ids of every split; all input checks happen here."""
    data, enc = config["data"], config["encoder"]
    splits = {k: v for k, v in load_splits(data).items() if v is not None}
    labels = LabelVocab.from_label_lists(*(s.labels for s in splits.values()))
    paths = resolve_encoder_paths(enc["dir"], enc["config"], enc["checkpoint"], enc["vocab"])
    tokenizer = build_tokenizer(paths["vocab"], data["lowercase"])
    return {
        "splits": splits, "labels": labels, "paths": paths, "tokenizer": tokenizer,
        "encoded": encode_splits(tokenizer, splits, config, paths["vocab"]),
        "targets": {name: labels.encode(ex) for name, ex in splits.items()},
    }


def encode_splits(tokenizer, splits, config, vocab_path):
    """Token ids of every split; with ``data.cache`` read from (or written to) the token cache,
    so the other variants and seeds of an ablation on the same data skip the tokenizer."""
    data = config["data"]
    if not data["cache"]:
        return {name: encode_split(tokenizer, ex, data) for name, ex in splits.items()}
    cache_dir = data["cache_dir"] or os.path.join(config["output"]["runs_dir"], "_cache", "tokens")
    tok_id = tokenizer_id(vocab_path, data["lowercase"])
    encoded = {}
    for name, ex in splits.items():
        key = cache_key(tok_id, ex, data["max_len"], data["truncation"], data["head_ratio"],
                        data["truncation2"])
        encoded[name] = cached_encode(cache_dir, key, len(ex),
                                      lambda ex=ex: encode_split(tokenizer, ex, data))
    return encoded
