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
from xtune_keras.model.heads import validate_head
from xtune_keras.model.losses import validate_loss
from xtune_keras.train.optimizers import OPTIMIZERS
from xtune_keras.data.truncation import STRATEGIES

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
        "truncation2": None,  # rule for text2 if different, e.g. head of a text in text1, tail in text2
        "head_ratio": 0.25,  # head+tail: share of the budget kept from the head (128 of 510)
        "lowercase": True,
        "cache": True,  # keep token ids on disk: variants and seeds of the same data tokenize once
        "cache_dir": None,  # null: <output.runs_dir>/_cache/tokens
    },
    "encoder": {
        "dir": None,  # Google-format folder: bert_config.json, vocab.txt, bert_model.ckpt.*
        "config": None,
        "checkpoint": None,
        "vocab": None,
        "model": "bert",  # bert (roberta-wwm loads as bert) | albert
        "output_layer": -1,  # transformer layer the heads read (0-based; -1 = last, -2 = 11th of 12)
        "pool_layers": 1,  # combine the last k layers ending at output_layer (Sun et al.: 4)
        "pool_mode": "concat",  # concat | mean | max
        "freeze": False,  # true: the whole encoder is frozen (only the heads train)
        "freeze_pattern": None,  # regex on layer names, e.g. "^Embedding-|^Transformer-[0-5]-"
        "unfreeze_epoch": None,  # frozen layers start training after this many epochs
        "dropout": None,  # hidden dropout; null: the checkpoint config's hidden_dropout_prob
        "attention_dropout": None,  # null: attention_probs_dropout_prob of the config
    },
    "model": {
        "heads": [{"type": "cls"}, {"type": "mlp", "units": [256], "dropout": 0.1}],
        # bce | ce | focal | multilabel_ce, or {type: focal, alpha: 0.25, gamma: 2.0},
        # {type: bce, label_smoothing: 0.1}; see xtune_keras/losses.py
        "loss": "bce",
        "threshold": 0.5,  # multi-label decision: a number, or "tuned" (per label, on validation)
    },
    "train": {
        "optimizer": "adam",  # adam | adamw (google-research/bert: decay 0.01, clip 1.0, eps 1e-6)
        "lr": 5e-4,  # the heads' LR; the encoder's is lr * encoder_lr_ratio
        "encoder_lr_ratio": 1.0,  # the write-up's [5e-5, 2e-4]: lr 2e-4, ratio 0.25
        "layer_decay": None,  # layer-wise LR decay xi (Sun et al. 2019 best: 0.95)
        "lr_multipliers": None,  # {variable-name substring: factor}; 0 freezes what it names
        "weight_decay": None,  # null: the optimizer's default (adam 0, adamw 0.01)
        "clip_norm": None,  # global-norm clipping; null: default (adam none, adamw 1.0); 0: off
        "warmup_steps": 0,  # linear warmup: steps, or a fraction of all steps if < 1 (BERT: 0.1)
        "lr_decay": False,  # linear decay to 0 at the last step (google-research/bert)
        "grad_accum_steps": 1,  # update every k batches with their mean gradient
        "ema_momentum": None,  # exponential moving average of weights, e.g. 0.999
        "adversarial": None,  # {method: fgm | pgd, epsilon: 1.0, alpha: 0.3, steps: 3}
        "rdrop_alpha": 0.0,  # R-Drop (Liang et al. 2021) weight of the symmetric KL
        "batch_size": 64,
        # Batches of texts of similar length, in random order (less padding; see batches.py).
        "group_by_length": False,
        "length_pool": 50,  # group_by_length: batches per pool sorted together (HF Trainer: 50)
        # Each batch sorted by length and run as this many parts, each padded to its own longest
        # text, gradients summed before the one update: the same step, fewer padded tokens.
        "micro_batches": 1,
        "epochs": 5,
        "monitor": "val_loss",  # val_loss | val_acc | val_micro_f1 | val_macro_f1 | val_subset_acc
        "patience": 0,
        "restore_best": True,
        "save_optimizer": False,
        "deterministic": True,
        # Multi-device training of one run. null: one device. mirrored: tf.distribute
        # MirroredStrategy, one model replica per device, gradients summed; batch_size is then the
        # GLOBAL batch (split across the replicas), so it stays comparable with one device.
        "strategy": None,
        "devices": None,  # mirrored: e.g. ["/gpu:0", "/gpu:1"]; null: all GPUs (all CPUs if none)
    },
    "output": {
        "h5": None,  # default: checkpoints/<name>.h5
        "runs_dir": "runs",
        "tensorboard": True,
    },
}

MONITORS = ("val_loss", "val_acc", "val_subset_acc", "val_micro_f1", "val_macro_f1")
# Keys whose value is a free-form mapping or list, not a section of further keys.
OPAQUE = {("model", "heads"), ("model", "loss"), ("train", "lr_multipliers"), ("train", "adversarial")}
# PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string: numbers are coerced here.
NUMBERS = {"train.lr", "data.head_ratio", "data.valid_ratio", "encoder.dropout",
           "encoder.attention_dropout", "train.encoder_lr_ratio", "train.layer_decay",
           "train.weight_decay", "train.clip_norm", "train.ema_momentum", "train.rdrop_alpha"}


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
        shown = ", ".join("null" if v is None else str(v) for v in valid)
        raise XtuneError("%s: %s: unknown choice %r; valid: %s" % (path, key, value, shown))


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
    _choice(path, "data.truncation2", data["truncation2"], STRATEGIES + (None,))
    validate_cache(data, path)
    validate_loss(model["loss"], "%s: model.loss" % path)
    validate_threshold(model, path)
    _choice(path, "train.optimizer", train["optimizer"], OPTIMIZERS)
    train["warmup_steps"] = _coerce_number(train["warmup_steps"], "train.warmup_steps", path)
    validate_adversarial(train, path)
    validate_strategy(config, path)
    _choice(path, "train.monitor", train["monitor"], MONITORS)
    if not isinstance(model["heads"], list) or not model["heads"]:
        raise XtuneError("%s: model.heads must be a non-empty list of heads" % path)
    for i, head in enumerate(model["heads"]):
        validate_head(head, "%s: model.heads[%d]" % (path, i))
    validate_encoder(config["encoder"], path)
    if not isinstance(train["group_by_length"], bool):
        raise XtuneError("%s: train.group_by_length must be true or false (got %r)"
                         % (path, train["group_by_length"]))
    for key, low in (("data.max_len", 8), ("train.batch_size", 1), ("train.epochs", 1),
                     ("train.length_pool", 1), ("train.micro_batches", 1)):
        section, name = key.split(".")
        value = config[section][name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise XtuneError("%s: %s must be an integer >= %d (got %r)" % (path, key, low, value))


ADVERSARIAL_KEYS = ("method", "epsilon", "alpha", "steps")


def validate_adversarial(train, path):
    """``train.adversarial``: null, or a mapping whose keys are ADVERSARIAL_KEYS."""
    spec = train["adversarial"]
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise XtuneError("%s: train.adversarial must be a mapping with keys: %s"
                         % (path, ", ".join(ADVERSARIAL_KEYS)))
    for key, value in spec.items():
        if key not in ADVERSARIAL_KEYS:
            raise XtuneError("%s: unknown key 'train.adversarial.%s'; valid keys: %s"
                             % (path, key, ", ".join(ADVERSARIAL_KEYS)))
        if key in ("epsilon", "alpha"):
            spec[key] = _coerce_number(value, "train.adversarial." + key, path)
    _choice(path, "train.adversarial.method", spec.get("method"), ("fgm", "pgd", None))


DISTRIBUTE_STRATEGIES = (None, "mirrored")


def validate_strategy(config, path):
    """``train.strategy`` (null | mirrored) and ``train.devices`` (null or a list of names)."""
    train = config["train"]
    _choice(path, "train.strategy", train["strategy"], DISTRIBUTE_STRATEGIES)
    if train["strategy"] and config["encoder"]["unfreeze_epoch"] is not None:
        # The runner recompiles for the second phase outside the strategy scope: Keras refuses.
        raise XtuneError("%s: train.strategy: mirrored cannot be combined with encoder.unfreeze_epoch "
                         "(gradual unfreezing recompiles the model outside the strategy)" % path)
    if train["strategy"] and train["micro_batches"] != 1:
        # A strategy splits every part of a batch across the replicas on its own: not supported.
        raise XtuneError("%s: train.strategy: mirrored cannot be combined with train.micro_batches "
                         "(got %r; use 1)" % (path, train["micro_batches"]))
    devices = train["devices"]
    if devices is None:
        return
    if isinstance(devices, str):
        devices = train["devices"] = [devices]
    if not isinstance(devices, list) or not devices or not all(isinstance(d, str) and d for d in devices):
        raise XtuneError("%s: train.devices must be null or a list of device names, e.g. [\"/gpu:0\", "
                         "\"/gpu:1\"] (got %r)" % (path, devices))
    if len(set(devices)) != len(devices):
        raise XtuneError("%s: train.devices lists a device twice (%s)" % (path, ", ".join(devices)))
    if train["strategy"] is None:
        raise XtuneError("%s: train.devices needs train.strategy: mirrored" % path)


def validate_threshold(model, path):
    threshold = model["threshold"]
    if threshold == "tuned":
        return
    try:
        model["threshold"] = float(threshold)
    except (TypeError, ValueError):
        raise XtuneError("%s: model.threshold must be a number in (0, 1) or \"tuned\" (got %r)"
                         % (path, threshold))
    if not 0.0 < model["threshold"] < 1.0:
        raise XtuneError("%s: model.threshold must be in (0, 1) (got %r)" % (path, threshold))


def validate_encoder(encoder, path):
    if not encoder["dir"] and not encoder["config"]:
        raise XtuneError("%s: set encoder.dir (a Google-format BERT folder)" % path)
    _choice(path, "encoder.pool_mode", encoder["pool_mode"], ("concat", "mean", "max"))
    for key in ("output_layer", "pool_layers"):
        if not isinstance(encoder[key], int) or isinstance(encoder[key], bool):
            raise XtuneError("%s: encoder.%s must be an integer (got %r)" % (path, key, encoder[key]))
    unfreeze = encoder["unfreeze_epoch"]
    if unfreeze is not None:
        if not (encoder["freeze"] or encoder["freeze_pattern"]):
            raise XtuneError("%s: encoder.unfreeze_epoch needs encoder.freeze or encoder.freeze_pattern" % path)
        if not isinstance(unfreeze, int) or unfreeze < 1:
            raise XtuneError("%s: encoder.unfreeze_epoch must be an integer >= 1 (got %r)" % (path, unfreeze))


def validate_cache(data, path):
    if not isinstance(data["cache"], bool):
        raise XtuneError("%s: data.cache must be true or false (got %r)" % (path, data["cache"]))
    cache_dir = data["cache_dir"]
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir.strip()):
        raise XtuneError("%s: data.cache_dir must be a folder path or null (got %r)" % (path, cache_dir))


# Whether and where token ids are cached changes no id: a cached and an uncached run are one run.
UNHASHED_DATA_KEYS = ("cache", "cache_dir")


# Keys added after runs were first written are hashed only away from their default, so a run made
# before a key existed keeps its folder (and an interrupted sweep still resumes) after an upgrade.
HASHED_ONLY_IF_CHANGED = {("train", "group_by_length"): False, ("train", "length_pool"): 50,
                          ("train", "micro_batches"): 1}


def config_hash(config):
    """Short stable hash of everything that changes results (the seed has its own folder)."""
    relevant = {k: v for k, v in config.items() if k not in ("seed", "output")}
    if isinstance(relevant.get("data"), dict):
        relevant["data"] = {k: v for k, v in relevant["data"].items() if k not in UNHASHED_DATA_KEYS}
    for (section, key), default in HASHED_ONLY_IF_CHANGED.items():
        if isinstance(relevant.get(section), dict) and relevant[section].get(key, default) == default:
            relevant[section] = {k: v for k, v in relevant[section].items() if k != key}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def dump_config(config, path):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, allow_unicode=True, sort_keys=False)
