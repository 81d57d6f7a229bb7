"""Checkpoint formats: Google-format BERT I/O, Hugging Face and e5 conversion."""
from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
