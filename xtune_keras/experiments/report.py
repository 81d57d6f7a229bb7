"""Tables from what is on disk: every ``result.json`` under a runs folder, grouped per variant.

The write-up's TEST STANDARD: train 5 epochs, report the mean and the variance of the validation
accuracy over repeated runs. Here each run contributes its best epoch's ``val_acc`` (the epoch
its ``.h5`` holds), and micro/macro F1 beside it. Rows are compared with the baseline row by
Welch's t-test (unequal variances), two-sided.
"""
import csv
import glob
import json
import math
import os

from xtune_keras.errors import XtuneError

METRICS = ("val_acc", "val_micro_f1", "val_macro_f1")


def collect_results(runs_dir):
    """Every finished run (a ``result.json``) below ``runs_dir``."""
    results = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", "*", "result.json"))):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        # where it lies now: the folder may have moved, or `xtune report` runs from elsewhere
        result["run_dir"] = os.path.dirname(path)
        results.append(result)
    return results


def group_by_variant(results, order=None):
    """``{name: [result, ...]}``, in ``order`` (e.g. the ablation rows) then by name."""
    groups = {}
    for result in results:
        groups.setdefault(result["name"], []).append(result)
    names = [n for n in (order or []) if n in groups] + sorted(n for n in groups if n not in (order or []))
    return {name: sorted(groups[name], key=lambda r: r["seed"]) for name in names}


def mean_and_variance(values):
    """Mean and sample variance (ddof=1; 0 for a single run)."""
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, variance


def welch_t_test(a, b):
    """``(t, degrees of freedom, two-sided p)`` for the means of samples ``a`` and ``b``."""
    if len(a) < 2 or len(b) < 2:
        return None
    (ma, va), (mb, vb) = mean_and_variance(a), mean_and_variance(b)
    sa, sb = va / len(a), vb / len(b)
    if sa + sb == 0:
        return (0.0, float(len(a) + len(b) - 2), 1.0) if ma == mb else (math.inf, math.inf, 0.0)
    t = (ma - mb) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1))
    return t, df, student_t_two_sided_p(t, df)


def student_t_two_sided_p(t, df):
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    return regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)


def regularized_incomplete_beta(x, a, b):
    """I_x(a, b) by its continued fraction (modified Lentz), as in Numerical Recipes sec. 6.4."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1.0 - regularized_incomplete_beta(1.0 - x, b, a)
    return math.exp(log_front) * _beta_fraction(x, a, b) / a


def _beta_fraction(x, a, b, tiny=1e-300, steps=300):
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    value = d
    for m in range(1, steps):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            value *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return value


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
        test = welch_t_test([r["best"][metric] for r in runs], reference) if name != baseline else None
        row["t"], row["p"] = (test[0], test[2]) if test else (None, None)
        rows.append(row)
    return rows


COLUMNS = ["variant", "runs", "seeds"] + [k + s for k in METRICS for s in ("_mean", "_var")] + ["t", "p"]


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
    header = ["variant", "runs"] + METRIC_HEADER + ["t vs row 0", "p"]
    return format_markdown(header, [[row["variant"], str(row["runs"])] + metric_cells(row)
                                    + [number_cell(row["t"], 3), number_cell(row["p"], 3)] for row in rows])


METRIC_HEADER = ["val acc (mean)", "V(val acc)", "micro-F1", "macro-F1"]


def metric_cells(row):
    """The cells under METRIC_HEADER of one summarized row."""
    return [number_cell(row.get("val_acc_mean")), number_cell(row.get("val_acc_var"), 6),
            number_cell(row.get("val_micro_f1_mean")), number_cell(row.get("val_macro_f1_mean"))]


def format_markdown(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


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
