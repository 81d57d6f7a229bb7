"""The model: encoder (bert4keras), layers, heads, losses, the classifier and its ``.h5`` file.

Importing it repairs bert4keras (:mod:`xtune_keras.compat`) and registers xtune's custom layers and
losses, so ``keras.models.load_model`` reads an xtune ``.h5`` after ``import xtune_keras.model``.
"""
from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
from xtune_keras.model import layers, losses  # noqa: F401  (custom objects registered at import)
