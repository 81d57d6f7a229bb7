"""Test-split figures of two rows over their seeds, with Welch's t-test (the sweeps' tables compare
validation accuracy only): python bench/welch.py RUNS_DIR ROW0 ROW1 [METRIC ...]."""
import sys

from xtune_keras.experiments.report import collect_results, group_by_variant, mean_and_variance, welch_t_test

DEFAULT = ("best.val_acc", "best.val_macro_f1", "test.acc", "test.micro_f1", "test.macro_f1")


def value(result, dotted):
    section, key = dotted.split(".")
    return result[section][key]


def main(runs_dir, row0, row1, metrics):
    groups = group_by_variant(collect_results(runs_dir))
    print("| metric | %s mean (V) | %s mean (V) | difference | Welch t | p |" % (row0, row1))
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for metric in metrics:
        a, b = ([value(r, metric) for r in groups[row]] for row in (row0, row1))
        (ma, va), (mb, vb) = mean_and_variance(a), mean_and_variance(b)
        t, _, p = welch_t_test(b, a)
        print("| %s | %.4f (%.6f) | %.4f (%.6f) | %+.4f | %.2f | %.3f |" % (metric, ma, va, mb, vb, mb - ma, t, p))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] or DEFAULT)
