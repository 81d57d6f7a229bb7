"""The bert4keras repairs for TF 2.21, each shown on a real save/load."""
import subprocess
import sys

import numpy as np

from bert4keras.backend import keras
from bert4keras.layers import FeedForward
from xtune_keras.model.encoders import build_transformer
from xtune_keras.train.optimizers import XtuneAdam


def test_optimizer_is_built_on_the_legacy_base():
    optimizer = XtuneAdam(1e-3)
    assert hasattr(optimizer, "_set_hyper")
    assert optimizer.get_config()["epsilon"] == 1e-6  # google-research/bert's AdamW epsilon


def test_feedforward_saves_activation_by_name(tiny_ckpt):
    transformer = build_transformer(tiny_ckpt["config"], tiny_ckpt["checkpoint"])
    layer = transformer.layers["Transformer-0-FeedForward"]
    assert isinstance(layer, FeedForward)
    assert layer.get_config()["activation"] == ["gelu_erf"]


def test_encoder_with_optimizer_state_survives_h5(tiny_ckpt, tmp_path):
    transformer = build_transformer(tiny_ckpt["config"], tiny_ckpt["checkpoint"])
    encoder = transformer.model
    x = keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D()(encoder.output))
    model = keras.models.Model(encoder.inputs, x)
    model.compile(XtuneAdam(1e-3), "mse")
    ids = np.array([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0]], np.int32)
    inputs = [ids, np.zeros_like(ids)]
    model.fit(inputs, np.ones((2, 3)), verbose=0)
    path = str(tmp_path / "m.h5")
    model.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again.optimizer, XtuneAdam)
    assert np.array_equal(again.predict(inputs, verbose=0), model.predict(inputs, verbose=0))
    again.fit(inputs, np.ones((2, 3)), verbose=0)  # the restored optimizer keeps training


def test_keras3_imported_first_is_a_clear_error():
    code = "import keras; import xtune_keras"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "Keras 3 was imported before xtune_keras" in done.stderr


def _handler_dataset(x, y=None, **kwargs):
    from tf_keras.src.engine import data_adapter

    return data_adapter.DataHandler(x=x, y=y, **kwargs)._dataset


def test_datasets_keras_builds_run_without_autotuning():
    """An iterator deleted before its end waits for tf.data's autotuning thread to wake up; Keras
    drops one per epoch and per predict, so the datasets it builds for us have no such thread."""
    import tensorflow as tf

    from xtune_keras.data.batches import PaddedBatches

    ids = [[2, 7, 9, 3], [2, 11, 3]]
    sequence = PaddedBatches(ids, [[0] * len(i) for i in ids], np.eye(2, dtype=np.float32), batch_size=1)
    arrays = (np.zeros((4, 3), np.float32), np.zeros((4, 1), np.float32))
    for x, y in ((sequence, None), arrays):
        assert _handler_dataset(x, y).options().autotune.enabled is False
    own = tf.data.Dataset.from_tensor_slices(arrays).batch(2)  # a dataset passed in keeps its options
    assert _handler_dataset(own).options().autotune.enabled is not False


def test_tf_data_autotune_switch_restores_keras_default(monkeypatch):
    from xtune_keras import compat

    monkeypatch.setattr(compat, "TF_DATA_AUTOTUNE", True)
    arrays = (np.zeros((4, 3), np.float32), np.zeros((4, 1), np.float32))
    assert _handler_dataset(*arrays).options().autotune.enabled is not False
