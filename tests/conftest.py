"""Shared fixtures: a tiny Google-format checkpoint (odd sizes) written once per session."""

import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from xtune_keras.testing import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """{'dir', 'config', 'checkpoint', 'vocab'} of a BERT with hidden 8, intermediate 13, 2 layers."""
    directory = str(tmp_path_factory.mktemp("tiny_bert"))
    paths = write_tiny_checkpoint(directory, seed=0)
    paths["dir"] = directory
    return paths


@pytest.fixture(scope="session")
def tiny_albert(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tiny_albert"))
    paths = write_tiny_checkpoint(directory, model="albert", seed=1)
    paths["dir"] = directory
    return paths
