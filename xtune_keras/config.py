"""Experiment configuration: YAML -> defaults merged -> ``key=value`` overrides -> validated dict.

Only the runner reads this dict; builders get flat arguments from it. Every key has a default
here, so an unknown key (a typo) is an error that lists the valid keys at that level.
"""
import copy
import hashlib
import json
import os

import yaml

from xtune_keras.errors import XtuneError
from xtune_keras.heads import validate_head
from xtune_keras.losses import LOSSES
from xtune_keras.optimizers import OPTIMIZERS
from xtune_keras.truncation import STRATEGIES

DEFAULTS = {
    "name": None,  # experiment name: names the .h5 and the runs/ folder; default: YAML file stem
    "seed": 0,
    "data": {
        "train": None,  # table file: csv, tsv, jsonl, json, xlsx
        "valid": None,  # a file, or null with valid_ratio
        "valid_ratio": None,  # seeded share of train held out for validation
        "split_seed": 0,
        "test": None,
        "text1": ["text"],  # columns joined (space) into the first segment
        "text2": [],  # columns joined into the second segment (empty: single segment)
        "label": "label",
        "multi_label": True,
        "label_sep": "|",  # separates labels inside one cell, e.g. "road|noise"
        "clean_patterns": [],  # regexes removed from every text (e.g. repeated templates)
        "max_len": 128,
        "truncation": "head",  # head | tail | head+tail (Sun et al. 2019)
        "head_ratio": 0.25,  # head+tail: share of the budget kept from the head (128 of 510)
        "lowercase": True,
    },
    "encoder": {
        "dir": None,  # Google-format folder: bert_config.json, vocab.txt, bert_model.ckpt.*
        "config": None,
        "checkpoint": None,
        "vocab": None,
        "model": "bert",  # bert (roberta-wwm loads as bert) | albert
    },
    "model": {
        "heads": [{"type": "cls"}, {"type": "mlp", "units": [256], "dropout": 0.1}],
        "loss": "bce",  # bce (sigmoid, multi-label) | ce (softmax, single label)
        "threshold": 0.5,
    },
    "train": {
        "optimizer": "adam",
        "lr": 5e-4,
        "batch_size": 64,
        "epochs": 5,
        "monitor": "val_loss",  # val_loss | val_acc | val_micro_f1 | val_macro_f1 | val_subset_acc
        "patience": 0,
        "restore_best": True,
        "save_optimizer": False,
        "deterministic": True,
    },
    "output": {
        "h5": None,  # default: checkpoints/<name>.h5
        "runs_dir": "runs",
        "tensorboard": True,
    },
}

MONITORS = ("val_loss", "val_acc", "val_subset_acc", "val_micro_f1", "val_macro_f1")
# Keys whose value is a free-form mapping or list, not a section of further keys.
OPAQUE = {("model", "heads")}
# PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string: numbers are coerced here.
NUMBERS = {"train.lr", "model.threshold", "data.head_ratio", "data.valid_ratio"}


def load_config(path, overrides=()):
    """Read a YAML experiment, apply ``key=value`` overrides, validate, fill defaults."""
    raw = _read_yaml(path)
    for item in overrides:
        _apply_override(raw, item)
    config = _merge(copy.deepcopy(DEFAULTS), raw, (), path)
    if not config["name"]:
        config["name"] = os.path.splitext(os.path.basename(path))[0]
    validate(config, path)
    return config


def _read_yaml(path):
    if not os.path.isfile(path):
        raise XtuneError("%s: experiment file not found" % path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except UnicodeDecodeError as exc:
        raise XtuneError("%s: not UTF-8 text (byte at position %d)" % (path, exc.start))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " line %d" % (mark.line + 1) if mark else ""
        raise XtuneError("%s%s: invalid YAML (%s)" % (path, where, getattr(exc, "problem", exc)))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise XtuneError("%s: an experiment is a YAML mapping of sections (data, encoder, model, train, output)" % path)
    return raw


def _apply_override(raw, item):
    """``train.lr=1e-4`` -> raw['train']['lr'] = 1e-4 (value parsed as YAML)."""
    if "=" not in item:
        raise XtuneError("override %r: expected key=value, e.g. train.lr=2e-5" % item)
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise XtuneError("override %r: %s is not a section" % (item, part))
    node[parts[-1]] = yaml.safe_load(value)


def _merge(defaults, raw, prefix, path):
    for key, value in raw.items():
        dotted = ".".join(prefix + (key,))
        if key not in defaults:
            where = "'%s'" % ".".join(prefix) if prefix else "the top level"
            raise XtuneError("%s: unknown key '%s'; valid keys at %s: %s"
                             % (path, dotted, where, ", ".join(defaults)))
        if isinstance(defaults[key], dict) and (prefix + (key,)) not in OPAQUE:
            if not isinstance(value, dict):
                raise XtuneError("%s: '%s' must be a mapping with keys: %s"
                                 % (path, dotted, ", ".join(defaults[key])))
            _merge(defaults[key], value, prefix + (key,), path)
        else:
            defaults[key] = _coerce_number(value, dotted, path) if dotted in NUMBERS else value
    return defaults


def _coerce_number(value, dotted, path):
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise XtuneError("%s: '%s' must be a number (got %r)" % (path, dotted, value))


def _choice(path, key, value, valid):
    if value not in valid:
        raise XtuneError("%s: %s: unknown choice %r; valid: %s" % (path, key, value, ", ".join(valid)))


def validate(config, path):
    data, train, model = config["data"], config["train"], config["model"]
    if not data["train"]:
        raise XtuneError("%s: data.train is required (a csv/tsv/jsonl/xlsx file)" % path)
    if not data["valid"] and not data["valid_ratio"]:
        raise XtuneError("%s: set data.valid (a file) or data.valid_ratio (e.g. 0.1)" % path)
    for key in ("text1", "text2", "clean_patterns"):
        if isinstance(data[key], str):
            data[key] = [data[key]]
    if not data["text1"]:
        raise XtuneError("%s: data.text1 must name at least one column" % path)
    _choice(path, "data.truncation", data["truncation"], STRATEGIES)
    _choice(path, "model.loss", model["loss"], LOSSES)
    _choice(path, "train.optimizer", train["optimizer"], OPTIMIZERS)
    _choice(path, "train.monitor", train["monitor"], MONITORS)
    if not isinstance(model["heads"], list) or not model["heads"]:
        raise XtuneError("%s: model.heads must be a non-empty list of heads" % path)
    for i, head in enumerate(model["heads"]):
        validate_head(head, "%s: model.heads[%d]" % (path, i))
    if not config["encoder"]["dir"] and not config["encoder"]["config"]:
        raise XtuneError("%s: set encoder.dir (a Google-format BERT folder)" % path)
    for key, low in (("data.max_len", 8), ("train.batch_size", 1), ("train.epochs", 1)):
        section, name = key.split(".")
        value = config[section][name]
        if not isinstance(value, int) or value < low:
            raise XtuneError("%s: %s must be an integer >= %d (got %r)" % (path, key, low, value))


def config_hash(config):
    """Short stable hash of everything that changes results (the seed has its own folder)."""
    relevant = {k: v for k, v in config.items() if k not in ("seed", "output")}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def dump_config(config, path):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, allow_unicode=True, sort_keys=False)
