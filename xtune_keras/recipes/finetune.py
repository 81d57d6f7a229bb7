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
from xtune_keras.train import callbacks as cb
from xtune_keras.train.adversarial import build_trainer, saveable_model
from xtune_keras.data.batches import PaddedBatches
from xtune_keras.schema import config_hash, dump_config
from xtune_keras.data.tables import DEFAULT_THRESHOLD, LabelVocab, load_examples, split_examples
from xtune_keras.train.distribute import build_strategy
from xtune_keras.model.encoders import build_tokenizer, read_config, resolve_encoder_paths
from xtune_keras.model.losses import ACTIVATIONS, build_loss, loss_type
from xtune_keras.train.metrics import ACTIVATIONS as NUMPY_ACTIVATIONS
from xtune_keras.train.metrics import tune_thresholds
from xtune_keras.model.classifier import build_classifier, freeze_layers, unfreeze_layers
from xtune_keras.model.modelfile import update_meta
from xtune_keras.train.optimizers import (
    EMAWeights, build_optimizer, check_lr_multipliers, layer_lr_multipliers,
)
from xtune_keras.data.token_cache import cache_key, cached_encode, tokenizer_id
from xtune_keras.data.truncation import encode_examples


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
    return encode_examples(tokenizer, examples, data["max_len"], data["truncation"], data["head_ratio"],
                           data["truncation2"])


def model_meta(config, labels, activation):
    """What a saved .h5 must carry so that evaluate/predict can prepare raw text like training."""
    data, model = config["data"], config["model"]
    keys = ("text1", "text2", "label", "multi_label", "label_sep", "clean_patterns", "max_len",
            "truncation", "truncation2", "head_ratio", "lowercase")
    meta = {k: data[k] for k in keys}
    threshold = model["threshold"]
    meta.update(
        name=config["name"], labels=list(labels.names), loss=model["loss"], activation=activation,
        # "tuned" thresholds are found after training; until then 0.5 decides
        threshold=DEFAULT_THRESHOLD if threshold == "tuned" else threshold,
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


def make_optimizer(train, classifier, num_layers, steps_per_epoch):
    """The optimizer of ``train.*``: Adam/AdamW, warmup and linear decay, head vs encoder LR,
    layer-wise decay, extra multipliers, gradient accumulation, EMA (see optimizers.py)."""
    multipliers = {}
    if train["layer_decay"] is not None or train["encoder_lr_ratio"] != 1:
        multipliers = layer_lr_multipliers(num_layers, train["layer_decay"], train["encoder_lr_ratio"])
    if train["lr_multipliers"]:
        check_lr_multipliers(classifier, train["lr_multipliers"])
        for key, factor in train["lr_multipliers"].items():
            multipliers[key] = multipliers.get(key, 1.0) * factor
    total_steps = train["epochs"] * steps_per_epoch
    warmup = train["warmup_steps"]
    if isinstance(warmup, float) and 0 < warmup < 1:  # a fraction of all steps (BERT used 0.1)
        warmup = int(round(warmup * total_steps))
    return build_optimizer(
        train["optimizer"], train["lr"], weight_decay=train["weight_decay"], clip_norm=train["clip_norm"],
        warmup_steps=warmup, total_steps=total_steps if train["lr_decay"] else None,
        lr_multipliers=multipliers or None, grad_accum_steps=train["grad_accum_steps"],
        ema_momentum=train["ema_momentum"],
    )


def make_trainer(classifier, train, activation):
    adversarial = train["adversarial"] or {}
    return build_trainer(classifier, method=adversarial.get("method"),
                         epsilon=adversarial.get("epsilon", 1.0), alpha=adversarial.get("alpha", 0.3),
                         steps=adversarial.get("steps", 3), rdrop_alpha=train["rdrop_alpha"],
                         activation=activation, micro_batches=train["micro_batches"])


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
    data, train, enc = config["data"], config["train"], config["encoder"]
    prepared = prepare_data(config)
    labels, targets = prepared["labels"], prepared["targets"]
    # train.strategy: mirrored builds every variable (model, optimizer, metrics) on each device;
    # train.batch_size stays the global batch, split across the replicas. No strategy: a no-op.
    strategy = build_strategy(train["strategy"], train["devices"], train["batch_size"], echo)
    with strategy.scope():
        classifier = build_model(config, prepared["paths"], len(labels))
        frozen = freeze_layers(classifier, enc["freeze"], enc["freeze_pattern"])
        loss = build_loss(config["model"]["loss"])
        activation = ACTIVATIONS[loss_type(config["model"]["loss"])]
        batches = {name: PaddedBatches(*prepared["encoded"][name], targets[name],
                                       batch_size=train["batch_size"], shuffle=(name == "train"),
                                       seed=config["seed"],
                                       group_by_length=train["group_by_length"] and name == "train",
                                       pool_batches=train["length_pool"],
                                       micro_batches=train["micro_batches"] if name == "train" else 1)
                   for name in prepared["encoded"]}
        num_layers = read_config(prepared["paths"]["config"])["num_hidden_layers"]
        optimizer = make_optimizer(train, classifier, num_layers, len(batches["train"]))
        model = make_trainer(classifier, train, activation)
        compile_model(model, optimizer, loss)

    _prepare_run_dir(run_dir, config, labels)
    h5_path = h5_path_of(config)
    meta = model_meta(config, labels, activation)
    checkpoint = cb.NamedH5Checkpoint(h5_path, train["monitor"], meta, prepared["tokenizer"]._token_dict,
                                      train["save_optimizer"])
    callbacks = [
        EMAWeights(),  # first: everything after it sees the averaged weights (a no-op without EMA)
        cb.ValidationMetrics(_inputs_only(batches["valid"]), targets["valid"], loss,
                             activation, data["multi_label"], meta["threshold"]),
        checkpoint,
        cb.early_stopping(train["monitor"], train["patience"], restore_best=False),
        cb.MetricsLogger(os.path.join(run_dir, "metrics.jsonl"), echo=echo),
    ]
    if config["output"]["tensorboard"]:
        callbacks.append(cb.tensorboard(os.path.join(run_dir, "tensorboard")))
        callbacks.append(cb.hparams_callback(os.path.join(run_dir, "tensorboard"), config,
                                             trial_id="%s/%s" % (config["name"], os.path.basename(run_dir))))
    history = fit_in_phases(model, batches["train"], callbacks, train["epochs"], enc["unfreeze_epoch"],
                            frozen, lambda: compile_model(model, optimizer, loss))
    if train["restore_best"] and checkpoint.best_epoch is not None:
        classifier.load_weights(h5_path)

    result = {
        "name": config["name"], "seed": config["seed"], "config_hash": config_hash(config),
        "run_dir": run_dir, "h5": h5_path, "monitor": train["monitor"],
        "best_epoch": checkpoint.best_epoch, "epochs_run": len(history.epoch),
        "best": _epoch_logs(history, checkpoint.best_epoch),
        "num_labels": len(labels),
        "examples": {name: len(ex) for name, ex in prepared["splits"].items()},
    }
    threshold = meta["threshold"]
    if config["model"]["threshold"] == "tuned" and checkpoint.best_epoch is not None:
        logits = _logits(classifier, batches["valid"])  # one pass serves tuning and its report
        threshold = tune_and_store_thresholds(logits, targets["valid"], activation, h5_path)
        result["thresholds"] = threshold
        result["valid_tuned"] = cb.evaluate_logits(logits, targets["valid"], loss, activation,
                                                   data["multi_label"], threshold)
    if "test" in batches:
        result["test"] = cb.evaluate_logits(_logits(classifier, batches["test"]), targets["test"], loss,
                                            activation, data["multi_label"], threshold)
    result["seconds"] = round(time.time() - start, 2)
    _write_json(os.path.join(run_dir, "result.json"), result)
    return result


def _logits(classifier, batches):
    inputs = _inputs_only(batches)
    return inputs.in_input_order(classifier.predict(inputs, verbose=0))


def tune_and_store_thresholds(logits, y_true, activation, h5_path):
    """Per-label thresholds that maximise each label's F1 on validation, written into the .h5."""
    thresholds = tune_thresholds(y_true, NUMPY_ACTIVATIONS[activation](np.asarray(logits, np.float64)))
    update_meta(h5_path, threshold=[float(t) for t in thresholds])
    return [float(t) for t in thresholds]


def build_model(config, paths, num_labels):
    enc = config["encoder"]
    return build_classifier(
        paths["config"], paths["checkpoint"], num_labels, config["model"]["heads"], enc["model"],
        output_layer=enc["output_layer"], pool_layers=enc["pool_layers"], pool_mode=enc["pool_mode"],
        dropout=enc["dropout"], attention_dropout=enc["attention_dropout"],
    )


def compile_model(model, optimizer, loss_fn):
    model.compile(optimizer=optimizer, loss=loss_fn,
                  metrics=[keras.metrics.CategoricalAccuracy(name="acc")])


def fit_in_phases(model, train_batches, callbacks, epochs, unfreeze_epoch, frozen, recompile):
    """``fit`` for ``epochs``; with ``unfreeze_epoch`` the frozen layers join training after that
    many epochs (gradual unfreezing, Howard & Ruder 2018). Keras needs a recompile to see a change
    of ``trainable``; the optimizer object (and its slots) is kept. The History of both phases is
    merged. EarlyStopping restarts its patience in the second phase."""
    if not unfreeze_epoch or unfreeze_epoch >= epochs:
        return model.fit(train_batches, epochs=epochs, callbacks=callbacks, verbose=0)
    first = model.fit(train_batches, epochs=unfreeze_epoch, callbacks=callbacks, verbose=0)
    if model.stop_training:
        return first
    unfreeze_layers(saveable_model(model), frozen)  # the classifier's layers, also inside a trainer
    recompile()
    second = model.fit(train_batches, initial_epoch=unfreeze_epoch, epochs=epochs, callbacks=callbacks,
                       verbose=0)
    second.epoch = first.epoch + second.epoch
    second.history = {k: first.history.get(k, []) + v for k, v in second.history.items()}
    return second


def _inputs_only(batches):
    """Prediction batches of the same texts, in length order (less padding; see batches.py)."""
    return PaddedBatches(batches.token_ids, batches.segment_ids, None, batches.batch_size, by_length=True)


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

