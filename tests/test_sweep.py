"""Ablation: variants x seeds, each run in its own process, table from disk, resume."""
import os
import time

import pytest
import yaml

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.errors import XtuneError
from xtune_keras.experiments.report import collect_results, confidence_interval, mean_and_variance, welch_t_test
from xtune_keras.experiments.sweep import load_ablation, run_sweep


def write_ablation(tmp_path, tiny_ckpt, variants, seeds=(0, 1)):
    data = write_multilabel_csvs(str(tmp_path))
    write_experiment(str(tmp_path / "base.yaml"), data, tiny_ckpt["dir"], str(tmp_path),
                     train={"epochs": 3}, output={"runs_dir": str(tmp_path / "runs"), "h5": None})
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "epochs": 1, "seeds": list(seeds),
                                    "variants": variants}), encoding="utf-8")
    return str(path)


VARIANTS = [
    {"name": "row0_baseline"},
    {"name": "row1_lr", "overrides": {"train.lr": 5.0e-3}},
    {"name": "row2_avg_pooling", "overrides": {"model.heads": [{"type": "mlp", "units": [7]}, {"type": "avg"}]}},
]


@pytest.fixture(scope="module")
def sweep(tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    previous = os.getcwd()
    os.chdir(tmp)  # the default .h5 path (checkpoints/<name>.h5) is relative to the working dir
    try:
        path = write_ablation(tmp, tiny_ckpt, VARIANTS)
        rows, tables = run_sweep(path, echo=False)
        yield {"tmp": tmp, "path": path, "rows": rows, "tables": tables}
    finally:
        os.chdir(previous)


def test_table_has_one_row_per_variant_with_mean_and_variance(sweep):
    rows = sweep["rows"]
    assert [r["variant"] for r in rows] == ["row0_baseline", "row1_lr", "row2_avg_pooling"]
    for row in rows:
        assert row["runs"] == 2 and row["seeds"] == "0 1"
        assert 0.0 <= row["val_acc_mean"] <= 1.0 and row["val_acc_var"] >= 0.0
    assert rows[0]["t"] is None
    results = [r for r in collect_results(str(sweep["tmp"] / "runs")) if r["name"] == "row1_lr"]
    mean, variance = mean_and_variance([r["best"]["val_acc"] for r in results])
    assert rows[1]["val_acc_mean"] == pytest.approx(mean) and rows[1]["val_acc_var"] == pytest.approx(variance)
    with open(sweep["tables"]["md"], encoding="utf-8") as f:
        text = f.read()
    assert "| row2_avg_pooling | 2 |" in text


def test_every_run_used_one_epoch_and_its_own_seed(sweep):
    results = collect_results(str(sweep["tmp"] / "runs"))
    assert len(results) == 6
    assert sorted((r["name"], r["seed"]) for r in results) == sorted(
        (v["name"], s) for v in VARIANTS for s in (0, 1))
    assert all(r["epochs_run"] == 1 for r in results)


def test_rerun_skips_finished_runs_and_resumes_missing_ones(sweep):
    start = time.time()
    rows, _ = run_sweep(sweep["path"], echo=False)
    assert time.time() - start < 20  # nothing retrained: no TensorFlow process was started
    assert rows == sweep["rows"]
    victim = [r for r in collect_results(str(sweep["tmp"] / "runs")) if r["name"] == "row1_lr" and r["seed"] == 1][0]
    os.remove(os.path.join(victim["run_dir"], "result.json"))  # as if killed before finishing
    rows, _ = run_sweep(sweep["path"], echo=False)
    assert rows == sweep["rows"]  # same seed, same metrics: the table is unchanged


def test_welch_p_matches_printed_critical_values():
    # two samples whose Welch t lands on a two-sided 5% critical value from any Student's t table:
    # n=2 each with variance 2 gives a standard error of sqrt(2) and df=2; t_crit(0.975, 2) = 4.303
    shift = 4.303 * 2 ** 0.5
    t, df, p = welch_t_test([shift + 1, shift - 1], [1.0, -1.0])
    assert df == pytest.approx(2.0) and t == pytest.approx(4.303, abs=1e-6) and p == pytest.approx(0.05, abs=2e-4)


def test_welch_statistic_and_degrees_of_freedom():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    t, df, p = welch_t_test(a, b)
    va, vb = 5.0 / 3.0 / 4, 10.0 / 5  # sample variances over sizes: 1.6667/4 and 10/5
    assert t == pytest.approx((2.5 - 6.0) / (va + vb) ** 0.5)
    assert df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 4))
    assert 0.05 < p < 0.10  # |t| = 2.25 lies between the 10% (2.015) and 5% (2.571) critical values at df 5
    assert welch_t_test([1.0], b) is None


def test_welch_declines_samples_without_spread():
    """Two rows that score the same in every seed (models predicting one class) give no test, not p = 0."""
    assert welch_t_test([0.4625, 0.4625], [0.425, 0.425]) is None
    assert welch_t_test([0.425, 0.425], [0.425, 0.425]) is None
    assert welch_t_test([0.425, 0.425], [0.4, 0.45])[2] > 0  # one row with spread: a test


def test_confidence_interval_of_the_mean_uses_student_t():
    low, high = confidence_interval([1.0, 2.0, 3.0, 4.0])  # mean 2.5, sem 0.6455, t(0.975, 3) = 3.182
    assert low == pytest.approx(2.5 - 3.182 * 0.6455, abs=1e-3)
    assert high == pytest.approx(2.5 + 3.182 * 0.6455, abs=1e-3)
    assert confidence_interval([0.9]) is None and confidence_interval([0.9, 0.9]) == (0.9, 0.9)


@pytest.mark.parametrize("variants, message", [
    ([{"name": "a"}, {"name": "a"}], "variant names must be unique"),
    ([{"name": "a", "overides": {}}], "unknown key 'overides'; valid keys: name, part, overrides"),
    ([{"name": "a", "overrides": {"train.lrr": 1}}], "unknown key 'train.lrr'"),
    # A value out of its declared range in the LAST row stops the sweep before row 0 runs.
    (VARIANTS + [{"name": "row3_bad", "overrides": {"train.layer_decay": 1.5}}],
     r"ablation.yaml: variants\[3\] 'row3_bad': train.layer_decay must be a number in \(0, 1\] \(got 1.5\)"),
    (VARIANTS + [{"name": "row3_bad", "overrides": {"data.head_ratio": -0.1}}],
     r"variants\[3\] 'row3_bad': data.head_ratio must be a number in \[0, 1\]"),
])
def test_bad_ablation_fails_before_any_run(tiny_ckpt, tmp_path, variants, message):
    path = write_ablation(tmp_path, tiny_ckpt, variants)
    with pytest.raises(XtuneError, match=message):
        run_sweep(path, echo=False)
    assert not os.path.exists(tmp_path / "runs")


def test_seeds_option_overrides_the_file(tiny_ckpt, tmp_path):
    path = write_ablation(tmp_path, tiny_ckpt, VARIANTS, seeds=(7,))
    assert load_ablation(path)["seeds"] == [7]
    assert load_ablation(path, seeds=5)["seeds"] == [0, 1, 2, 3, 4]


def test_report_reads_any_runs_folder(sweep):
    from xtune_keras.experiments.report import report_runs

    rows, tables = report_runs(str(sweep["tmp"] / "runs"), baseline="row0_baseline")
    assert {r["variant"] for r in rows} == {"row0_baseline", "row1_lr", "row2_avg_pooling"}
    assert rows[0]["variant"] == "row0_baseline" and os.path.isfile(tables["csv"])
    with pytest.raises(XtuneError, match="no finished run named 'nope'"):
        report_runs(str(sweep["tmp"] / "runs"), baseline="nope")


def test_sweep_killed_with_sigkill_resumes_to_the_same_table(sweep, tiny_ckpt, tmp_path):
    """Kill `xtune ablate` (and its training child) mid-sweep, run it again: same table as the
    uninterrupted sweep, because every run is deterministic and finished runs are kept."""
    import signal
    import subprocess
    import sys

    path = write_ablation(tmp_path, tiny_ckpt, VARIANTS)
    command = [sys.executable, "-m", "xtune_keras.cli", "ablate", path]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while len(collect_results(str(tmp_path / "runs"))) < 2 and time.time() < deadline:
        assert process.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: the sweep and the run in progress
    process.wait()
    assert 2 <= len(collect_results(str(tmp_path / "runs"))) < 6
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        rows, _ = run_sweep(path, echo=False)
    finally:
        os.chdir(previous)
    assert rows == sweep["rows"]


def test_sweep_writes_the_bar_chart_the_epoch_curves_and_the_t_tests(sweep):
    """The issue's acceptance: a 3-variant x 2-seed ablation gives the table, the plots, the t-test."""
    from matplotlib.image import imread

    tables = sweep["tables"]
    assert set(tables) >= {"md", "csv", "chart", "curves"}
    for key in ("chart", "curves"):
        assert os.path.dirname(tables[key]) == os.path.dirname(tables["md"])
        with open(tables[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        image = imread(tables[key])
        assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 100
    rows = sweep["rows"]
    assert rows[0]["t"] is None and rows[0]["p"] is None  # the baseline is not tested against itself
    tested = [row for row in rows[1:] if row["t"] is not None]
    assert tested and all(0.0 <= row["p"] <= 1.0 for row in tested)
    for row in rows[1:]:  # the tiny model scores some rows the same in every seed: no test there
        assert row in tested or row["val_acc_var"] == rows[0]["val_acc_var"] == 0
    with open(tables["csv"], encoding="utf-8") as f:
        assert f.readline().strip().endswith(",t,p")
