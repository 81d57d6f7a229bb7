"""Figures of an ablation (bar chart, per-epoch curves) and the HParams summary of a run."""
import glob
import json
import os

import numpy as np
import pytest

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.experiments.plots import (
    BASELINE_COLOUR, VARIANT_COLOUR, bar_chart, epoch_curves, epoch_statistics, present_metrics, read_epochs,
)


def read_png(path):
    from matplotlib.image import imread

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 50
    return image


def has_colour(image, colour, alpha=0.85, tolerance=0.02):
    """Whether a bar of ``colour`` drawn with ``alpha`` over white is in the image."""
    from matplotlib.colors import to_rgb

    blended = np.array(to_rgb(colour)) * alpha + (1 - alpha)
    return bool((np.abs(image[..., :3] - blended).max(axis=-1) < tolerance).any())


def rows_of(n):
    rows = [{"variant": "row%d_%s" % (i, "a_long_variant_name" * (i % 2)), "runs": 3, "seeds": "0 1 2",
             "val_acc_mean": 0.8 + 0.01 * i, "val_acc_var": 0.0001 * i, "t": None if i == 0 else 1.5,
             "p": None if i == 0 else 0.2} for i in range(n)]
    return rows


def test_bar_chart_is_a_png_with_a_distinct_baseline(tmp_path):
    path = bar_chart(rows_of(3), str(tmp_path / "sub" / "chart.png"))
    assert path == str(tmp_path / "sub" / "chart.png")
    image = read_png(path)
    assert has_colour(image, BASELINE_COLOUR) and has_colour(image, VARIANT_COLOUR)


def test_bar_chart_grows_with_the_rows_and_skips_rows_without_the_metric(tmp_path):
    small = read_png(bar_chart(rows_of(3), str(tmp_path / "small.png")))
    rows = rows_of(17) + [{"variant": "no_f1", "runs": 1, "t": None, "p": None}]
    large = read_png(bar_chart(rows, str(tmp_path / "large.png")))
    assert large.shape[0] > 3 * small.shape[0] // 2  # 17 readable rows need a taller figure
    read_png(bar_chart(rows, str(tmp_path / "f1.png"), metric="val_macro_f1"))  # no row has it


def write_run(directory, epochs):
    """A fake run folder with one ``metrics.jsonl`` row per item of ``epochs`` (dicts)."""
    os.makedirs(directory)
    with open(os.path.join(directory, "metrics.jsonl"), "w", encoding="utf-8") as f:
        for i, values in enumerate(epochs, 1):
            f.write(json.dumps(dict(epoch=i, loss=1.0 / i, **values)) + "\n")
    return {"run_dir": directory}


@pytest.fixture
def groups(tmp_path):
    """Two variants; the baseline's seed 1 stopped early, one epoch logged val_acc as null."""
    base = str(tmp_path / "runs")
    return {
        "row0_baseline": [
            write_run(os.path.join(base, "b0"), [{"val_acc": 0.5, "val_loss": 0.9}, {"val_acc": 0.6, "val_loss": 0.8},
                                                  {"val_acc": 0.7, "val_loss": 0.7}]),
            write_run(os.path.join(base, "b1"), [{"val_acc": 0.7, "val_loss": 0.8}, {"val_acc": 0.8, "val_loss": 0.6}]),
        ],
        "row1_lr": [
            write_run(os.path.join(base, "l0"), [{"val_acc": 0.4, "val_loss": 1.0}, {"val_acc": None, "val_loss": 0.9},
                                                  {"val_acc": 0.6, "val_loss": 0.8}]),
            {"run_dir": os.path.join(base, "moved_away")},  # no metrics.jsonl: left out, no error
        ],
    }


def test_epoch_statistics_average_the_runs_that_reached_each_epoch(groups):
    runs = [read_epochs(r["run_dir"]) for r in groups["row0_baseline"]]
    epochs, mean, low, high = epoch_statistics(runs, "val_acc")
    assert epochs == [1, 2, 3]
    assert mean == pytest.approx([0.6, 0.7, 0.7])  # epoch 3: only the run that was not stopped
    assert low == pytest.approx([0.5, 0.6, 0.7]) and high == pytest.approx([0.7, 0.8, 0.7])
    runs = [read_epochs(r["run_dir"]) for r in groups["row1_lr"]]
    assert runs[1] == []
    assert epoch_statistics(runs, "val_acc")[:2] == ([1, 3], [0.4, 0.6])  # the null epoch is a gap


def test_epoch_curves_skip_metrics_that_no_run_logged(groups, tmp_path):
    histories = {name: [read_epochs(r["run_dir"]) for r in runs] for name, runs in groups.items()}
    assert present_metrics(histories, ("val_acc", "val_macro_f1", "val_loss")) == ["val_acc", "val_loss"]
    two = read_png(epoch_curves(groups, str(tmp_path / "two.png"), metrics=("val_acc", "val_macro_f1", "val_loss")))
    one = read_png(epoch_curves(groups, str(tmp_path / "one.png"), metrics=("val_acc", "val_macro_f1")))
    assert two.shape[1] > one.shape[1] * 1.4  # one subplot per metric found, side by side
    assert has_colour(two, BASELINE_COLOUR, alpha=1.0, tolerance=0.01)  # the baseline's line
    read_png(epoch_curves({"x": [{"run_dir": str(tmp_path / "nothing")}]}, str(tmp_path / "none.png")))


def hparams_of(event_file):
    """``{key: value}`` of the HParams session start summaries in one event file."""
    import tensorflow as tf
    from google.protobuf.json_format import MessageToDict
    from tensorboard.plugins.hparams import metadata

    found = {}
    for event in tf.compat.v1.train.summary_iterator(event_file):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                data = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                found.update(MessageToDict(data)["hparams"])
    return found


def scalar_tags(event_file):
    import tensorflow as tf

    return {value.tag for event in tf.compat.v1.train.summary_iterator(event_file)
            for value in event.summary.value}


def test_training_writes_an_hparams_session_next_to_its_metrics(tiny_ckpt, tmp_path):
    from xtune_keras.schema import load_config
    from xtune_keras.recipes.finetune import run_experiment

    data = write_multilabel_csvs(str(tmp_path))
    yaml_path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp_path),
                                 train={"epochs": 1, "lr": 2.5e-3},
                                 model={"heads": [{"type": "cls"}, {"type": "mlp", "units": [7]}]})
    result = run_experiment(load_config(yaml_path, ["seed=3"]), echo=False)
    board = os.path.join(result["run_dir"], "tensorboard")
    # the session is the tensorboard folder itself, the parent of train/ and validation/
    hparams = {}
    for path in glob.glob(os.path.join(board, "events.out.tfevents.*")):
        hparams.update(hparams_of(path))
    assert hparams["train.lr"] == pytest.approx(2.5e-3) and hparams["seed"] == 3
    assert hparams["name"] == "tiny_exp" and hparams["model.heads"] == "cls+mlp"
    assert hparams["model.loss"] == "bce" and hparams["train.batch_size"] == 8
    assert "encoder.dropout" not in hparams  # null in the config: left out
    # the dashboard's metrics are the scalars below the session: val_acc is validation/epoch_acc
    (validation,) = glob.glob(os.path.join(board, "validation", "events.out.tfevents.*"))
    assert {"epoch_acc", "epoch_loss", "epoch_micro_f1", "epoch_macro_f1"} <= scalar_tags(validation)
