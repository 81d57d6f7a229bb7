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



# Markers by module, declared in one place (see pytest.ini): `make test-fast` deselects slow ones.
#   slow: trains several models, or more than ~20 s in all;
#   subprocess: starts `python -m xtune_keras.cli ...` or a fresh interpreter;
#   assets: reads the real weights or data of installed registry packages (make install).
MODULE_MARKS = {
    "test_adversarial": ("slow",),
    "test_backends": ("slow", "subprocess"),
    "test_cli_errors": ("slow", "subprocess"),
    "test_combine": ("slow", "subprocess"),
    "test_compat": ("subprocess",),
    "test_convert_e5": ("slow", "subprocess", "assets"),
    "test_convert_hf": ("assets",),
    "test_datasets": ("assets",),
    "test_experiments": ("slow",),
    "test_export": ("slow", "subprocess", "assets"),
    "test_export_onnx": ("slow", "subprocess"),
    "test_export_sentencepiece": ("assets",),
    "test_generalize": ("slow", "subprocess"),
    "test_heads": ("slow", "subprocess"),
    "test_losses": ("subprocess",),
    "test_multitask": ("slow", "subprocess"),
    "test_optimizers": ("slow", "subprocess"),
    "test_options": ("slow",),
    "test_precision": ("slow",),
    "test_pretrain": ("slow", "subprocess"),
    "test_reproduce": ("slow", "subprocess", "assets"),
    "test_resume": ("slow", "subprocess"),
    "test_roundtrip": ("slow", "subprocess"),
    "test_serve": ("slow", "subprocess"),
    "test_strategy": ("slow", "subprocess"),
    "test_sweep": ("slow", "subprocess"),
    "test_train": ("subprocess",),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in MODULE_MARKS.get(item.module.__name__.rsplit(".", 1)[-1], ()):
            item.add_marker(mark)
