"""Exports of a trained .h5: a SavedModel that takes raw text (the tokenizer runs in the graph)."""
from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
