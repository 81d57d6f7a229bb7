"""Resuming a killed run at its last finished epoch, as Keras's ``BackupAndRestore`` does, plus
the state of xtune's own callbacks.

After every epoch ``ResumeState`` writes into ``<run>/resume/``: the model and optimizer
(``tf.train.Checkpoint``: weights, slots, iteration counter) and ``state.json`` (the epoch, whether
training stopped, and the attributes of the stateful callbacks: EarlyStopping's patience count
and best, the ``.h5`` checkpoint's best). ``state.json`` is replaced atomically and names its
checkpoint, so a kill at any moment leaves the previous complete state. The data order has two
sources: ``PaddedBatches`` draws each epoch's example order from its own seeded generator (the
recipe replays the draws of the finished epochs), and Keras's ``fit`` shuffles the order of the
batches with Python's ``random`` (its state is saved here). Not restored: TensorFlow's random
stream of dropout, so a resumed run with dropout equals an uninterrupted one in distribution,
not bit for bit.
"""
import json
import os
import random
import shutil

import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.rundir import RunDir
from xtune_keras.train.optimizers import apply_ema, restore_weights


def restore_training(directory, state, model, optimizer):
    """Weights and optimizer state of ``state``'s epoch into ``model`` and ``optimizer`` (slots
    not created yet are restored when the first step creates them)."""
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    checkpoint.read(os.path.join(directory, state["checkpoint"])).assert_existing_objects_matched()


class ResumeState(keras.callbacks.Callback):
    """Put it LAST in the callback list: it records what the callbacks before it decided.

    ``stateful``: ``{name: (callback, [attribute, ...])}``; ``restored``: a ``RunDir.resume_state()`` dict
    whose attributes are put back when training begins (after the callbacks reset themselves);
    ``every``: save after every ``every``-th epoch only, and always after epoch ``last``."""

    def __init__(self, directory, optimizer, stateful, restored=None, every=1, last=None):
        super().__init__()
        self.directory, self.optimizer, self.stateful = directory, optimizer, stateful
        self.restored = restored
        self.every, self.last = every, last

    def on_train_begin(self, logs=None):
        if self.restored is None:
            return
        version, internal, gauss = self.restored["python_random"]
        random.setstate((version, tuple(internal), gauss))  # Keras shuffles the batches with it
        for name, (callback, attributes) in self.stateful.items():
            for attribute in attributes:
                setattr(callback, attribute, self.restored["callbacks"][name][attribute])
        self.restored = None  # a second fit (gradual unfreezing) starts its callbacks afresh

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.last and not self.model.stop_training:
            return
        name = "epoch-%d" % (epoch + 1)
        os.makedirs(self.directory, exist_ok=True)
        # EMAWeights swapped the averages in for validation; the state to resume is the trained one.
        swapped = restore_weights(self.model)
        tf.train.Checkpoint(model=self.model, optimizer=self.optimizer).write(
            os.path.join(self.directory, name, "ckpt"))
        if swapped:
            apply_ema(self.model)
        state = {"epoch": epoch + 1, "checkpoint": os.path.join(name, "ckpt"),
                 "stop_training": bool(self.model.stop_training),
                 "python_random": random.getstate(),
                 "callbacks": {key: {a: _plain(getattr(callback, a)) for a in attributes}
                               for key, (callback, attributes) in self.stateful.items()}}
        path = os.path.join(self.directory, RunDir.RESUME_STATE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)
        for old in os.listdir(self.directory):
            if old.startswith("epoch-") and old != name:
                shutil.rmtree(os.path.join(self.directory, old), ignore_errors=True)


def _plain(value):
    """JSON-ready: numpy scalars to Python numbers (``inf`` is kept; Python's json writes it)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


EARLY_STOPPING_STATE = ["wait", "stopped_epoch", "best", "best_epoch"]
H5_CHECKPOINT_STATE = ["best", "best_epoch"]
