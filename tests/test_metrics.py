import numpy as np
import pytest

from xtune_keras.metrics import (
    classification_metrics, decide, macro_f1, micro_f1, seed_accuracy, sigmoid, softmax,
    subset_accuracy,
)

Y_TRUE = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]], np.float32)
PROBS = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.4], [0.6, 0.1, 0.7], [0.3, 0.6, 0.2]])


def test_decisions():
    assert decide(PROBS, True).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert decide(PROBS, False).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]


def test_seed_accuracy_is_keras_categorical_accuracy():
    # argmax(pred) == argmax(true): rows 0 and 1 agree; row 2 argmax 2 vs first true label 0.
    assert seed_accuracy(Y_TRUE, PROBS) == pytest.approx(0.5)


def test_subset_accuracy():
    assert subset_accuracy(Y_TRUE, decide(PROBS, True)) == pytest.approx(0.5)


def test_micro_and_macro_f1_by_hand():
    y_pred = decide(PROBS, True)
    # per label (tp, fp, fn): label0 (2,0,0), label1 (1,1,0), label2 (1,0,2)
    assert micro_f1(Y_TRUE, y_pred) == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert macro_f1(Y_TRUE, y_pred) == pytest.approx(np.mean([1.0, 2 / 3, 2 / 4]))


def test_macro_f1_ignores_labels_absent_from_split():
    y_true = np.array([[1, 0], [1, 0]])
    y_pred = np.array([[1, 0], [0, 0]])
    assert macro_f1(y_true, y_pred) == pytest.approx(2 / 3)


def test_activations_are_stable_for_large_logits():
    assert np.allclose(sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])
    assert np.allclose(softmax(np.array([[1000.0, 0.0]])), [[1.0, 0.0]])


def test_metric_set_keys():
    assert set(classification_metrics(Y_TRUE, PROBS, True)) == {"acc", "subset_acc", "micro_f1", "macro_f1"}
