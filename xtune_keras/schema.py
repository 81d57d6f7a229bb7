"""Experiment configuration: YAML -> defaults merged -> ``key=value`` overrides -> validated dict.

Keys are declared once, in ``keys.py``; this module checks values against those declarations
(type, range, choices) and applies the rules that tie keys together. Builders get flat arguments
from the validated dict. An unknown key (a typo) is an error listing the valid keys at its level.
No TensorFlow here: the registries of heads, losses and optimizers are imported only to validate.
"""
import copy
import hashlib
import json
import os

import yaml

from xtune_keras.errors import XtuneError
from xtune_keras.keys import ADVERSARIAL, KEYS, SCHEMAS, TASK_KEYS, sections_of


def nested_defaults(keys=KEYS):
    """``{"name": None, "seed": 0, "data": {...}, ...}`` from the declarations."""
    config = {section: {} for section in sections_of(keys)}
    top = {}
    for dotted, key in keys.items():
        if "." in dotted:
            section, name = dotted.split(".")
            config[section][name] = copy.deepcopy(key.default)
        else:
            top[dotted] = copy.deepcopy(key.default)
    return dict(top, **config)


def load_config(path, overrides=(), where=None, recipe="finetune"):
    """Read a YAML experiment, apply ``key=value`` overrides, validate, fill defaults. Errors
    start with ``where`` (default: ``path``), e.g. the row of an ablation that set the value.
    The file's ``recipe`` key (default: ``recipe``, or ``multitask`` when the file has ``tasks``)
    chooses which keys it may hold."""
    where = where or path
    raw = _read_yaml(path)
    for item in overrides:
        _apply_override(raw, item, where)
    keys = schema_of(raw.get("recipe") or ("multitask" if "tasks" in raw else recipe), where)
    config = _merge(nested_defaults(keys), raw, (), where, sections_of(keys))
    if not config["name"]:
        config["name"] = os.path.splitext(os.path.basename(path))[0]
    validate(config, where)
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
        line = " line %d" % (mark.line + 1) if mark else ""
        raise XtuneError("%s%s: invalid YAML (%s)" % (path, line, getattr(exc, "problem", exc)))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise XtuneError("%s: an experiment is a YAML mapping of sections (data, encoder, model, train, output)"
                         % path)
    return raw


def _apply_override(raw, item, where):
    """``train.lr=1e-4`` -> raw['train']['lr'] = 1e-4 (value parsed as YAML)."""
    if "=" not in item:
        raise XtuneError("%s: override %r: expected key=value, e.g. train.lr=2e-5" % (where, item))
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    if parts[0] == "tasks" and len(parts) > 2:  # tasks.<task name>.data.train=...
        node, parts = _task_named(raw, parts[1], item, where), parts[2:]
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise XtuneError("%s: override %r: %s is not a section" % (where, item, part))
    node[parts[-1]] = yaml.safe_load(value)


def _task_named(raw, name, item, where):
    tasks = raw.get("tasks")
    for task in tasks if isinstance(tasks, list) else []:
        if isinstance(task, dict) and task.get("name") == name:
            return task
    raise XtuneError("%s: override %r: no task named '%s'" % (where, item, name))


def schema_of(recipe, where):
    """The key table of a recipe, or a one-line error listing the recipes."""
    if recipe not in SCHEMAS:
        raise XtuneError("%s: recipe: unknown recipe %r; valid: %s" % (where, recipe, ", ".join(SCHEMAS)))
    return SCHEMAS[recipe]


def _merge(defaults, raw, prefix, where, sections):
    for name, value in raw.items():
        dotted = ".".join(prefix + (name,))
        if name not in defaults:
            level = "'%s'" % ".".join(prefix) if prefix else "the top level"
            raise XtuneError("%s: unknown key '%s'; valid keys at %s: %s"
                             % (where, dotted, level, ", ".join(defaults)))
        if dotted in sections:
            if not isinstance(value, dict):
                raise XtuneError("%s: '%s' must be a mapping with keys: %s"
                                 % (where, dotted, ", ".join(defaults[name])))
            _merge(defaults[name], value, prefix + (name,), where, sections)
        else:
            defaults[name] = value
    return defaults


def check_value(dotted, value, where=None, key=None):
    """``value`` of ``dotted`` checked against its declaration and normalized (a number read as
    a string by YAML 1.1 becomes a float, one column name a list); a one-line error if it does
    not fit. Builders call this too, so a rule is written once for YAML and for Python callers."""
    key = key or KEYS[dotted]
    prefix = "%s: " % where if where else ""
    if value is None and key.kind != "bool":
        return None
    kind = key.kind
    if kind == "bool" and not isinstance(value, bool):
        raise XtuneError("%s%s must be true or false (got %r)" % (prefix, dotted, value))
    if kind == "str" and not isinstance(value, str):
        raise XtuneError("%s%s must be a string (got %r)" % (prefix, dotted, value))
    if kind == "path" and (not isinstance(value, str) or not value.strip()):
        raise XtuneError("%s%s must be a path or null (got %r)" % (prefix, dotted, value))
    if kind == "columns":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise XtuneError("%s%s must be a column name or a list of them (got %r)" % (prefix, dotted, value))
    if kind == "choice" and key.valid is not None and value not in key.valid:
        shown = ", ".join("null" if v is None else str(v) for v in key.valid)
        raise XtuneError("%s%s: unknown choice %r; valid: %s" % (prefix, dotted, value, shown))
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not in_range(value, key.valid):
            raise XtuneError("%s%s must be an integer%s (got %r)" % (prefix, dotted, _shown(key.valid), value))
    if kind == "number":
        value = _number(value, dotted, prefix)
        if not in_range(value, key.valid):
            raise XtuneError("%s%s must be a number%s (got %r)" % (prefix, dotted, _shown(key.valid), value))
    return value


def _number(value, dotted, prefix):
    # PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise XtuneError("%s'%s' must be a number (got %r)" % (prefix, dotted, value))


def _shown(valid):
    if not valid:
        return ""
    return " " + valid if valid[0] in "<>" else " in " + valid


def in_range(value, valid):
    """``valid``: None, ``"> 0"``, ``">= 1"``, or an interval such as ``"(0, 1]"``."""
    if not valid:
        return True
    if valid.startswith(">="):
        return value >= float(valid[2:])
    if valid.startswith(">"):
        return value > float(valid[1:])
    low, high = (float(end) for end in valid[1:-1].split(","))
    above = value > low if valid[0] == "(" else value >= low
    below = value < high if valid[-1] == ")" else value <= high
    return above and below


def validate(config, where):
    """Every declared key checked and normalized, then the rules between keys."""
    keys = schema_of(config["recipe"], where)
    for dotted, key in keys.items():
        section, _, name = dotted.rpartition(".")
        node = config[section] if section else config
        node[name] = check_value(dotted, node[name], where, key)
    for rule in RULES[config["recipe"]]:
        rule(config, where)


def _required(config, where):
    _data_required(config, where)
    _encoder_required(config, where)


def _data_required(config, where):
    data = config["data"]
    if not data["train"]:
        raise XtuneError("%s: data.train is required (a csv/tsv/jsonl/xlsx file)" % where)
    if not data["valid"] and not data["valid_ratio"]:
        raise XtuneError("%s: set data.valid (a file) or data.valid_ratio (e.g. 0.1)" % where)
    if not data["text1"]:
        raise XtuneError("%s: data.text1 must name at least one column" % where)


def _encoder_required(config, where):
    encoder = config["encoder"]
    if not encoder["dir"] and not encoder["config"] and not encoder["pretrain"]:
        raise XtuneError("%s: set encoder.dir (a Google-format BERT folder) or encoder.pretrain" % where)
    if encoder["pretrain"]:
        load_config(encoder["pretrain"], recipe="pretrain")  # its errors now, not after the data is read


def _components(config, where):
    """Heads and losses are registry entries: their modules (TensorFlow) load here."""
    from xtune_keras.model.heads import validate_head
    from xtune_keras.model.losses import validate_loss

    model = config["model"]
    validate_loss(model["loss"], "%s: model.loss" % where)
    if not isinstance(model["heads"], list) or not model["heads"]:
        raise XtuneError("%s: model.heads must be a non-empty list of heads" % where)
    for i, head in enumerate(model["heads"]):
        validate_head(head, "%s: model.heads[%d]" % (where, i))


def _recipe(config, where):
    from xtune_keras.recipes import RECIPES

    RECIPES.get(config["recipe"], "%s: recipe" % where)


def _threshold(config, where):
    model = config["model"]
    threshold = model["threshold"]
    if threshold == "tuned":
        return
    try:
        model["threshold"] = float(threshold)
    except (TypeError, ValueError):
        raise XtuneError("%s: model.threshold must be a number in (0, 1) or \"tuned\" (got %r)"
                         % (where, threshold))
    if not 0.0 < model["threshold"] < 1.0:
        raise XtuneError("%s: model.threshold must be in (0, 1) (got %r)" % (where, threshold))


def _adversarial(config, where):
    """``train.adversarial``: null, or a mapping of the ADVERSARIAL keys (kept as given: the
    builder fills the defaults, and the hash sees what the user wrote)."""
    spec = config["train"]["adversarial"]
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise XtuneError("%s: train.adversarial must be a mapping with keys: %s" % (where, ", ".join(ADVERSARIAL)))
    for name, value in spec.items():
        if name not in ADVERSARIAL:
            raise XtuneError("%s: unknown key 'train.adversarial.%s'; valid keys: %s"
                             % (where, name, ", ".join(ADVERSARIAL)))
        spec[name] = check_value("train.adversarial." + name, value, where, ADVERSARIAL[name])


def _freezing(config, where):
    encoder = config["encoder"]
    if encoder["unfreeze_epoch"] is not None and not (encoder["freeze"] or encoder["freeze_pattern"]):
        raise XtuneError("%s: encoder.unfreeze_epoch needs encoder.freeze or encoder.freeze_pattern" % where)


def _strategy(config, where):
    """``train.strategy`` with what it cannot be combined with; ``train.devices`` a list of names."""
    train = config["train"]
    if train["strategy"] and config["encoder"]["unfreeze_epoch"] is not None:
        # The second phase recompiles the model outside the strategy scope: Keras refuses.
        raise XtuneError("%s: train.strategy: mirrored cannot be combined with encoder.unfreeze_epoch "
                         "(gradual unfreezing recompiles the model outside the strategy)" % where)
    if train["strategy"] and train["micro_batches"] != 1:
        # A strategy splits every part of a batch across the replicas on its own: not supported.
        raise XtuneError("%s: train.strategy: mirrored cannot be combined with train.micro_batches "
                         "(got %r; use 1)" % (where, train["micro_batches"]))
    devices = train["devices"]
    if devices is None:
        return
    if isinstance(devices, str):
        devices = train["devices"] = [devices]
    if not isinstance(devices, list) or not devices or not all(isinstance(d, str) and d for d in devices):
        raise XtuneError("%s: train.devices must be null or a list of device names, e.g. [\"/gpu:0\", "
                         "\"/gpu:1\"] (got %r)" % (where, devices))
    if len(set(devices)) != len(devices):
        raise XtuneError("%s: train.devices lists a device twice (%s)" % (where, ", ".join(devices)))
    if train["strategy"] is None:
        raise XtuneError("%s: train.devices needs train.strategy: mirrored" % where)


def _pretrain_required(config, where):
    corpus, masking, encoder = config["corpus"], config["masking"], config["encoder"]
    if not corpus["files"] and not corpus["from_experiment"]:
        raise XtuneError("%s: set corpus.files (text or table files) or corpus.from_experiment (an experiment "
                         "YAML whose texts to read)" % where)
    if not encoder["dir"] and not encoder["config"]:
        raise XtuneError("%s: set encoder.dir (a Google-format BERT folder)" % where)
    if masking["mask_ratio"] + masking["random_ratio"] > 1.0:
        raise XtuneError("%s: masking.mask_ratio + masking.random_ratio must be <= 1 (got %r + %r)"
                         % (where, masking["mask_ratio"], masking["random_ratio"]))


def _tasks(config, where):
    """``tasks``: each entry merged with the task keys' defaults and checked like a fine-tuning
    experiment's data and model (errors name the task); unique names, one main task, and
    ``multitask.only`` naming tasks that exist, the main one among them."""
    tasks = config["tasks"]
    if not isinstance(tasks, list) or not tasks:
        raise XtuneError("%s: tasks must be a non-empty list of tasks {name, main, weight, data, model}" % where)
    seen = set()
    for i, raw in enumerate(tasks):
        if not isinstance(raw, dict):
            raise XtuneError("%s: tasks[%d] must be a mapping {name, main, weight, data, model}" % (where, i))
        at = "%s: tasks[%d]%s" % (where, i, " '%s'" % raw["name"] if isinstance(raw.get("name"), str) else "")
        task = tasks[i] = _merge(nested_defaults(TASK_KEYS), raw, (), at, sections_of(TASK_KEYS))
        for dotted, key in TASK_KEYS.items():
            section, _, name = dotted.rpartition(".")
            node = task[section] if section else task
            node[name] = check_value(dotted, node[name], at, key)
        if not task["name"]:
            raise XtuneError("%s: name is required" % at)
        if task["name"] in seen:
            raise XtuneError("%s: name: a second task named '%s'" % (at, task["name"]))
        seen.add(task["name"])
        view = dict(config, data=task["data"], model=task["model"])
        for rule in (_data_required, _components, _threshold):
            rule(view, at)
    mains = [task["name"] for task in tasks if task["main"]]
    if len(tasks) == 1 and not mains:
        tasks[0]["main"], mains = True, [tasks[0]["name"]]
    if len(mains) != 1:
        raise XtuneError("%s: tasks: exactly one task must have main: true (got %s)"
                         % (where, ", ".join(mains) if mains else "none"))
    only = config["multitask"]["only"]
    if only is not None:
        for name in only:
            if name not in seen:
                raise XtuneError("%s: multitask.only: no task named '%s'; tasks: %s" % (where, name, ", ".join(seen)))
        if mains[0] not in only:
            raise XtuneError("%s: multitask.only must include the main task '%s'" % (where, mains[0]))


def _shared_training(config, where):
    """What one update per task's batch cannot share (each step updates one task's head)."""
    train = config["train"]
    if train["grad_accum_steps"] != 1:
        raise XtuneError("%s: train.grad_accum_steps: not supported with tasks (each step updates the encoder and "
                         "one task's head; use a larger train.batch_size)" % where)
    if train["strategy"]:
        raise XtuneError("%s: train.strategy: mirrored is not supported with tasks yet" % where)


def active_tasks(config):
    """The tasks a multi-task run trains (``multitask.only``, or all), the main one first."""
    only = config["multitask"]["only"]
    tasks = [task for task in config["tasks"] if only is None or task["name"] in only]
    return sorted(tasks, key=lambda task: not task["main"])


def task_config(config, task):
    """One task of a multi-task config as a fine-tuning config: its data and model, the shared
    encoder, train and output sections; the main task keeps the experiment's name and ``.h5``,
    another task's are ``<name>.<task>`` and ``<h5 stem>.<task>.h5``."""
    h5 = h5_path(config)
    if not task["main"]:
        h5 = "%s.%s.h5" % (os.path.splitext(h5)[0], task["name"])
    name = config["name"] if task["main"] else "%s.%s" % (config["name"], task["name"])
    return {"name": name, "seed": config["seed"], "recipe": "finetune", "data": task["data"], "model": task["model"],
            "encoder": config["encoder"], "train": config["train"], "output": dict(config["output"], h5=h5)}


def _optimizer(config, where):
    from xtune_keras.train.optimizers import OPTIMIZERS

    OPTIMIZERS.get(config["train"]["optimizer"], "%s: train.optimizer" % where)


RULES = {"finetune": (_required, _recipe, _components, _optimizer, _threshold, _adversarial, _freezing, _strategy),
         "pretrain": (_pretrain_required, _recipe, _optimizer),
         "multitask": (_tasks, _encoder_required, _recipe, _optimizer, _adversarial, _freezing, _shared_training)}


def config_hash(config):
    """Short stable hash of everything that changes results (see ``Key.hashed``)."""
    relevant = _hashed_part(copy.deepcopy(config), SCHEMAS.get(config.get("recipe"), KEYS))
    if isinstance(relevant.get("tasks"), list):
        relevant["tasks"] = [_hashed_part(task, TASK_KEYS) if isinstance(task, dict) else task
                             for task in relevant["tasks"]]
    pretrain = (relevant.get("encoder") or {}).get("pretrain")
    if pretrain and os.path.isfile(pretrain):
        # the pretraining's settings, not its file's name, decide which encoder is fine-tuned: an
        # edited pretraining YAML must not let a finished run stand for the new one
        relevant["encoder"]["pretrain"] = config_hash(load_config(pretrain, recipe="pretrain"))
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _hashed_part(config, keys):
    """``config`` without the keys that change no result (see ``Key.hashed``)."""
    for dotted, key in keys.items():
        section, _, name = dotted.rpartition(".")
        node = config.get(section) if section else config
        if not isinstance(node, dict) or name not in node:
            continue
        if key.hashed == "never" or key.hashed == "if_changed" and node[name] == key.default:
            del node[name]
    return {k: v for k, v in config.items() if v != {}}


def hparam_keys():
    """The keys TensorBoard's HParams dashboard shows as they are (declared ``hparam=True``)."""
    return tuple(dotted for dotted, key in KEYS.items() if key.hparam)


def dump_config(config, path):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, allow_unicode=True, sort_keys=False)


def h5_path(config):
    """Where the run's ``.h5`` goes: ``output.h5``, or ``checkpoints/<name>.h5`` (the write-up's
    naming, e.g. ``bert_texcnn_Realmutil_mlps_v2(619).h5``)."""
    return config["output"]["h5"] or os.path.join("checkpoints", config["name"] + ".h5")
