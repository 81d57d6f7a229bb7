"""xtune_keras: rerunnable BERT fine-tuning experiments for text classification.

Importing the package loads neither TensorFlow nor bert4keras (``xtune --help`` and ``xtune
report`` answer at once); the subpackages that need them (``model``, ``train``, ``recipes``,
``export``, ``convert``) import :mod:`xtune_keras.compat` first, which repairs bert4keras.

bert4keras picks tf.keras (not standalone Keras) when TF_KERAS=1, and TensorFlow 2.16+ binds
``tf.keras`` to Keras 3 unless TF_USE_LEGACY_KERAS=1. Both must be set before the first
``import tensorflow``, so they are set here, before anything else is imported.

Layout: ``data`` (tables, datasets, truncation, batches), ``model`` (encoder, layers, heads,
losses, the classifier and its ``.h5`` file), ``train`` (optimizers, trainer step, callbacks,
run folder), ``recipes`` (fine-tuning as named phases), ``experiments`` (sweeps, backends, tables),
``export`` (SavedModel), ``convert`` (Google-format I/O, Hugging Face, e5); ``schema`` declares every
config key once and ``registry`` is the one mechanism behind every extension point.
"""
import os
import sys

__version__ = "0.1.0"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_KERAS"] = "1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"

if "keras" in sys.modules and not getattr(sys.modules["keras"], "__name__", "").startswith("tf_keras"):
    _keras = sys.modules["keras"]
    if getattr(_keras, "__version__", "3").split(".")[0] == "3":
        raise ImportError(
            "xtune_keras: Keras 3 was imported before xtune_keras; bert4keras needs tf.keras 2 "
            "(tf-keras). Import xtune_keras first, or start a fresh Python process."
        )
