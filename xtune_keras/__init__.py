"""xtune_keras: rerunnable BERT fine-tuning experiments for text classification.

bert4keras picks tf.keras (not standalone Keras) when TF_KERAS=1, and TensorFlow 2.16+
binds ``tf.keras`` to Keras 3 unless TF_USE_LEGACY_KERAS=1. Both must be set before the
first ``import tensorflow``, so they are set here, before anything else is imported.
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



def _import_and_register():
    """compat first (repairs bert4keras), then every module that registers Keras custom objects,
    so ``keras.models.load_model`` on an xtune .h5 works after a bare ``import xtune_keras``."""
    from xtune_keras import compat  # noqa: F401
    from xtune_keras import layers, losses, optimizers  # noqa: F401


def _import_with_native_logs_parked():
    """Import TensorFlow (through compat) with file descriptor 2 parked in a temp file.

    TensorFlow's C++ start-up lines (absl and oneDNN notices) ignore TF_CPP_MIN_LOG_LEVEL and
    would bury the one-line errors of the CLI. They are replayed if the import fails, and kept
    when XTUNE_NATIVE_LOGS=1.
    """
    import tempfile

    if os.environ.get("XTUNE_NATIVE_LOGS") == "1":
        _import_and_register()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as parked:
        os.dup2(parked.fileno(), 2)
        try:
            _import_and_register()
        except BaseException:
            os.dup2(saved, 2)
            parked.seek(0)
            sys.stderr.write(parked.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_import_with_native_logs_parked()
