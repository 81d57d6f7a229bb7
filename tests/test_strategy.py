"""train.strategy: mirrored (tf.distribute MirroredStrategy) on two logical CPUs.

Logical devices must be configured before TensorFlow initialises its runtime, which the pytest
process has long done, so the runs happen in one child process that splits the CPU in two first.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.schema import load_config
from xtune_keras.errors import XtuneError
from xtune_keras.rundir import RunDir

CHILD = r'''
import json
import sys

import numpy as np

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from bert4keras.backend import keras
from xtune_keras.train.adversarial import AdversarialTrainer
from xtune_keras.cli import main
from xtune_keras.train.distribute import build_strategy
from xtune_keras.model.losses import build_loss

for argv in json.loads(sys.argv[1]):
    print("=== run %s" % " ".join(argv[2:]), flush=True)
    print("=== exit %d" % main(argv), flush=True)


class HalfShift(keras.layers.Layer):
    """Changes the second half of a batch: R-Drop's two passes differ as with two dropout masks."""

    def call(self, x):
        half = tf.shape(x)[0] // 2
        return tf.concat([x[:half], x[half:] * 1.5 + 0.3], 0)


def rdrop_step(strategy):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = (rng.random((16, 3)) < 0.5).astype("float32")
    with strategy.scope():
        inputs = keras.Input((4,))
        classifier = keras.Model(inputs, HalfShift()(keras.layers.Dense(3)(inputs)))
        trainer = AdversarialTrainer(classifier, method=None, rdrop_alpha=1.0)
        trainer.compile(optimizer=keras.optimizers.legacy.SGD(0.5), loss=build_loss("bce"))
    history = trainer.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return classifier.get_weights()[0], {k: float(v[0]) for k, v in history.history.items()}


# The recipe's (cached) strategy: a second MirroredStrategy object in this process would reuse
# the collective keys of the runs above.
mirrored = build_strategy("mirrored", echo=False)
w_one, logs_one = rdrop_step(tf.distribute.get_strategy())
report = {"replicas": mirrored.num_replicas_in_sync, "one_device": logs_one}
w, logs = rdrop_step(mirrored)
report["mirrored"] = {"max_weight_diff": float(np.abs(w - w_one).max()), "logs": logs}
print("RDROP " + json.dumps(report), flush=True)
'''

NO_DROPOUT = ["encoder.dropout=0", "encoder.attention_dropout=0",
              "model.heads=[{type: cls}, {type: mlp, units: [16], dropout: 0}]"]
RUNS = {
    "one_device": [],
    "mirrored": ["train.strategy=mirrored"],
    "mirrored_fgm": ["train.strategy=mirrored", "train.adversarial={method: fgm, epsilon: 1.0}"],
}


@pytest.fixture(scope="module")
def child(tiny_ckpt, tmp_path_factory):
    """The three runs of RUNS (one epoch, no dropout) and the R-Drop check, in one child process."""
    tmp = tmp_path_factory.mktemp("strategy")
    data = write_multilabel_csvs(str(tmp))
    yaml_path = write_experiment(str(tmp / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp),
                                 train={"epochs": 1, "batch_size": 8}, output={"tensorboard": False})
    overrides = {name: NO_DROPOUT + extra + ["name=%s" % name] for name, extra in RUNS.items()}
    argvs = [["train", yaml_path] + overrides[name] for name in RUNS]
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argvs)], cwd=str(tmp), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {}
    for name, (_, text) in zip(RUNS, _split_runs(done.stdout)):
        run_dir = RunDir.of(load_config(yaml_path, overrides[name])).path
        with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
            runs[name] = {"stdout": text, "epoch1": json.loads(f.readline())}
    rdrop = [line for line in done.stdout.splitlines() if line.startswith("RDROP ")]
    return {"runs": runs, "rdrop": json.loads(rdrop[0][len("RDROP "):]), "stdout": done.stdout}


def _split_runs(stdout):
    """``[(exit code, text of that run), ...]`` between the child's ``=== run`` / ``=== exit`` lines."""
    parts, text = [], []
    for line in stdout.splitlines():
        if line.startswith("=== run"):
            text = []
        elif line.startswith("=== exit"):
            assert line == "=== exit 0", "\n".join(text)
            parts.append((0, "\n".join(text)))
        else:
            text.append(line)
    return parts


def test_mirrored_run_uses_two_replicas_and_matches_one_device(child):
    runs = child["runs"]
    assert "train.strategy mirrored: 2 replicas on CPU:0, CPU:1" in runs["mirrored"]["stdout"]
    assert "replicas" not in runs["one_device"]["stdout"]
    one, two = runs["one_device"]["epoch1"], runs["mirrored"]["epoch1"]
    # Same seed, same data, no dropout, batches split evenly (36 = 4 x 8 + 4): the same updates up
    # to float summation order. Observed: the same first-epoch loss to the last digit,
    # val_loss 1.2e-7 apart (with dropout 0.1 instead, where masks differ per replica: 5e-4).
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-5)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
    assert two["acc"] == pytest.approx(one["acc"], abs=1e-6)


def test_fgm_trains_under_mirrored_with_losses_on_the_global_scale(child):
    fgm = child["runs"]["mirrored_fgm"]
    assert "2 replicas" in fgm["stdout"]
    epoch = fgm["epoch1"]
    assert math.isfinite(epoch["loss"]) and math.isfinite(epoch["adv_loss"])
    assert epoch["adv_loss"] > epoch["loss"]  # the perturbation is an ascent step
    # The clean loss is logged per example, not divided by the 2 replicas (0.34 would be wrong).
    assert epoch["loss"] == pytest.approx(child["runs"]["one_device"]["epoch1"]["loss"], abs=0.01)


def test_rdrop_kl_and_logged_losses_are_scaled_for_replicas(child):
    report = child["rdrop"]
    assert report["replicas"] == 2
    # Unscaled, the KL's gradient would count once per replica (the weights would differ by > 1e-4)
    # and the logged losses would be halved: AdversarialTrainer gives the one-device step exactly.
    assert report["mirrored"]["max_weight_diff"] < 1e-6
    for key in ("loss", "task_loss", "rdrop_kl"):
        assert report["mirrored"]["logs"][key] == pytest.approx(report["one_device"][key], rel=1e-5)


BASE = {"data": {"train": "t.csv", "valid": "v.csv"}, "encoder": {"dir": "ckpt"}}


@pytest.mark.parametrize("overrides, fragment", [
    (["train.strategy=horovod"], "train.strategy: unknown choice 'horovod'; valid: null, mirrored"),
    (["train.devices=[/gpu:0]"], "train.devices needs train.strategy: mirrored"),
    (["train.strategy=mirrored", "train.devices=3"], "train.devices must be null or a list of device names"),
    (["train.strategy=mirrored", "train.devices=[]"], "train.devices must be null or a list of device names"),
    (["train.strategy=mirrored", "train.devices=[/gpu:0, /gpu:0]"], "train.devices lists a device twice"),
    (["train.strategy=mirrored", "encoder.freeze=true", "encoder.unfreeze_epoch=1"],
     "mirrored cannot be combined with encoder.unfreeze_epoch"),
])
def test_bad_strategy_config_is_one_line(tmp_path, overrides, fragment):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    with pytest.raises(XtuneError) as info:
        load_config(str(path), overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_strategy_defaults_and_single_device_name(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    train = load_config(str(path))["train"]
    assert train["strategy"] is None and train["devices"] is None
    assert load_config(str(path), ["train.strategy=mirrored", "train.devices=/cpu:0"])["train"]["devices"] == ["/cpu:0"]


def test_unknown_device_lists_the_devices_here():
    from xtune_keras.train.distribute import build_strategy

    with pytest.raises(XtuneError, match=r"train.devices: no device GPU:7 on this machine; devices here: CPU:0"):
        build_strategy("mirrored", ["/gpu:7"], echo=False)
    with pytest.raises(XtuneError, match="not a device name like /gpu:0"):
        build_strategy("mirrored", ["cpu"], echo=False)
    with pytest.raises(XtuneError, match="train.devices names CPU:0 twice"):
        build_strategy("mirrored", ["/cpu:0", "CPU:0"], echo=False)
