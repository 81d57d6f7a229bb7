"""Losses against NumPy references (float64), their registry, options, and .h5 round trips."""
import json
import os
import subprocess
import sys
import textwrap

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np
import pytest
import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.errors import XtuneError
from xtune_keras.model.losses import (
    ACTIVATIONS, LOSSES, MultilabelCE, SigmoidBCE, SigmoidFocal, SoftmaxCE, build_loss, loss_type,
    validate_loss,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = dict(rtol=0, atol=1e-6)  # float64 throughout, so 1e-6 absolute is a real check

# Multi-label fixture: row 2 has no positive label, row 3 every label positive.
LOGITS = np.random.default_rng(0).normal(0.0, 3.0, size=(5, 4))
TARGETS = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]], float)
ONE_HOT = np.eye(4)[[0, 3, 1, 2, 2]]


# ---- independent NumPy references (naive formulas: fine for moderate logits) ----

def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_bce(y, x, eps=0.0):
    t, p = y * (1 - eps) + eps / 2, np_sigmoid(x)
    return np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)), axis=-1)


def ref_ce(y, x, eps=0.0):
    t = y * (1 - eps) + eps / y.shape[-1]
    log_softmax = x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))
    return -np.sum(t * log_softmax, axis=-1)


def ref_focal(y, x, alpha=0.25, gamma=2.0):
    p = np_sigmoid(x)
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    return np.mean(-alpha_t * (1 - p_t) ** gamma * np.log(p_t), axis=-1)


def ref_multilabel_ce(y, x):
    negatives = np.sum(np.where(y == 0, np.exp(x), 0.0), axis=-1)
    positives = np.sum(np.where(y == 1, np.exp(-x), 0.0), axis=-1)
    return np.log1p(negatives) + np.log1p(positives)


def per_example(loss, y, x):
    """The loss's per-example values in float64 (``call`` skips Keras's float32 reduction)."""
    return loss.call(tf.constant(y, tf.float64), tf.constant(x, tf.float64)).numpy()


# ---- values ----

@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_bce_matches_numpy(eps):
    got = per_example(SigmoidBCE(label_smoothing=eps), TARGETS, LOGITS)
    np.testing.assert_allclose(got, ref_bce(TARGETS, LOGITS, eps), **TOL)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_ce_matches_numpy(eps):
    got = per_example(SoftmaxCE(label_smoothing=eps), ONE_HOT, LOGITS)
    np.testing.assert_allclose(got, ref_ce(ONE_HOT, LOGITS, eps), **TOL)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5), (1.0, 5.0)])
def test_focal_matches_numpy(alpha, gamma):
    got = per_example(SigmoidFocal(alpha=alpha, gamma=gamma), TARGETS, LOGITS)
    np.testing.assert_allclose(got, ref_focal(TARGETS, LOGITS, alpha, gamma), **TOL)


def test_focal_without_focusing_is_half_bce():
    focal = per_example(SigmoidFocal(alpha=0.5, gamma=0.0), TARGETS, LOGITS)
    np.testing.assert_allclose(focal, 0.5 * per_example(SigmoidBCE(), TARGETS, LOGITS), **TOL)


def test_multilabel_ce_matches_numpy():
    got = per_example(MultilabelCE(), TARGETS, LOGITS)
    np.testing.assert_allclose(got, ref_multilabel_ce(TARGETS, LOGITS), **TOL)


def test_multilabel_ce_rows_without_positives_or_negatives():
    # No positive label: only the negative term, log(1 + sum e^s); every label positive: only
    # the positive term, log(1 + sum e^-s).
    x = LOGITS[:2]
    got = per_example(MultilabelCE(), np.array([[0, 0, 0, 0], [1, 1, 1, 1]], float), x)
    expected = [np.log1p(np.exp(x[0]).sum()), np.log1p(np.exp(-x[1]).sum())]
    np.testing.assert_allclose(got, expected, **TOL)


def test_keras_reduction_is_the_batch_mean():
    for loss, y, reference in ((SigmoidBCE(), TARGETS, ref_bce), (SoftmaxCE(), ONE_HOT, ref_ce),
                               (SigmoidFocal(), TARGETS, ref_focal),
                               (MultilabelCE(), TARGETS, ref_multilabel_ce)):
        reduced = loss(tf.constant(y), tf.constant(LOGITS)).numpy()
        # Keras reduces in float32 (relative precision ~6e-8).
        np.testing.assert_allclose(reduced, reference(y, LOGITS).mean(), rtol=1e-6)


# ---- large logits: finite and exact, checked against values worked out by hand ----

BIG = 1e4
BIG_LOGITS = np.array([[BIG, -BIG, BIG, -BIG], [BIG, -BIG, BIG, -BIG], [BIG, -BIG, BIG, -BIG]])
# Row 0: labels 0,1 right, 2,3 wrong by 1e4; row 1 all right; row 2 (no positive) two wrong.
BIG_TARGETS = np.array([[1, 0, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]], float)


def test_bce_large_logits():
    got = per_example(SigmoidBCE(), BIG_TARGETS, BIG_LOGITS)
    np.testing.assert_allclose(got, [2 * BIG / 4, 0.0, 2 * BIG / 4], **TOL)


def test_ce_large_logits():
    x = np.array([[BIG, -BIG, 0.0], [BIG, -BIG, 0.0], [BIG, -BIG, 0.0]])
    y = np.eye(3)
    # logsumexp(x) = 1e4 exactly in float64; loss = logsumexp(x) - x[true].
    np.testing.assert_allclose(per_example(SoftmaxCE(), y, x), [0.0, 2 * BIG, BIG], **TOL)


def test_focal_large_logits():
    alpha = 0.25
    got = per_example(SigmoidFocal(alpha=alpha, gamma=2.0), BIG_TARGETS, BIG_LOGITS)
    # Wrong positive (x=-1e4): alpha * 1 * 1e4; wrong negative (x=1e4): (1-alpha) * 1 * 1e4.
    row0 = (BIG * (1 - alpha) + BIG * alpha) / 4
    row2 = 2 * BIG * (1 - alpha) / 4
    np.testing.assert_allclose(got, [row0, 0.0, row2], **TOL)


def test_multilabel_ce_large_logits():
    got = per_example(MultilabelCE(), BIG_TARGETS, BIG_LOGITS)
    # Row 0: log(1 + e^1e4 + e^-1e4) twice = 2e4; row 1: log(1 + 2 e^-1e4) twice = 0;
    # row 2: log(1 + 2 e^1e4 + 2 e^-1e4) = 1e4 + log 2, no positive term.
    np.testing.assert_allclose(got, [2 * BIG, 0.0, BIG + np.log(2.0)], **TOL)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_are_finite_for_large_logits(name):
    y = np.eye(4)[[0, 1, 2]] if name == "ce" else BIG_TARGETS
    x = tf.Variable(BIG_LOGITS)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(LOSSES[name]().call(tf.constant(y), x))
    assert np.all(np.isfinite(tape.gradient(value, x).numpy()))


def test_float32_large_logits_stay_finite():
    x32, y32 = tf.constant(BIG_LOGITS, tf.float32), tf.constant(BIG_TARGETS, tf.float32)
    for name, cls in LOSSES.items():
        y = tf.constant(np.eye(4)[[0, 1, 2]], tf.float32) if name == "ce" else y32
        assert np.all(np.isfinite(cls().call(y, x32).numpy())), name


# ---- registry and config ----

def test_registry_and_activations():
    assert set(LOSSES) == {"bce", "ce", "focal", "multilabel_ce"}
    assert ACTIVATIONS == {"bce": "sigmoid", "ce": "softmax", "focal": "sigmoid",
                           "multilabel_ce": "sigmoid"}
    for cls in LOSSES.values():
        assert keras.utils.get_registered_name(cls) == "xtune>" + cls.__name__
        assert issubclass(cls, keras.losses.Loss)


NON_DEFAULT = {
    "bce": {"type": "bce", "label_smoothing": 0.1},
    "ce": {"type": "ce", "label_smoothing": 0.2},
    "focal": {"type": "focal", "alpha": 0.4, "gamma": 1.5},
    "multilabel_ce": {"type": "multilabel_ce"},
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_config_round_trip(name):
    loss = build_loss(NON_DEFAULT[name])
    config = loss.get_config()
    for key, value in NON_DEFAULT[name].items():
        if key != "type":
            assert config[key] == value
    again = type(loss).from_config(config)
    assert again.get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == config


def test_build_loss_from_name_uses_defaults():
    assert build_loss("focal").get_config()["alpha"] == 0.25
    assert build_loss("focal").get_config()["gamma"] == 2.0
    assert build_loss("bce").label_smoothing == 0.0
    assert loss_type("ce") == "ce" and loss_type({"type": "focal", "gamma": 1}) == "focal"


def test_build_loss_parses_numbers_written_as_text():
    # PyYAML (YAML 1.1) reads 1e-1 without a dot as a string.
    assert build_loss({"type": "bce", "label_smoothing": "1e-1"}).label_smoothing == 0.1
    assert build_loss({"type": "focal", "gamma": 0}).gamma == 0.0


@pytest.mark.parametrize("spec,fragments", [
    ("hinge", ["model.loss", "unknown loss type 'hinge'", "bce, ce, focal, multilabel_ce"]),
    ({"type": "nope"}, ["unknown loss type 'nope'", "valid: bce, ce, focal, multilabel_ce"]),
    ({"gamma": 2}, ["needs 'type'", "bce, ce, focal, multilabel_ce"]),
    ({"type": "focal", "beta": 1}, ["unknown option 'beta' for loss type 'focal'", "valid: alpha, gamma"]),
    ({"type": "multilabel_ce", "gamma": 1}, ["valid: (none)"]),
    ({"type": "bce", "label_smoothing": "lots"}, ["model.loss.label_smoothing", "finite number", "'lots'"]),
    ({"type": "focal", "gamma": True}, ["model.loss.gamma", "finite number"]),
    ({"type": "focal", "gamma": [2]}, ["model.loss.gamma", "finite number"]),
    ({"type": "focal", "gamma": float("nan")}, ["model.loss.gamma", "finite number"]),
    ({"type": "focal", "gamma": -1}, ["model.loss.gamma must be >= 0"]),
    ({"type": "focal", "alpha": 1.5}, ["model.loss.alpha must be in [0, 1]"]),
    ({"type": "ce", "label_smoothing": 1.0}, ["model.loss.label_smoothing must be in [0, 1)"]),
    (3, ["expected a loss type name or {type: ..., options}"]),
])
def test_bad_specs_are_one_line_errors(spec, fragments):
    for check in (build_loss, validate_loss, loss_type):
        with pytest.raises(XtuneError) as info:
            check(spec, "model.loss")
        message = str(info.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message, message


def test_errors_name_the_given_place():
    with pytest.raises(XtuneError, match=r"^exp\.yaml: model\.loss\.gamma must be"):
        validate_loss({"type": "focal", "gamma": "x"}, "exp.yaml: model.loss")


def test_validate_loss_accepts_good_specs():
    for spec in ["bce", *NON_DEFAULT.values()]:
        validate_loss(spec)


# ---- compiled .h5 reloads in a fresh Python process ----

LOAD_IN_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import xtune_keras.model  # registers the custom losses and layers
    import numpy as np
    import tensorflow as tf
    from bert4keras.backend import keras
    out = {}
    for name, path in json.loads(sys.argv[1]).items():
        model = keras.models.load_model(path)
        y, x = (np.array(v) for v in json.loads(sys.argv[2])[name])
        value = float(model.loss(tf.constant(y), tf.constant(x)))
        out[name] = {"class": type(model.loss).__name__, "config": model.loss.get_config(),
                     "value": value}
    print(json.dumps(out))
""")


def small_compiled_model(loss):
    inputs = keras.layers.Input(shape=(6,), name="features")
    logits = keras.layers.Dense(4, name="logits")(inputs)
    model = keras.models.Model(inputs, logits)
    model.compile(optimizer="sgd", loss=loss)
    return model


def test_compiled_models_reload_with_their_loss_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(8, 6)).astype(np.float32)
    paths, originals, samples = {}, {}, {}
    for name, spec in NON_DEFAULT.items():
        y = ONE_HOT if name == "ce" else TARGETS
        model = small_compiled_model(build_loss(spec))
        history = model.fit(features, np.resize(y, (8, 4)).astype(np.float32), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        paths[name] = str(tmp_path / ("%s.h5" % name))
        model.save(paths[name])  # .h5: the compile arguments travel in its training_config
        originals[name] = model.loss
        samples[name] = (y.tolist(), LOGITS.tolist())
    done = subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, json.dumps(paths),
                           json.dumps(samples)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    for name, loss in originals.items():
        assert loaded[name]["class"] == type(loss).__name__
        assert loaded[name]["config"] == loss.get_config()
        y, x = samples[name]
        expected = float(loss(tf.constant(np.array(y)), tf.constant(np.array(x))))
        assert loaded[name]["value"] == pytest.approx(expected, rel=1e-6)
