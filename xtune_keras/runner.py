"""The thin runner: config dict -> data -> model -> fit -> run folder on disk.

Layout of one run: ``runs/<name>/seed<seed>-<config hash>/`` with ``config.yaml``,
``labels.json``, ``metrics.jsonl`` (one line per epoch), ``result.json`` (written last, so its
presence means the run finished) and ``tensorboard/``. A finished run is not trained again.
"""
import json
import os
import time

import numpy as np
import tensorflow as tf
from bert4keras.backend import keras

import xtune_keras
from xtune_keras import callbacks as cb
from xtune_keras.config import config_hash, dump_config
from xtune_keras.data import LabelVocab, load_examples, split_examples
from xtune_keras.encoders import build_tokenizer, resolve_encoder_paths
from xtune_keras.batches import PaddedBatches
from xtune_keras.losses import ACTIVATIONS, LOSSES
from xtune_keras.model import build_classifier
from xtune_keras.optimizers import build_optimizer
from xtune_keras.truncation import encode_examples

PREDICT_BATCH = 64


def set_seed(seed, deterministic):
    """Same seed, same metrics: seeds Python/NumPy/TF and asks TF for deterministic kernels."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


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
    return encode_examples(tokenizer, examples, data["max_len"], data["truncation"], data["head_ratio"])


def model_meta(config, labels):
    """What a saved .h5 must carry so that evaluate/predict can prepare raw text like training."""
    data, model = config["data"], config["model"]
    keys = ("text1", "text2", "label", "multi_label", "label_sep", "clean_patterns", "max_len",
            "truncation", "head_ratio", "lowercase")
    meta = {k: data[k] for k in keys}
    meta.update(
        name=config["name"], labels=list(labels.names), loss=model["loss"],
        activation=ACTIVATIONS[model["loss"]], threshold=model["threshold"],
        xtune_version=xtune_keras.__version__,
    )
    return meta


def run_dir_of(config):
    return os.path.join(config["output"]["runs_dir"], config["name"],
                        "seed%d-%s" % (config["seed"], config_hash(config)))


def h5_path_of(config):
    return config["output"]["h5"] or os.path.join("checkpoints", config["name"] + ".h5")


def finished_result(run_dir):
    path = os.path.join(run_dir, "result.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return None


def run_experiment(config, force=False, echo=True):
    """Train one experiment with one seed; returns (and writes) its result dict."""
    run_dir = run_dir_of(config)
    done = None if force else finished_result(run_dir)
    if done is not None:
        if echo:
            print("already finished: %s (use --force to train again)" % run_dir, flush=True)
        return done
    start = time.time()
    set_seed(config["seed"], config["train"]["deterministic"])
    data, train = config["data"], config["train"]
    splits = load_splits(data)
    labels = LabelVocab.from_label_lists(*(s.labels for s in splits.values() if s is not None))
    enc = config["encoder"]
    paths = resolve_encoder_paths(enc["dir"], enc["config"], enc["checkpoint"], enc["vocab"])
    tokenizer = build_tokenizer(paths["vocab"], data["lowercase"])
    encoded = {name: encode_split(tokenizer, ex, data) for name, ex in splits.items() if ex is not None}
    targets = {name: labels.encode(ex) for name, ex in splits.items() if ex is not None}

    model = build_classifier(paths["config"], paths["checkpoint"], len(labels),
                             config["model"]["heads"], config["encoder"]["model"])
    loss_fn = LOSSES[config["model"]["loss"]]
    model.compile(optimizer=build_optimizer(train["optimizer"], train["lr"]), loss=loss_fn,
                  metrics=[keras.metrics.CategoricalAccuracy(name="acc")])

    _prepare_run_dir(run_dir, config, labels)
    batches = {name: PaddedBatches(*encoded[name], targets[name], batch_size=train["batch_size"],
                                   shuffle=(name == "train"), seed=config["seed"])
               for name in encoded}
    h5_path = h5_path_of(config)
    meta = model_meta(config, labels)
    checkpoint = cb.NamedH5Checkpoint(h5_path, train["monitor"], meta, tokenizer._token_dict,
                                      train["save_optimizer"])
    callbacks = [
        cb.ValidationMetrics(_inputs_only(batches["valid"]), targets["valid"], loss_fn,
                             meta["activation"], data["multi_label"], config["model"]["threshold"]),
        checkpoint,
        cb.early_stopping(train["monitor"], train["patience"], restore_best=False),
        cb.MetricsLogger(os.path.join(run_dir, "metrics.jsonl"), echo=echo),
    ]
    if config["output"]["tensorboard"]:
        callbacks.append(cb.tensorboard(os.path.join(run_dir, "tensorboard")))
    history = model.fit(batches["train"], epochs=train["epochs"], callbacks=callbacks, verbose=0)
    if train["restore_best"] and checkpoint.best_epoch is not None:
        model.load_weights(h5_path)

    result = {
        "name": config["name"], "seed": config["seed"], "config_hash": config_hash(config),
        "run_dir": run_dir, "h5": h5_path, "monitor": train["monitor"],
        "best_epoch": checkpoint.best_epoch, "epochs_run": len(history.epoch),
        "best": _epoch_logs(history, checkpoint.best_epoch),
        "num_labels": len(labels),
        "examples": {name: len(ex) for name, ex in splits.items() if ex is not None},
    }
    if "test" in batches:
        logits = model.predict(_inputs_only(batches["test"]), verbose=0)
        result["test"] = cb.evaluate_logits(logits, targets["test"], loss_fn, meta["activation"],
                                            data["multi_label"], config["model"]["threshold"])
    result["seconds"] = round(time.time() - start, 2)
    _write_json(os.path.join(run_dir, "result.json"), result)
    return result


def _inputs_only(batches):
    return PaddedBatches(batches.token_ids, batches.segment_ids, None, batches.batch_size)


def _epoch_logs(history, epoch):
    if epoch is None:
        return {}
    return {k: float(v[epoch - 1]) for k, v in history.history.items()}


def _prepare_run_dir(run_dir, config, labels):
    """A fresh run folder; an unfinished earlier attempt of the same run is overwritten."""
    os.makedirs(run_dir, exist_ok=True)
    for name in ("metrics.jsonl", "result.json"):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    dump_config(config, os.path.join(run_dir, "config.yaml"))
    labels.save(os.path.join(run_dir, "labels.json"))


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
    os.replace(tmp, path)

