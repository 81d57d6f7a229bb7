from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np
import pytest

from xtune_keras.train.metrics import (
    classification_metrics, decide, macro_f1, micro_f1, per_label_f1, seed_accuracy, sigmoid,
    softmax, subset_accuracy, tune_thresholds,
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


def test_decide_accepts_one_threshold_per_label():
    thresholds = np.array([0.95, 0.05, 0.5])
    assert decide(PROBS, True, thresholds).tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 1], [0, 1, 0]]
    assert decide(PROBS, True, [0.95, 0.05, 0.5]).tolist() == decide(PROBS, True, thresholds).tolist()
    # single label ignores thresholds: argmax
    assert decide(PROBS, False, thresholds).tolist() == decide(PROBS, False).tolist()


def test_classification_metrics_with_per_label_thresholds():
    thresholds = np.array([0.5, 0.7, 0.3])
    expected = subset_accuracy(Y_TRUE, decide(PROBS, True, thresholds))
    assert classification_metrics(Y_TRUE, PROBS, True, thresholds)["subset_acc"] == expected


def test_per_label_f1():
    # label0 (tp2 fp0 fn0) = 1; label1 (1,1,0) = 2/3; label2 (1,0,2) = 1/2
    assert per_label_f1(Y_TRUE, decide(PROBS, True)) == pytest.approx([1.0, 2 / 3, 0.5])
    assert per_label_f1(np.zeros((2, 1)), np.zeros((2, 1))).tolist() == [0.0]


def brute_force_thresholds(y_true, probs, grid):
    """Reference: per label, F1 at every grid point by hand; best F1, ties nearest 0.5."""
    best = []
    for j in range(y_true.shape[1]):
        if not y_true[:, j].any():
            best.append(0.5)
            continue
        scores = []
        for t in grid:
            pred = probs[:, j] > t
            tp = np.sum(pred & (y_true[:, j] == 1))
            fp = np.sum(pred & (y_true[:, j] == 0))
            fn = np.sum(~pred & (y_true[:, j] == 1))
            scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        top = max(scores)
        best.append(min((abs(t - 0.5), t) for t, f in zip(grid, scores) if f == top)[1])
    return np.array(best)


def test_tune_thresholds_matches_brute_force():
    rng = np.random.default_rng(0)
    y_true = (rng.random((200, 6)) < 0.3).astype(np.int8)
    # scores correlated with the truth, differently calibrated per label
    probs = np.clip(y_true * rng.uniform(0.2, 0.6, 6) + rng.random((200, 6)) * 0.5, 0, 1)
    grid = np.linspace(0.05, 0.95, 19)
    tuned = tune_thresholds(y_true, probs)
    assert tuned.shape == (6,)
    np.testing.assert_allclose(tuned, brute_force_thresholds(y_true, probs, grid))
    # the tuned thresholds are at least as good per label as the default 0.5
    assert np.all(per_label_f1(y_true, decide(probs, True, tuned))
                  >= per_label_f1(y_true, decide(probs, True, 0.5)) - 1e-12)


def test_tune_thresholds_by_hand():
    y_true = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    # label 0 (truth 1,1,0,0; scores .30 .20 .10 .25), F1 by threshold:
    #   0.05: tp2 fp2 -> 2/3;  0.10 and 0.15: tp2 fp1 -> 0.8;  0.20: tp1 fp1 fn1 -> 0.5;
    #   0.25: tp1 fn1 -> 2/3;  0.30 and up: 0.  Tie 0.10 / 0.15 goes to 0.15, nearer 0.5.
    probs = np.array([[0.30, 0.9], [0.20, 0.1], [0.10, 0.2], [0.25, 0.3]])
    tuned = tune_thresholds(y_true, probs)
    assert tuned[0] == pytest.approx(0.15)
    assert tuned[1] == 0.5  # no positive in the validation split: left at 0.5


def test_tune_thresholds_prefers_half_on_ties_and_accepts_a_grid():
    y_true = np.array([[1], [0]])
    probs = np.array([[0.9], [0.1]])  # separated at every threshold in (0.1, 0.9)
    assert tune_thresholds(y_true, probs)[0] == pytest.approx(0.5)
    assert tune_thresholds(y_true, probs, grid=[0.2, 0.95])[0] == pytest.approx(0.2)
    assert tune_thresholds(y_true.tolist(), probs.tolist(), grid=[0.3, 0.7]).shape == (1,)
