"""Losses and optimizers: a compiled model (loss + optimizer state) survives .h5 with load_model
in a fresh process, and SavedModel export, with identical predictions. Heads and layers have the
same check in test_heads.py."""
import json
import subprocess
import sys

import numpy as np
import pytest

from xtune_keras.model.losses import LOSSES, build_loss
from xtune_keras.model.classifier import build_classifier
from xtune_keras.train.optimizers import build_optimizer

CASES = {("loss", name): {"loss": name} for name in LOSSES}
CASES.update({
    ("optimizer", "adam"): {"optimizer": {}},
    ("optimizer", "adamw"): {"optimizer": {"name": "adamw"}},
    ("optimizer", "adamw+warmup+decay+llrd+accum+ema"): {"optimizer": {
        "name": "adamw", "warmup_steps": 2, "total_steps": 10, "grad_accum_steps": 2, "ema_momentum": 0.9,
        "lr_multipliers": {"Embedding-": 0.5, "Transformer-0-": 0.7}}},
})
IDS = np.array([[2, 30, 31, 32, 3, 0], [2, 40, 3, 41, 42, 3]], np.int32)
INPUTS = {"Input-Token": IDS, "Input-Segment": np.zeros_like(IDS)}
TARGETS = np.array([[1, 0, 1], [0, 1, 0]], np.float32)

RELOAD = """
import json, sys, numpy as np
import xtune_keras.train  # registers the custom layers, losses and optimizers
import tensorflow as tf
from bert4keras.backend import keras
inputs = {k: np.array(v, np.int32) for k, v in json.loads(sys.argv[1]).items()}
targets = np.array(json.loads(sys.argv[2]), np.float32)
out = {}
for key, h5, saved in json.loads(sys.argv[3]):
    model = keras.models.load_model(h5)  # compile=True: loss and optimizer state come back
    out[key] = {"h5": model.predict(inputs, verbose=0).tolist(), "optimizer": type(model.optimizer).__name__,
                "loss": type(model.loss).__name__, "iterations": int(model.optimizer.iterations.numpy())}
    model.train_on_batch(inputs, targets)  # and it keeps training
    out[key]["savedmodel"] = keras.models.load_model(saved).predict(inputs, verbose=0).tolist()
print(json.dumps(out))
"""


def compiled_model(tiny_ckpt, case):
    model = build_classifier(tiny_ckpt["config"], tiny_ckpt["checkpoint"], 3,
                             [{"type": "cls"}, {"type": "mlp", "units": [5]}])
    options = dict(case.get("optimizer", {}))
    name = options.pop("name", "adam")
    model.compile(build_optimizer(name, 1e-3, **options), build_loss(case.get("loss", "bce")))
    for _ in range(2):
        model.train_on_batch(INPUTS, TARGETS)
    return model


@pytest.fixture(scope="module")
def reloaded(tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roundtrip")
    expected, jobs = {}, []
    for i, (key, case) in enumerate(CASES.items()):
        model = compiled_model(tiny_ckpt, case)
        h5, saved = str(tmp / ("m%d.h5" % i)), str(tmp / ("m%d_saved" % i))
        model.save(h5)
        model.save(saved, save_format="tf")
        expected["/".join(key)] = (model.predict(INPUTS, verbose=0), type(model.optimizer).__name__,
                                   type(model.loss).__name__)
        jobs.append(("/".join(key), h5, saved))
    done = subprocess.run([sys.executable, "-c", RELOAD, json.dumps({k: v.tolist() for k, v in INPUTS.items()}),
                           json.dumps(TARGETS.tolist()), json.dumps(jobs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return expected, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("key", ["/".join(k) for k in CASES])
def test_compiled_model_round_trip(reloaded, key):
    expected, got = reloaded
    predictions, optimizer, loss = expected[key]
    assert np.array_equal(np.array(got[key]["h5"], np.float32), predictions)
    np.testing.assert_allclose(np.array(got[key]["savedmodel"]), predictions, rtol=0, atol=1e-6)
    assert got[key]["optimizer"] == optimizer and got[key]["loss"] == loss
    assert got[key]["iterations"] == 2
