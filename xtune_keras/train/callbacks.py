"""Callbacks: validation metrics into the logs, a metrics.jsonl per run, the named .h5 checkpoint.

Order matters: ``ValidationMetrics`` must run first at each epoch end, so that EarlyStopping,
the checkpoint, the logger and TensorBoard all read the same ``val_*`` values it adds to the logs.
"""
import json
import math
import time

import numpy as np
import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.train.adversarial import saveable_model
from xtune_keras.model.losses import loss_type
from xtune_keras.train.metrics import ACTIVATIONS, classification_metrics
from xtune_keras.model.modelfile import save_model_file
from xtune_keras.schema import hparam_keys

MODES = {"val_loss": "min"}  # every other monitored metric is "higher is better"


def monitor_mode(monitor):
    return MODES.get(monitor, "max")


def evaluate_logits(logits, y_true, loss_fn, activation, multi_label, threshold=0.5):
    """Loss and metrics of logits against targets, as plain floats."""
    loss = float(tf.reduce_mean(loss_fn(tf.constant(y_true), tf.constant(logits))))
    probs = ACTIVATIONS[activation](logits)
    return {"loss": loss, **classification_metrics(y_true, probs, multi_label, threshold)}


class ValidationMetrics(keras.callbacks.Callback):
    """One forward pass over the validation batches per epoch; adds ``val_<metric>`` to the logs.

    ``predictor``: the model to predict with (default: the one being fit); ``prefixes``: the
    names the metrics go under (a multi-task run: ``<task>_val_``, and ``val_`` for the main task)."""

    def __init__(self, batches, y_true, loss_fn, activation, multi_label, threshold=0.5, predictor=None,
                 prefixes=("val_",)):
        super().__init__()
        self.batches, self.y_true = batches, y_true
        self.loss_fn, self.activation = loss_fn, activation
        self.multi_label, self.threshold = multi_label, threshold
        self.predictor, self.prefixes = predictor, prefixes

    def on_epoch_end(self, epoch, logs=None):
        model = self.predictor or self.model
        logits = self.batches.in_input_order(model.predict(self.batches, verbose=0))
        scores = evaluate_logits(logits, self.y_true, self.loss_fn, self.activation,
                                 self.multi_label, self.threshold)
        for prefix in self.prefixes:
            logs.update({prefix + k: v for k, v in scores.items()})


class MetricsLogger(keras.callbacks.Callback):
    """Appends one JSON line per epoch to ``metrics.jsonl`` (flushed, so a crash keeps epochs)."""

    def __init__(self, path, echo=True):
        super().__init__()
        self.path, self.echo = path, echo

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": round(time.time() - self._start, 3)}
        row.update({k: _plain(v) for k, v in (logs or {}).items()})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.echo:
            shown = " ".join("%s=%.4f" % (k, v) for k, v in row.items()
                             if k not in ("epoch", "seconds") and isinstance(v, float))
            print("epoch %d (%.1fs): %s" % (row["epoch"], row["seconds"], shown), flush=True)


def _plain(value):
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None


class NamedH5Checkpoint(keras.callbacks.Callback):
    """Saves the model to its named ``.h5`` (e.g. ``bert_texcnn_Realmutil_mlps_v2(619).h5``)
    whenever the monitored value improves, with the metadata that ``xtune predict`` needs."""

    def __init__(self, path, monitor, meta, token_dict, include_optimizer=False, target=None):
        super().__init__()
        self.path, self.monitor, self.meta, self.token_dict = path, monitor, meta, token_dict
        self.target = target  # the model to save (a multi-task run: one task's classifier)
        self.include_optimizer = include_optimizer
        self.better = np.less if monitor_mode(monitor) == "min" else np.greater
        self.best, self.best_epoch = None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        if self.best is None or self.better(value, self.best):
            self.best, self.best_epoch = float(value), epoch + 1
            meta = dict(self.meta, epoch=epoch + 1, monitor=self.monitor, monitor_value=float(value))
            # the classifier, not an adversarial training wrapper around it
            save_model_file(self.target or saveable_model(self.model), self.path, meta, self.token_dict,
                            self.include_optimizer)


def early_stopping(monitor, patience, restore_best=True):
    return keras.callbacks.EarlyStopping(
        monitor=monitor, mode=monitor_mode(monitor), patience=patience,
        restore_best_weights=restore_best, verbose=0,
    )


def tensorboard(log_dir):
    return keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0, write_graph=False,
                                       profile_batch=0)


# Config keys shown as hyperparameters, besides the derived ones of ``run_hparams``.


def run_hparams(config):
    """The flat ``{key: int | float | str | bool}`` the dashboard shows for one run. A key whose
    value is null (the built-in default) is left out: TensorBoard has no null value."""
    values = {"name": config["name"], "seed": config["seed"],
              "model.heads": "+".join(head["type"] for head in config["model"]["heads"]),  # "cls+mlp"
              "model.loss": loss_type(config["model"]["loss"]),
              "model.threshold": str(config["model"]["threshold"]),  # a number or "tuned": one type
              "train.adversarial": (config["train"]["adversarial"] or {}).get("method", "none")}
    for key in hparam_keys():
        section, name = key.split(".")
        values[key] = config[section][name]
    return {k: v for k, v in sorted(values.items()) if v is not None}


class HParamsLogger(keras.callbacks.Callback):
    """Writes the run's hyperparameters (an HParams session) into ``log_dir``, the parent of the
    TensorBoard callback's train/ and validation/ folders, so ``tensorboard --logdir runs/``
    lists every run of a sweep in its HParams dashboard.

    No experiment summary (``hp.hparams_config``) is written, on purpose: TensorBoard then infers
    the experiment from all runs under the logdir, with each hyperparameter's type, its values
    across runs as the filter domain, and the ones that differ (what the sweep varies) listed
    first; one run's summary could not know the other runs' values. The metrics it infers are
    the scalars below each session: ``val_acc`` is (group ``validation``, tag ``epoch_acc``),
    likewise ``val_loss``, ``val_micro_f1``, ``val_macro_f1``; training ones are under ``train``.
    """

    def __init__(self, log_dir, hparams, trial_id=None):
        super().__init__()
        self.log_dir, self.hparams, self.trial_id = log_dir, hparams, trial_id
        self.written = False

    def on_train_begin(self, logs=None):
        if self.written:  # gradual unfreezing calls fit twice with the same callbacks
            return
        from tensorboard.plugins.hparams import api as hp

        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            hp.hparams(self.hparams, trial_id=self.trial_id)
        writer.close()
        self.written = True


def hparams_callback(log_dir, config, trial_id=None):
    """An ``HParamsLogger`` for the run of ``config``; ``trial_id`` names it in the dashboard
    (default: a hash of the hyperparameters)."""
    return HParamsLogger(log_dir, run_hparams(config), trial_id)
