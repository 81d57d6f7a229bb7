"""Every head and encoder option builds on the tiny checkpoint and survives .h5 and SavedModel."""
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from xtune_keras.convert.checkpoints import load_variables
from xtune_keras.errors import XtuneError
from xtune_keras.model.heads import HEADS
from xtune_keras.model.layers import MaskedPooling
from xtune_keras.model.classifier import build_classifier

# One stack per head type (each ends on a vector), and the encoder-side options.
VARIANTS = {
    "cls": ([{"type": "cls"}], {}),
    "pooler": ([{"type": "pooler"}], {}),
    "avg": ([{"type": "mlp", "units": [7, 5]}, {"type": "avg"}], {}),
    "max": ([{"type": "max"}], {}),
    "min": ([{"type": "min"}], {}),
    "mlp": ([{"type": "cls"}, {"type": "mlp", "units": [11], "activation": "tanh", "dropout": 0.2}], {}),
    "textcnn": ([{"type": "mlp", "units": [9]}, {"type": "textcnn", "kernel_sizes": [2, 3], "filters": 5}], {}),
    "resnet": ([{"type": "cls"}, {"type": "resnet", "blocks": 2, "units": 7}], {}),
    "densenet": ([{"type": "cls"}, {"type": "densenet", "blocks": 2, "growth": 5}], {}),
    "transformer": ([{"type": "transformer", "num_heads": 2, "ff_units": 13}, {"type": "cls"}], {}),
    "layer0": ([{"type": "cls"}], {"output_layer": 0}),
    "last2-concat": ([{"type": "cls"}], {"pool_layers": 2, "pool_mode": "concat"}),
    "last2-mean": ([{"type": "avg"}], {"pool_layers": 2, "pool_mode": "mean"}),
    "last2-max": ([{"type": "cls"}], {"pool_layers": 2, "pool_mode": "max"}),
}

IDS = np.array([[2, 30, 31, 32, 3, 0, 0], [2, 40, 3, 41, 42, 43, 3]], np.int32)
SEGS = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]], np.int32)
INPUTS = {"Input-Token": IDS, "Input-Segment": SEGS}


def test_every_registered_head_has_a_variant():
    used = {spec["type"] for heads, _ in VARIANTS.values() for spec in heads}
    assert used == set(HEADS)


def build(tiny_ckpt, name):
    heads, options = VARIANTS[name]
    return build_classifier(tiny_ckpt["config"], tiny_ckpt["checkpoint"], 4, heads, **options)


RELOAD = """
import json, sys, numpy as np
import xtune_keras.train  # registers the custom layers, losses and optimizers
import tensorflow as tf
from bert4keras.backend import keras
inputs = {k: np.array(v, np.int32) for k, v in json.loads(sys.argv[1]).items()}
out = {}
for name, h5, saved in json.loads(sys.argv[2]):
    out[name + ":h5"] = keras.models.load_model(h5, compile=False).predict(inputs, verbose=0).tolist()
    serve = tf.saved_model.load(saved).signatures["serving_default"]
    # bert4keras declares float inputs; a SavedModel signature names them with "_" for "-".
    feed = {k.replace("-", "_"): tf.constant(v, tf.float32) for k, v in inputs.items()}
    out[name + ":savedmodel"] = serve(**feed)["logits"].numpy().tolist()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def reloaded(tiny_ckpt, tmp_path_factory):
    """Save every variant as .h5 and SavedModel; reload all in ONE fresh process."""
    tmp = tmp_path_factory.mktemp("heads")
    expected, jobs = {}, []
    for name in VARIANTS:
        model = build(tiny_ckpt, name)
        expected[name] = model.predict(INPUTS, verbose=0)
        h5, saved = str(tmp / (name + ".h5")), str(tmp / (name + "_savedmodel"))
        model.save(h5)
        model.save(saved, save_format="tf")
        jobs.append((name, h5, saved))
    done = subprocess.run([sys.executable, "-c", RELOAD, json.dumps({k: v.tolist() for k, v in INPUTS.items()}),
                           json.dumps(jobs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return expected, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", VARIANTS)
def test_h5_reload_in_fresh_process_is_identical(reloaded, name):
    expected, got = reloaded
    assert np.array_equal(np.array(got[name + ":h5"], np.float32), expected[name])


@pytest.mark.parametrize("name", VARIANTS)
def test_savedmodel_export_matches(reloaded, name):
    expected, got = reloaded
    np.testing.assert_allclose(np.array(got[name + ":savedmodel"]), expected[name], rtol=0, atol=1e-6)


def test_padding_does_not_change_predictions(tiny_ckpt):
    for name in ("avg", "max", "min", "textcnn", "transformer"):
        model = build(tiny_ckpt, name)
        short = model.predict({"Input-Token": IDS[:1, :5], "Input-Segment": SEGS[:1, :5]}, verbose=0)
        padded = model.predict({"Input-Token": IDS[:1], "Input-Segment": SEGS[:1]}, verbose=0)
        np.testing.assert_allclose(padded, short, atol=1e-5, err_msg=name)


def test_masked_pooling_against_numpy():
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3) - 10.0
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
    for mode, reference in (("avg", np.mean), ("max", np.max), ("min", np.min)):
        got = MaskedPooling(mode)([tf.constant(x), tf.constant(mask)]).numpy()
        want = np.stack([reference(x[0, :2], 0), reference(x[1], 0)])
        np.testing.assert_allclose(got, want, err_msg=mode)


def test_pooler_head_loads_pretrained_pooler(tiny_ckpt):
    model = build(tiny_ckpt, "pooler")
    stored = load_variables(tiny_ckpt["checkpoint"])
    kernel, bias = model.get_layer("Pooler-Dense").get_weights()
    assert np.array_equal(kernel, stored["bert/pooler/dense/kernel"])
    assert np.array_equal(bias, stored["bert/pooler/dense/bias"])


def test_output_layer_selects_a_lower_layer(tiny_ckpt):
    model = build(tiny_ckpt, "layer0")
    assert "Transformer-1-FeedForward-Norm" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize("heads, options, message", [
    ([{"type": "mlp"}], {}, "ends on a sequence"),
    ([{"type": "cls"}, {"type": "avg"}], {}, "needs a token sequence"),
    ([{"type": "cls"}], {"output_layer": 5}, "encoder.output_layer: 5 is outside the 2 layers"),
    ([{"type": "cls"}], {"pool_layers": 3}, "encoder.pool_layers: 3"),
])
def test_bad_stacks_are_clear_errors(tiny_ckpt, heads, options, message):
    with pytest.raises(XtuneError, match=message):
        build_classifier(tiny_ckpt["config"], tiny_ckpt["checkpoint"], 3, heads, **options)
