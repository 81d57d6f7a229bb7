"""Tables from what is on disk: every ``result.json`` under a runs folder, grouped per variant.

The write-up's TEST STANDARD: train 5 epochs, report the mean and the variance of the validation
accuracy over repeated runs. Here each run contributes its best epoch's ``val_acc`` (the epoch
its ``.h5`` holds), and micro/macro F1 beside it. Rows are compared with the baseline row by
Welch's t-test (unequal variances), two-sided, and each row's mean gets its 95% Student t interval
(both from scipy.stats).
"""
import csv
import math
import os
import warnings

import numpy as np

from xtune_keras.errors import XtuneError
from xtune_keras.rundir import RunDir

METRICS = ("val_acc", "val_micro_f1", "val_macro_f1")


def collect_results(runs_dir):
    """Every finished run (a ``result.json``) below ``runs_dir``."""
    return [run.result() for run in RunDir.finished_under(runs_dir)]


def group_by_variant(results, order=None):
    """``{name: [result, ...]}``, in ``order`` (e.g. the ablation rows) then by name."""
    groups = {}
    for result in results:
        groups.setdefault(result["name"], []).append(result)
    names = [n for n in (order or []) if n in groups] + sorted(n for n in groups if n not in (order or []))
    return {name: sorted(groups[name], key=lambda r: r["seed"]) for name in names}


def mean_and_variance(values):
    """Mean and sample variance (ddof=1; 0 for a single run)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.var(ddof=1)) if len(values) > 1 else 0.0


def confidence_interval(values, level=0.95):
    """``(low, high)`` of Student's t interval for the mean of ``values``; None below two runs."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean, variance = mean_and_variance(values)
    if variance == 0.0:
        return mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=math.sqrt(variance / len(values)))
    return float(low), float(high)


def welch_t_test(a, b):
    """``(t, degrees of freedom, two-sided p)`` of Welch's test for the means of ``a`` and ``b``;
    None when there is no test: a sample of one, or no spread in either sample."""
    from scipy import stats  # imported here: `xtune report` on a table with one seed needs no scipy

    if len(a) < 2 or len(b) < 2:
        return None
    if mean_and_variance(a)[1] + mean_and_variance(b)[1] == 0:
        # The test estimates the noise from the seeds; with none it is undefined (scipy: nan). Seen
        # when both rows predict one class for every text whatever the seed (bench/RESULTS.md §10):
        # p = 0 for two such rows would call a difference between broken models significant.
        return None
    with warnings.catch_warnings():
        # Seeds that agree to the last digits make scipy warn of precision loss; the variance is
        # then ~0 and the p-value extreme, which is the honest answer for such rows.
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(a, b, equal_var=False)
    return float(test.statistic), float(test.df), float(test.pvalue)


def summarize(groups, baseline=None, metric="val_acc"):
    """One row per variant: runs, mean and variance of each metric, Welch t-test against baseline."""
    if not groups:
        raise XtuneError("no finished runs (result.json) found")
    baseline = baseline or next(iter(groups))
    reference = [r["best"][metric] for r in groups.get(baseline, [])]
    rows = []
    for name, runs in groups.items():
        row = {"variant": name, "runs": len(runs), "seeds": " ".join(str(r["seed"]) for r in runs)}
        for key in METRICS:
            values = [r["best"][key] for r in runs if key in r.get("best", {})]
            if values:
                row[key + "_mean"], row[key + "_var"] = mean_and_variance(values)
                row[key + "_ci_low"], row[key + "_ci_high"] = confidence_interval(values) or (None, None)
        test = welch_t_test([r["best"][metric] for r in runs], reference) if name != baseline else None
        row["t"], row["p"] = (test[0], test[2]) if test else (None, None)
        row["is_baseline"] = name == baseline
        rows.append(row)
    return rows


COLUMNS = (["variant", "runs", "seeds"] + [k + s for k in METRICS for s in ("_mean", "_var", "_ci_low", "_ci_high")]
           + ["t", "p"])


def write_tables(rows, out_dir, groups=None):
    """``table.md`` and ``table.csv`` in ``out_dir``; with the runs (``groups``, as given to
    ``summarize``) also ``chart.png`` (bar chart) and ``curves.png`` (per-epoch curves).
    Returns their paths under ``md``, ``csv``, ``chart``, ``curves``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"md": os.path.join(out_dir, "table.md"), "csv": os.path.join(out_dir, "table.csv")}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in COLUMNS} for row in rows)
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(markdown_table(rows))
    if groups is not None:
        from xtune_keras.experiments.plots import bar_chart, epoch_curves  # matplotlib only when plotting

        paths["chart"] = bar_chart(rows, os.path.join(out_dir, "chart.png"))
        paths["curves"] = epoch_curves(groups, os.path.join(out_dir, "curves.png"))
    return paths


def markdown_table(rows):
    header = ["variant", "runs"] + METRIC_HEADER + ["95% CI (val acc)", "t vs row 0", "p"]
    return format_markdown(header, [[row["variant"], str(row["runs"])] + metric_cells(row)
                                    + [interval_cell(row.get("val_acc_ci_low"), row.get("val_acc_ci_high")),
                                       number_cell(row["t"], 3), p_cell(row)] for row in rows])


def p_cell(row):
    """A row's Welch p against the baseline: blank for the baseline itself, "no test" where the
    test declines (one seed, or the same score in every seed of both rows)."""
    if row.get("is_baseline"):
        return ""
    return "no test" if row.get("p") is None else number_cell(row["p"], 3)


METRIC_HEADER = ["val acc (mean)", "V(val acc)", "micro-F1", "macro-F1"]


def metric_cells(row):
    """The cells under METRIC_HEADER of one summarized row."""
    return [number_cell(row.get("val_acc_mean")), number_cell(row.get("val_acc_var"), 6),
            number_cell(row.get("val_micro_f1_mean")), number_cell(row.get("val_macro_f1_mean"))]


def format_markdown(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def interval_cell(low, high, digits=4):
    return "" if low is None else "[%.*f, %.*f]" % (digits, low, digits, high)


def number_cell(value, digits=4):
    return "" if value is None else "%.*f" % (digits, value)


def report_runs(runs_dir, baseline=None):
    """``xtune report RUNS_DIR``: every finished run below it, one row per experiment name."""
    if not os.path.isdir(runs_dir):
        raise XtuneError("%s: runs folder not found" % runs_dir)
    groups = group_by_variant(collect_results(runs_dir), [baseline] if baseline else None)
    if baseline and baseline not in groups:
        raise XtuneError("%s: no finished run named %r; names: %s" % (runs_dir, baseline, ", ".join(groups)))
    rows = summarize(groups, baseline)
    return rows, write_tables(rows, os.path.join(runs_dir, "_tables", "report"), groups)
