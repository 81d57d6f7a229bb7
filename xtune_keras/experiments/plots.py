"""PNG figures of an ablation: a bar chart of the table and per-epoch curves of every variant.

matplotlib is imported inside the functions, so ``import xtune_keras`` does not pay for it. The
figures are drawn on a bare ``Figure`` (which renders PNG with Agg), not through pyplot: no
global backend is switched and no window can open on a machine without a display.
"""
import math
import os

from xtune_keras.rundir import RunDir

BASELINE_COLOUR = "#d62728"  # red: row 0, the row every t-test compares with
VARIANT_COLOUR = "#1f77b4"  # blue: every other row


def bar_chart(rows, path, metric="val_acc"):
    """One horizontal bar per table row (``summarize``): the mean of ``metric`` over the row's
    runs, with an error bar of one sample standard deviation; the first row is the baseline."""
    from matplotlib.figure import Figure

    rows = [row for row in rows if row.get(metric + "_mean") is not None]
    means = [row[metric + "_mean"] for row in rows]
    sds = [math.sqrt(row.get(metric + "_var") or 0.0) for row in rows]
    # horizontal bars keep long variant names readable; the height grows with the row count
    figure = Figure(figsize=(9, 1.4 + 0.42 * max(len(rows), 1)))
    axes = figure.add_subplot()
    positions = range(len(rows))
    colours = [BASELINE_COLOUR if i == 0 else VARIANT_COLOUR for i in positions]
    axes.barh(positions, means, xerr=sds, color=colours, alpha=0.85, capsize=4,
              error_kw={"elinewidth": 1.2})
    axes.set_yticks(list(positions), [row["variant"] for row in rows])
    axes.invert_yaxis()  # row 0 on top, in the order of the table
    for i, row in enumerate(rows):
        axes.annotate(_bar_label(row, metric), (means[i] + sds[i], i), xytext=(6, 0),
                      textcoords="offset points", va="center", fontsize=8)
    axes.set_xlim(0, max([m + s for m, s in zip(means, sds)] or [1.0]) * 1.3)  # room for the labels
    axes.set_xlabel("%s (mean over seeds)" % metric)
    axes.set_ylabel("variant")
    axes.set_title("%s per variant: %s per bar, error bars = 1 s.d.; red = baseline"
                   % (metric, _runs_per_bar(rows)), fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def _bar_label(row, metric):
    """``mean ± sd (n=2)``, and the t-test's p for every row but the baseline."""
    label = "%.4f ± %.4f (n=%d)" % (row[metric + "_mean"], math.sqrt(row.get(metric + "_var") or 0.0),
                                    row["runs"])
    return label if row.get("p") is None else label + ", p=%.3g" % row["p"]


def _runs_per_bar(rows):
    counts = sorted({row["runs"] for row in rows})
    if not counts:
        return "no runs"
    return "n = %d runs" % counts[0] if len(counts) == 1 else "n = %d-%d runs" % (counts[0], counts[-1])


def epoch_curves(groups, path, metrics=("val_acc", "val_loss")):
    """One subplot per metric: per variant, the mean over its seeds at each epoch (a line) and
    the min..max over seeds (a band). ``groups`` is ``{variant: [result, ...]}``; each run's
    ``metrics.jsonl`` is read from its ``run_dir``. Metrics no file has are left out."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    histories = {name: [read_epochs(r.get("run_dir", "")) for r in runs] for name, runs in groups.items()}
    present = present_metrics(histories, metrics)
    figure = Figure(figsize=(6 * max(len(present), 1) + 2.5, 4.5), layout="constrained")
    if not present:  # e.g. run folders moved since: the table is still written, with a note here
        figure.text(0.5, 0.5, "no per-epoch metrics (metrics.jsonl) found", ha="center", va="center")
        return _save(figure, path, tight=False)  # tight would crop the figure to the note
    colours = _colours(len(histories))
    last = max(row["epoch"] for runs in histories.values() for rows in runs for row in rows)
    for axes, metric in zip(figure.subplots(1, len(present), squeeze=False)[0], present):
        for colour, (name, runs) in zip(colours, histories.items()):
            epochs, mean, low, high = epoch_statistics(runs, metric)
            if epochs:
                axes.plot(epochs, mean, marker="o", markersize=3, color=colour, label=name)
                axes.fill_between(epochs, low, high, color=colour, alpha=0.15, linewidth=0)
                if len(epochs) == 1:  # a band of one epoch has no width: show min..max as a bar
                    axes.vlines(epochs, low, high, color=colour, alpha=0.5)
        axes.set_xlim(0.5, last + 0.5)  # whole epochs, also for a 1-epoch sweep
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.set_title("%s: mean over seeds, band = min..max" % metric, fontsize=10)
        axes.grid(alpha=0.3)
    # one legend for all subplots, outside them, so 16+ variants do not hide the curves
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=8)
    return _save(figure, path)


def read_epochs(run_dir):
    """The rows of a run's ``metrics.jsonl`` (``[]`` if none; see ``RunDir.epochs``)."""
    return RunDir(run_dir).epochs()


def present_metrics(histories, metrics):
    """The ``metrics`` that at least one epoch row of ``{variant: [rows of a run, ...]}`` has."""
    return [m for m in metrics
            if any(row.get(m) is not None for runs in histories.values() for rows in runs for row in rows)]


def epoch_statistics(runs, metric):
    """``(epochs, mean, min, max)`` of ``metric`` over runs (lists of epoch rows). A run that
    stopped early (EarlyStopping) has fewer epochs: each epoch averages the runs that reached it.
    Values logged as null (not finite) are left out."""
    values = {}
    for rows in runs:
        for row in rows:
            if row.get(metric) is not None:
                values.setdefault(row["epoch"], []).append(row[metric])
    epochs = sorted(values)
    return (epochs, [sum(values[e]) / len(values[e]) for e in epochs],
            [min(values[e]) for e in epochs], [max(values[e]) for e in epochs])


def _colours(n):
    """The baseline keeps the bar chart's red; the rest come from tab20 without its reds (6, 7),
    dark shades first, so that up to 9 variants get clearly distinct hues."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    palette = [tab20[i] for i in list(range(0, 20, 2)) + list(range(1, 20, 2)) if i not in (6, 7)]
    return [BASELINE_COLOUR] + [palette[i % len(palette)] for i in range(max(n - 1, 0))]


def _save(figure, path, tight=True):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    return path
