"""Recipes: a kind of run as named phases over a run folder.

Fine-tuning is one; pretraining and multi-task plug in as new files."""
from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
