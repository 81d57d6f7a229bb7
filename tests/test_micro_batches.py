"""train.micro_batches: a batch cut by length into parts gives the whole batch's step."""
import numpy as np
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import tensorflow as tf
from bert4keras.backend import keras

from tests.test_adversarial import dense, make_classifier, make_trainer, marker_task
from xtune_keras.train.adversarial import AdversarialTrainer, build_trainer, saveable_model
from xtune_keras.data.batches import PaddedBatches
from xtune_keras.model.losses import build_loss
from xtune_keras.train.optimizers import XtuneAdam


def varied_texts(n, seed=0):
    """The marker task's texts cut to lengths 4..12, so that micro-batches pad differently."""
    (ids, _), labels = marker_task(n, seed=seed)
    cut = np.random.default_rng(seed).integers(3, 12, n)
    rows = [row[:k].tolist() + [3] for row, k in zip(ids, cut)]
    return rows, [[0] * len(r) for r in rows], labels


def one_batch(micro_batches, n=10):
    batches = PaddedBatches(*varied_texts(n), batch_size=n, micro_batches=micro_batches)
    return tf.nest.map_structure(tf.constant, batches[0])


def flat(grads):
    return np.concatenate([dense(g).ravel() for g in grads])


@pytest.mark.parametrize("options", [{}, {"method": "fgm"}, {"method": "pgd", "steps": 2},
                                     {"rdrop_alpha": 1.0}], ids=["plain", "fgm", "pgd", "rdrop"])
def test_split_batch_gives_the_whole_batch_gradients_and_loss(tiny_ckpt, options):
    classifier = make_classifier(tiny_ckpt)
    trainer = make_trainer(classifier, method=options.get("method"), steps=options.get("steps", 3),
                           rdrop_alpha=options.get("rdrop_alpha", 0.0))
    whole, _, _, whole_logs = trainer.compute_gradients(one_batch(1))
    split, _, logits, split_logs = trainer.compute_gradients(one_batch(3))
    assert len(logits) == 3
    np.testing.assert_allclose(flat(split), flat(whole), rtol=1e-4, atol=1e-6)
    for key in whole_logs:
        np.testing.assert_allclose(float(split_logs[key]), float(whole_logs[key]), rtol=1e-5, atol=1e-7)


def train_weights(tiny_ckpt, micro_batches, epochs=2):
    """Weights after fitting 10 texts in batches of 4 (the last batch of 2 has an empty part
    when split in 3), through build_trainer as the fine-tuning recipe does."""
    classifier = make_classifier(tiny_ckpt)
    model = build_trainer(classifier, micro_batches=micro_batches)
    model.compile(optimizer=XtuneAdam(learning_rate=1e-3), loss=build_loss("bce"),
                  metrics=[keras.metrics.BinaryAccuracy(name="acc")])
    batches = PaddedBatches(*varied_texts(10), batch_size=4, shuffle=True, seed=1, micro_batches=micro_batches)
    history = model.fit(batches, epochs=epochs, verbose=0)
    return saveable_model(model).get_weights(), history.history


def test_fit_on_split_batches_follows_the_unsplit_run(tiny_ckpt):
    whole_weights, whole_history = train_weights(tiny_ckpt, 1)
    split_weights, split_history = train_weights(tiny_ckpt, 3)
    for key in ("loss", "acc"):
        np.testing.assert_allclose(split_history[key], whole_history[key], rtol=1e-4)
    for split, whole in zip(split_weights, whole_weights):
        np.testing.assert_allclose(split, whole, atol=2e-5)


def test_build_trainer_wraps_the_classifier_for_micro_batches(tiny_ckpt):
    classifier = make_classifier(tiny_ckpt)
    assert build_trainer(classifier, micro_batches=1) is classifier
    trainer = build_trainer(classifier, micro_batches=2)
    assert isinstance(trainer, AdversarialTrainer) and trainer.method is None
    assert saveable_model(trainer) is classifier
