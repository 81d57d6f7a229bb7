"""Validation metrics, computed in NumPy from probabilities over the whole split.

``acc`` is the accuracy the write-up reports (Keras ``categorical_accuracy``): the top-scoring
label equals the first true label. With 215 labels it gave 0.10-0.30, which rules out Keras's
``binary_accuracy`` (near 0.99 when almost every label is negative).
"""
import numpy as np


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warning for large |x|


def softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


ACTIVATIONS = {"sigmoid": sigmoid, "softmax": softmax}


def decide(probs, multi_label, threshold=0.5):
    """0/1 decisions: multi-label keeps every label above threshold (a scalar, or one per label
    as from ``tune_thresholds``), single label the argmax."""
    if multi_label:
        return (probs > np.asarray(threshold)).astype(np.int8)
    decided = np.zeros_like(probs, dtype=np.int8)
    decided[np.arange(len(probs)), probs.argmax(-1)] = 1
    return decided


def seed_accuracy(y_true, probs):
    return float(np.mean(probs.argmax(-1) == y_true.argmax(-1)))


def subset_accuracy(y_true, y_pred):
    """Share of examples whose whole label set is predicted exactly."""
    return float(np.mean(np.all(y_true.astype(bool) == y_pred.astype(bool), axis=-1)))


def _counts(y_true, y_pred):
    t, p = y_true.astype(bool), y_pred.astype(bool)
    return (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)


def micro_f1(y_true, y_pred):
    tp, fp, fn = (c.sum() for c in _counts(y_true, y_pred))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def macro_f1(y_true, y_pred):
    """Mean F1 over labels that occur in the truth or the predictions of this split."""
    tp, fp, fn = _counts(y_true, y_pred)
    seen = (tp + fp + fn) > 0
    if not seen.any():
        return 0.0
    return float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])))


DEFAULT_GRID = np.linspace(0.05, 0.95, 19)


def per_label_f1(y_true, y_pred):
    """F1 of each label; 0 where a label is neither true nor predicted."""
    tp, fp, fn = _counts(y_true, y_pred)
    denominator = 2 * tp + fp + fn
    return np.divide(2.0 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


def tune_thresholds(y_true, probs, grid=None):
    """Per label, the grid threshold with the best F1 on these (validation) examples.

    Labels without a positive example keep 0.5: any threshold gives them F1 0, so there is
    nothing to tune. Ties go to the threshold nearest 0.5, the untuned default, so a label that
    is separated perfectly is not pushed to the edge of the grid.
    """
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    # Candidates ordered by distance from 0.5: argmax returns the first of equal F1s.
    candidates = grid[np.argsort(np.abs(grid - 0.5), kind="stable")]
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    f1 = np.stack([per_label_f1(y_true, probs > t) for t in candidates])  # [candidates, labels]
    thresholds = candidates[f1.argmax(axis=0)]
    has_positive = y_true.astype(bool).any(axis=0)
    return np.where(has_positive, thresholds, 0.5)


def classification_metrics(y_true, probs, multi_label, threshold=0.5):
    """The per-epoch metric set written to metrics.jsonl (without the loss)."""
    y_pred = decide(probs, multi_label, threshold)
    return {
        "acc": seed_accuracy(y_true, probs),
        "subset_acc": subset_accuracy(y_true, y_pred),
        "micro_f1": micro_f1(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
    }
