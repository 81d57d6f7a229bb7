"""A killed `xtune train` resumes at its last finished epoch and ends as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import saved_epoch, write_experiment, write_multilabel_csvs
from xtune_keras.rundir import RunDir
from xtune_keras.schema import load_config


# No dropout: TensorFlow's random stream is not part of the resume state (see train/resume.py).
# Warmup and linear decay make the result depend on the restored optimizer's step counter, the
# EMA on the restored averages (validation and the .h5 see them, training continues on the raw weights).
TRAIN = {"epochs": 4, "patience": 4, "batch_size": 4, "lr": 1e-3, "optimizer": "adamw",
         "warmup_steps": 0.1, "lr_decay": True, "ema_momentum": 0.9}


@pytest.fixture(scope="module")
def experiment(tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    data = write_multilabel_csvs(str(tmp), n=2000)  # 1200 training rows: epochs long enough to kill in
    return write_experiment(str(tmp / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp), train=TRAIN,
                            encoder={"dir": tiny_ckpt["dir"], "dropout": 0.0, "attention_dropout": 0.0},
                            model={"heads": [{"type": "cls"}, {"type": "mlp", "units": [16], "dropout": 0.0}]},
                            output={"tensorboard": False})


def train_command(yaml_path, where):
    outputs = ["output.runs_dir=%s" % os.path.join(where, "runs"), "output.h5=%s" % os.path.join(where, "m.h5")]
    return [sys.executable, "-m", "xtune_keras.cli", "train", yaml_path] + outputs, outputs


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_sigkill_in_epoch_3_of_4_then_the_same_command_continues_there(experiment, tmp_path):
    whole, _ = train_command(experiment, str(tmp_path / "whole"))
    subprocess.run(whole, check=True, stdout=subprocess.DEVNULL)
    command, outputs = train_command(experiment, str(tmp_path / "killed"))
    run_dir = RunDir.of(load_config(experiment, outputs))
    uninterrupted = RunDir.of(load_config(experiment, train_command(experiment, str(tmp_path / "whole"))[1]))

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while saved_epoch(run_dir) < 2 and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # epoch 2's state is on disk: epoch 3 is under way
    process.wait()
    assert saved_epoch(run_dir) == 2 and not run_dir.finished()

    again = subprocess.run(command, check=True, capture_output=True, text=True)
    assert "at epoch 3 of 4" in again.stdout
    assert run_dir.finished() and not os.path.exists(run_dir.resume_dir)
    result, expected = run_dir.result(), uninterrupted.result()
    assert [row["epoch"] for row in run_dir.epochs()] == [1, 2, 3, 4]
    expected_rows = without_seconds(uninterrupted.epochs())
    assert without_seconds(run_dir.epochs()) == [pytest.approx(row, abs=1e-6) for row in expected_rows]
    for key in ("best_epoch", "epochs_run"):
        assert result[key] == expected[key]
    assert result["best"] == pytest.approx(expected["best"], abs=1e-6)
    assert result["test"] == pytest.approx(expected["test"], abs=1e-6)


def test_force_starts_again_from_epoch_1(experiment, tmp_path):
    """--force ignores (and clears) the resume state of an interrupted attempt."""
    command, outputs = train_command(experiment, str(tmp_path))
    run_dir = RunDir.of(load_config(experiment, outputs + ["train.epochs=1"]))
    os.makedirs(run_dir.resume_dir)
    with open(os.path.join(run_dir.resume_dir, "state.json"), "w", encoding="utf-8") as f:
        json.dump({"epoch": 1, "checkpoint": "missing/ckpt", "stop_training": False, "python_random": None,
                   "callbacks": {}}, f)
    done = subprocess.run(command + ["train.epochs=1", "--force"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" not in done.stdout and [row["epoch"] for row in run_dir.epochs()] == [1]
