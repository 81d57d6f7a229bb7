"""Repairs that make bert4keras 0.11.5 work on TensorFlow 2.21 + tf-keras 2.21, in one place.

Each repair is small and named after the breakage it fixes:

* ``_legacy_optimizer_base``: bert4keras optimizers subclass ``keras.optimizers.Optimizer`` and
  call ``_set_hyper``, which only the legacy (OptimizerV2) base class has since TF 2.11. We let
  bert4keras define its classes while ``keras.optimizers.Optimizer`` points at the legacy base.
* ``_feedforward_activation_by_name``: ``FeedForward.get_config`` serialises its activation as a
  bare function object (``{'class_name': 'function', 'config': 'gelu_erf'}``), which the ``.h5``
  loader cannot turn back into a function. We save the registered name instead.
* Checkpoint writing without TF1 sessions lives in :mod:`xtune_keras.convert.checkpoints`.
* No ``Lambda`` in saved models: see :mod:`xtune_keras.model.layers`.
* ``_keras_datasets_without_autotune``: deleting a tf.data iterator that has not reached its end
  often blocks until tf.data's autotuning thread next wakes up, and Keras drops one such iterator
  per ``fit`` epoch and per ``predict`` or ``evaluate`` call. The datasets Keras builds from our
  Sequences and arrays run without that thread.

TensorFlow itself is first imported here, its C++ start-up lines parked
(``_with_native_logs_parked``). ``import xtune_keras`` alone does not import this module.
"""
import os
import sys
import warnings

import xtune_keras  # noqa: F401  (TF_KERAS / TF_USE_LEGACY_KERAS before TensorFlow)

_KERAS3_MSG = (
    "xtune_keras: tf.keras is Keras 3 in this process (TensorFlow or Keras was imported before "
    "xtune_keras without TF_USE_LEGACY_KERAS=1). Import xtune_keras first, or set "
    "TF_KERAS=1 TF_USE_LEGACY_KERAS=1 before starting Python."
)


def _with_native_logs_parked(function):
    """``function()`` with file descriptor 2 parked in a temp file.

    TensorFlow's C++ start-up lines (absl and oneDNN notices, printed while TensorFlow and Keras
    load) ignore TF_CPP_MIN_LOG_LEVEL and would bury the one-line errors of the CLI. They are
    replayed if the import fails, and kept when XTUNE_NATIVE_LOGS=1.
    """
    import tempfile

    if os.environ.get("XTUNE_NATIVE_LOGS") == "1":
        return function()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as parked:
        os.dup2(parked.fileno(), 2)
        try:
            return function()
        except BaseException:
            os.dup2(saved, 2)
            parked.seek(0)
            sys.stderr.write(parked.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_legacy_keras():
    import tensorflow as tf

    # tf.keras is a lazy loader; its module name says which Keras it resolves to.
    if not tf.keras.__name__.startswith("tf_keras"):
        raise ImportError(_KERAS3_MSG)


def _legacy_optimizer_base():
    from bert4keras.backend import keras

    modern = keras.optimizers.Optimizer
    keras.optimizers.Optimizer = keras.optimizers.legacy.Optimizer
    try:
        import bert4keras.optimizers  # noqa: F401  (class bodies bind the base here)
    finally:
        keras.optimizers.Optimizer = modern


def _activation_name(activation):
    """The name under which ``activation`` is registered, so that ``activations.get`` finds it."""
    from bert4keras.backend import keras

    name = getattr(activation, "__name__", None)
    custom = keras.utils.get_custom_objects()
    if name in custom and custom[name] is activation:
        return name
    return keras.activations.serialize(activation)


def _feedforward_activation_by_name():
    from bert4keras.backend import gelu_erf, gelu_tanh, keras
    from bert4keras.layers import FeedForward

    # Register the gelu variants under their own names: bert4keras only registers the chosen one
    # under the alias 'gelu', which would reload as whichever variant is current at load time.
    keras.utils.get_custom_objects().update({"gelu_erf": gelu_erf, "gelu_tanh": gelu_tanh})
    original_get_config = FeedForward.get_config

    def get_config(self):
        config = original_get_config(self)
        config["activation"] = [_activation_name(a) for a in self.activation]
        return config

    FeedForward.get_config = get_config


def _attention_dropout_keeps_its_dtype():
    """bert4keras creates the attention-probability Dropout inside ``call``, so it takes whatever
    global precision policy is current when the graph is traced and casts the probabilities to it:
    a model built under mixed_bfloat16 then fails (einsum of float32 by bfloat16) when it runs
    under float32, and the other way round. That one Dropout keeps its input's dtype instead."""
    import bert4keras.layers
    from bert4keras.backend import keras

    class AttentionDropout(keras.layers.Dropout):
        def __init__(self, rate, **kwargs):
            super().__init__(rate, **kwargs)
            self._autocast = False

    bert4keras.layers.Dropout = AttentionDropout  # read only by MultiHeadAttention's call
    # built on the functional graph's tensors, it is a layer of the saved model: it must reload
    keras.utils.get_custom_objects()["AttentionDropout"] = AttentionDropout


# ``True`` keeps tf.data's autotuning on the datasets Keras builds (what Keras does by default);
# bench/epoch_boundaries.py sets it to time both.
TF_DATA_AUTOTUNE = False


def _keras_datasets_without_autotune():
    """tf.data's autotuning thread sleeps 10 ms, then twice as long after each wake-up (capped at a
    minute), and deleting an iterator before its end often waits for that wake-up. Keras stops at
    ``len(sequence)`` steps without reaching the end, so each epoch's iterator and each
    ``predict`` can pay it (measured: bench/RESULTS.md §4, "Epoch boundaries"). Only the datasets
    Keras builds itself lose the thread; a ``tf.data.Dataset`` passed in keeps its own options.
    Our batches are ready-made numpy arrays: there is nothing for it to tune."""
    import tensorflow as tf
    from tf_keras.src.engine import data_adapter

    options = tf.data.Options()
    options.autotune.enabled = False
    configure = data_adapter.DataHandler._configure_dataset_and_inferred_steps

    def configure_without_autotune(self, *args, **kwargs):
        adapter = self._adapter
        if not TF_DATA_AUTOTUNE and not isinstance(adapter, data_adapter.DatasetAdapter):
            dataset = adapter.get_dataset().with_options(options)
            adapter.get_dataset = lambda: dataset
        return configure(self, *args, **kwargs)

    data_adapter.DataHandler._configure_dataset_and_inferred_steps = configure_without_autotune


def _quiet_known_warnings():
    """Two warnings every run would print: bert4keras shares one seeded-by-design initializer
    across layers, and .h5 is the format the write-up's models use on purpose."""
    warnings.filterwarnings("ignore", message="The initializer TruncatedNormal is unseeded")
    warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")


def _apply():
    if os.environ.get("TF_KERAS") != "1" or os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise ImportError(_KERAS3_MSG)
    _check_legacy_keras()
    if "bert4keras.optimizers" in sys.modules:
        base = sys.modules["bert4keras.optimizers"].Adam.__mro__[1]
        if not hasattr(base, "_set_hyper"):
            raise ImportError(
                "xtune_keras: bert4keras.optimizers was imported before xtune_keras; "
                "import xtune_keras first so its optimizers get the legacy base class."
            )
    else:
        _legacy_optimizer_base()
    _feedforward_activation_by_name()
    _attention_dropout_keeps_its_dtype()
    _keras_datasets_without_autotune()
    _quiet_known_warnings()


_with_native_logs_parked(_apply)
