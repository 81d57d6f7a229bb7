"""Training: optimizers, the trainer step (FGM/PGD/R-Drop, micro-batches), callbacks, metrics,
devices. Importing it repairs bert4keras and registers the optimizer classes (a ``.h5`` saved with
its optimizer state reloads)."""
from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
from xtune_keras.model import layers, losses  # noqa: F401
from xtune_keras.train import optimizers  # noqa: F401
