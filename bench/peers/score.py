"""One scorer for every side's test predictions (pure Python).

    python bench/peers/score.py TEST.csv PREDICTIONS.csv [PREDICTIONS.csv ...]

TEST.csv has columns text,label; a predictions file has row,pred (row 1 = the first data row).
accuracy: share of rows whose predicted label is the true one. macro-F1: the mean of the
per-label F1 over the labels that occur in the truth or in the predictions of the test split
(the same set as xtune_keras.train.metrics.macro_f1 and scikit-learn's ``f1_score(average="macro")``).
"""
import csv
import json
import sys


def read_truth(test_csv):
    with open(test_csv, encoding="utf-8-sig", newline="") as f:
        return [str(row["label"]).strip() for row in csv.DictReader(f)]


def read_predictions(pred_csv):
    with open(pred_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    order = [int(r["row"]) for r in rows]
    if order != list(range(1, len(rows) + 1)):
        raise ValueError("%s: rows are not 1..%d in order" % (pred_csv, len(rows)))
    return [r["pred"].strip() for r in rows]


def score(truth, pred):
    if len(truth) != len(pred):
        raise ValueError("%d true labels but %d predictions" % (len(truth), len(pred)))
    labels = sorted(set(truth) | set(pred))
    f1s = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(truth, pred))
        fp = sum(t != label and p == label for t, p in zip(truth, pred))
        fn = sum(t == label and p != label for t, p in zip(truth, pred))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"examples": len(truth),
            "accuracy": sum(t == p for t, p in zip(truth, pred)) / len(truth),
            "macro_f1": sum(f1s) / len(f1s),
            "labels_scored": len(labels)}


def score_files(test_csv, pred_csv):
    return score(read_truth(test_csv), read_predictions(pred_csv))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    for path in sys.argv[2:]:
        print(path, json.dumps(score_files(sys.argv[1], path)))
