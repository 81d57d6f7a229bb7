"""Adversarial training (FGM, PGD) and R-Drop as a train_step, on the tiny checkpoint."""
import h5py
import numpy as np
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.train.adversarial import (AdversarialTrainer, build_trainer, gradient_rows, project_to_ball,
                                           saveable_model, symmetric_kl)
from xtune_keras.errors import XtuneError
from xtune_keras.model.losses import build_loss
from xtune_keras.model.classifier import build_classifier, freeze_layers
from xtune_keras.train.optimizers import XtuneAdam

NUM_LABELS = 3
MARKERS = np.array([20, 21, 22])  # label k is on iff token MARKERS[k] occurs in the text


def make_classifier(tiny_ckpt, dropout=0.0, num_labels=NUM_LABELS):
    keras.utils.set_random_seed(0)  # the heads' initial weights
    heads = [{"type": "cls"}, {"type": "mlp", "units": [16], "dropout": dropout}]
    return build_classifier(tiny_ckpt["config"], tiny_ckpt["checkpoint"], num_labels, heads,
                            dropout=dropout, attention_dropout=dropout)


def make_trainer(classifier, lr=1e-3, **options):
    trainer = AdversarialTrainer(classifier, **options)
    trainer.compile(optimizer=XtuneAdam(learning_rate=lr), loss=build_loss("bce"),
                    metrics=[keras.metrics.CategoricalAccuracy(name="acc")])
    return trainer


def marker_task(n=64, length=12, seed=0, num_labels=NUM_LABELS):
    """Random texts; each label is decided by the presence of its marker token."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(30, 600, size=(n, length)).astype(np.int32)
    labels = (rng.random((n, num_labels)) < 0.5).astype(np.float32)
    for row, on in enumerate(labels.astype(bool)):  # distinct positions: no marker overwrites another
        ids[row, rng.choice(np.arange(1, length - 1), on.sum(), replace=False)] = MARKERS[:num_labels][on]
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    return [ids, np.zeros_like(ids)], labels


def clean_loss(classifier, x, y):
    return float(build_loss("bce")(y, classifier(x, training=False)))


def dense(g):
    return tf.convert_to_tensor(g).numpy()


def test_build_trainer_is_the_classifier_when_nothing_is_on(tiny_ckpt):
    classifier = make_classifier(tiny_ckpt)
    assert build_trainer(classifier) is classifier
    assert build_trainer(classifier, method="none", rdrop_alpha=0.0) is classifier
    assert isinstance(build_trainer(classifier, method="fgm"), AdversarialTrainer)
    assert isinstance(build_trainer(classifier, rdrop_alpha=1.0), AdversarialTrainer)


@pytest.mark.parametrize("options, key", [
    ({"method": "fmg"}, "train.adversarial.method"),
    ({"method": "fgm", "epsilon": 0}, "train.adversarial.epsilon"),
    ({"method": "pgd", "alpha": -1.0}, "train.adversarial.alpha"),
    ({"method": "pgd", "steps": 0}, "train.adversarial.steps"),
    ({"rdrop_alpha": -0.5}, "train.rdrop_alpha"),
])
def test_bad_options_name_their_key(tiny_ckpt, options, key):
    with pytest.raises(XtuneError) as err:
        build_trainer(make_classifier(tiny_ckpt), **options)
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message
    if key == "train.adversarial.method":
        assert "fgm, pgd" in message


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_step_perturbs_then_restores_embeddings_bit_for_bit(tiny_ckpt, method):
    classifier = make_classifier(tiny_ckpt)
    trainer = make_trainer(classifier, lr=0.0, method=method, epsilon=0.1)
    before = [v.numpy().copy() for v in classifier.weights]
    x, y = marker_task(16)
    logs = trainer.train_on_batch(x, y, return_dict=True)  # through the tf.function train_step
    # No dropout: the loss can only differ because r was added, and r ascends the loss.
    assert logs["adv_loss"] > logs["loss"] + 1e-6
    assert set(logs) == {"loss", "adv_loss", "acc"}
    for old, var in zip(before, classifier.weights):  # lr 0: any change is a leftover of r
        np.testing.assert_array_equal(old, var.numpy(), err_msg=var.name)


def test_fgm_with_tiny_epsilon_adds_r_along_the_gradient_and_doubles_it(tiny_ckpt):
    classifier = make_classifier(tiny_ckpt)
    x, y = marker_task(16)
    data = ([tf.constant(t) for t in x], tf.constant(y))
    clean, variables, _, _ = make_trainer(classifier, method=None).compute_gradients(data)
    fgm = make_trainer(classifier, method="fgm", epsilon=1e-4)
    g_embedding = dense(fgm.loss_and_gradients([(data[0], data[1], None)], [])[-1])
    summed, _, _, logs = fgm.compute_gradients(data)
    # First order: L(E + eps * g / ||g||) - L(E) = eps * ||g||, so r is exactly Miyato's r_adv.
    np.testing.assert_allclose(float(logs["adv_loss"] - logs["loss"]), 1e-4 * np.linalg.norm(g_embedding),
                               rtol=0.05)
    # ... and the applied gradient is clean + adversarial, i.e. twice the clean one here.
    assert len(clean) == len(variables) == len(summed)
    flat = lambda grads: np.concatenate([dense(g).ravel() for g in grads])  # noqa: E731
    assert np.linalg.norm(flat(summed) - 2 * flat(clean)) < 1e-2 * np.linalg.norm(2 * flat(clean))


def test_gradient_rows_hold_all_of_the_embedding_gradient():
    """A lookup's gradient (a token twice) as distinct sorted rows: the dense gradient is zero
    elsewhere, so perturbing only those rows is the whole perturbation."""
    table = tf.Variable(tf.zeros((6, 2)))
    g = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), tf.constant([4, 1, 4]),
                         tf.constant([6, 2]))
    rows, values = gradient_rows(g, table)
    dense_g = tf.convert_to_tensor(g).numpy()
    assert rows.numpy().tolist() == [1, 4]
    np.testing.assert_array_equal(values.numpy(), dense_g[[1, 4]])
    assert not np.delete(dense_g, [1, 4], axis=0).any()
    rows, values = gradient_rows(tf.ones((6, 2)), table)  # already dense: every row
    assert rows.numpy().tolist() == list(range(6)) and values.shape == (6, 2)
    rows, values = gradient_rows(None, table)
    assert rows.shape == (0,) and values.shape == (0, 2)


def test_projection_keeps_pgd_perturbation_in_the_epsilon_ball():
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e3):
        r = tf.constant(scale * rng.standard_normal((50, 8)), tf.float32)
        projected = project_to_ball(r, 0.7)
        assert float(tf.norm(projected)) <= 0.7 * (1 + 1e-6)
        if float(tf.norm(r)) <= 0.7:
            np.testing.assert_array_equal(projected.numpy(), r.numpy())  # inside: untouched
        else:  # outside: same direction, on the sphere
            np.testing.assert_allclose(projected.numpy() * float(tf.norm(r)) / 0.7, r.numpy(), rtol=1e-5)
    zero = project_to_ball(tf.zeros((3, 4)), 0.7)
    assert not np.isnan(zero.numpy()).any() and not zero.numpy().any()


def test_frozen_embeddings_are_perturbed_but_never_trained(tiny_ckpt):
    classifier = make_classifier(tiny_ckpt)
    freeze_layers(classifier, freeze=True)
    trainer = make_trainer(classifier, lr=1e-2, method="fgm", epsilon=0.1)
    frozen = [v.numpy().copy() for v in classifier.non_trainable_weights]
    heads = [v.numpy().copy() for v in classifier.trainable_weights]
    x, y = marker_task(16)
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert logs["adv_loss"] > logs["loss"]
    for old, var in zip(frozen, classifier.non_trainable_weights):
        np.testing.assert_array_equal(old, var.numpy(), err_msg=var.name)
    assert any(not np.array_equal(old, var.numpy()) for old, var in zip(heads, classifier.trainable_weights))


@pytest.mark.parametrize("options", [
    {"method": "fgm", "epsilon": 0.1},  # the tiny embedding matrix has norm ~1.4
    {"method": "pgd", "epsilon": 0.1, "alpha": 0.04, "steps": 3},
    {"method": None, "rdrop_alpha": 1.0},
])
def test_training_through_the_trainer_converges(tiny_ckpt, options):
    dropout = 0.1 if options.get("rdrop_alpha") else 0.0
    classifier = make_classifier(tiny_ckpt, dropout=dropout, num_labels=2)
    trainer = make_trainer(classifier, lr=1e-2, **options)
    x, y = marker_task(64, num_labels=2)
    initial = clean_loss(classifier, x, y)
    history = trainer.fit(x, y, batch_size=16, epochs=12, verbose=0)  # 48 steps
    assert np.isfinite(history.history["loss"]).all()
    assert clean_loss(classifier, x, y) < 0.6 * initial


def test_rdrop_loss_adds_the_kl_of_two_dropout_passes(tiny_ckpt):
    x, y = marker_task(16)
    keras.utils.set_random_seed(0)
    trainer = make_trainer(make_classifier(tiny_ckpt, dropout=0.3), lr=0.0, rdrop_alpha=4.0)
    logs = trainer.train_on_batch(x, y, return_dict=True)
    assert logs["rdrop_kl"] > 0 and logs["loss"] > logs["task_loss"]
    np.testing.assert_allclose(logs["loss"], logs["task_loss"] + 4.0 * logs["rdrop_kl"], rtol=1e-5)
    no_dropout = make_trainer(make_classifier(tiny_ckpt, dropout=0.0), lr=0.0, rdrop_alpha=4.0)
    logs = no_dropout.train_on_batch(x, y, return_dict=True)
    assert abs(logs["rdrop_kl"]) < 1e-7  # two identical passes: nothing to regularise


def test_symmetric_kl_matches_its_definition():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 4, 5))
    p, q = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    kl = lambda s, t: s * np.log(s / t) + (1 - s) * np.log((1 - s) / (1 - t))  # noqa: E731
    expected = ((kl(p, q) + kl(q, p)) / 2).mean(-1)
    np.testing.assert_allclose(symmetric_kl(tf.constant(a), tf.constant(b), "sigmoid"), expected, rtol=1e-6)
    p, q = np.exp(a) / np.exp(a).sum(-1, keepdims=True), np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    expected = ((p * np.log(p / q)).sum(-1) + (q * np.log(q / p)).sum(-1)) / 2
    np.testing.assert_allclose(symmetric_kl(tf.constant(a), tf.constant(b), "softmax"), expected, rtol=1e-6)


def test_classifier_trained_through_the_trainer_saves_and_reloads(tiny_ckpt, tmp_path):
    trainer = make_trainer(make_classifier(tiny_ckpt), lr=1e-2, method="pgd", rdrop_alpha=0.5)
    x, y = marker_task(32)
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model = saveable_model(trainer)
    assert model is trainer.classifier and saveable_model(model) is model
    path = str(tmp_path / "adv.h5")
    model.save(path, include_optimizer=False, save_format="h5")
    with h5py.File(path, "r") as f:
        saved = f.attrs["model_config"]
        saved = saved.decode() if isinstance(saved, bytes) else saved
    assert "xtune_classifier" in saved and "adversarial" not in saved.lower()
    reloaded = keras.models.load_model(path, compile=False)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
