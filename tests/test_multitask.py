"""Multi-task fine-tuning on the tiny checkpoint: sampling, isolation of the task heads, learned
loss weights, standalone per-task .h5 files, one task equal to the plain experiment, bad input."""
import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.errors import XtuneError
from xtune_keras.recipes import run_recipe
from xtune_keras.rundir import RunDir
from xtune_keras.schema import load_config

TRAIN = {"batch_size": 8, "epochs": 2, "lr": 1e-3, "patience": 2}


def write_department_csvs(main_paths, directory):
    """A second labelling of the same texts (single-label: each row's first topic), as the write-up's
    appeals have a department besides their labels."""
    paths = {}
    for part, path in main_paths.items():
        with open(path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        paths[part] = os.path.join(directory, "dept_%s.csv" % part)
        with open(paths[part], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["ctx", "dept"])
            writer.writeheader()
            writer.writerows({"ctx": row["ctx"], "dept": row["labels"].split("|")[0]} for row in rows)
    return paths


def main_task(paths, **extra):
    return dict({"name": "appeals", "main": True,
                 "data": {"train": paths["train"], "valid": paths["valid"], "test": paths["test"],
                          "text1": ["addr"], "text2": ["ctx"], "label": "labels", "max_len": 24}}, **extra)


def dept_task(paths, **extra):
    return dict({"name": "dept", "weight": 0.5,
                 "data": {"train": paths["train"], "valid": paths["valid"], "test": paths["test"],
                          "text1": ["ctx"], "label": "dept", "multi_label": False, "max_len": 24},
                 "model": {"loss": "ce", "heads": [{"type": "cls"}]}}, **extra)


def write_multitask(tmp, ckpt_dir, tasks, name="mt", **sections):
    spec = {"name": name, "tasks": tasks, "encoder": {"dir": ckpt_dir}, "train": dict(TRAIN),
            "output": {"runs_dir": str(tmp / "runs"), "h5": str(tmp / "checkpoints" / (name + ".h5")),
                       "tensorboard": False}}
    for section, values in sections.items():
        spec.setdefault(section, {}).update(values)
    path = tmp / (name + ".yaml")
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multitask_data")
    main = write_multilabel_csvs(str(tmp))
    return {"main": main, "dept": write_department_csvs(main, str(tmp))}


@pytest.fixture(scope="module")
def trained(tiny_ckpt, data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multitask")
    path = write_multitask(tmp, tiny_ckpt["dir"], [main_task(data["main"]), dept_task(data["dept"])],
                           multitask={"loss_weighting": "uncertainty"})
    from xtune_keras.recipes.multitask import MultiTaskRecipe

    recipe = MultiTaskRecipe(load_config(path), echo=False)
    result = recipe.run()
    traces = [step.experimental_get_tracing_count() for step in recipe.model.task_steps]
    return {"recipe": recipe, "result": result, "yaml": path, "tmp": tmp, "traces": traces}


# --- sampling -----------------------------------------------------------------------------------

class FakeBatches:
    """A task's training batches: ``n`` batches of 2 example indices, reshuffled per pass."""

    def __init__(self, n):
        self.batches = [np.array([2 * i, 2 * i + 1]) for i in range(n)]
        self.passes = 0

    def __len__(self):
        return len(self.batches)

    def on_epoch_end(self):
        self.passes += 1

    def batch_of(self, picked):
        return {"Input-Token": picked}, picked


@pytest.mark.parametrize("sampling, options, expected", [
    ("proportional", {}, [10, 40, 5]),
    ("temperature", {"temperature": 2.0}, [10, 20, 7]),           # 10 * sqrt(size_i / size_main)
    ("temperature", {"temperature": 1.0}, [10, 40, 5]),           # T = 1 is proportional
    ("temperature", {"temperature": 1000.0}, [10, 10, 10]),       # a large T is uniform
    ("round_robin", {}, [10, 10, 10]),
    ("main_ratio", {"main_ratio": 1.0}, [10, 9, 1]),              # auxiliaries capped at 1 x main, by size
    ("main_ratio", {"main_ratio": 10.0}, [10, 40, 5]),            # cap above their sizes: all of them
])
def test_each_epoch_draws_the_tasks_as_the_sampling_rule_says(sampling, options, expected):
    from xtune_keras.data.task_batches import TaskBatches

    tasks = [FakeBatches(10), FakeBatches(40), FakeBatches(5)]
    batches = TaskBatches(tasks, 0, sampling, dict({"temperature": 2.0, "main_ratio": 1.0}, **options))
    for _ in range(3):
        drawn = np.bincount([int(batches[i][2]) for i in range(len(batches))], minlength=3)
        assert drawn.tolist() == expected and batches.task_counts() == expected
        batches.on_epoch_end()
    assert tasks[0].passes == 3  # the main task: one pass per epoch (the plans of epochs 2, 3, 4 began one)
    if sampling == "round_robin":
        assert [int(batches[i][2]) for i in range(6)] == [0, 1, 2, 0, 1, 2] and not batches.shuffle


def test_a_small_task_drawn_beyond_its_size_starts_new_passes():
    from xtune_keras.data.task_batches import TaskBatches

    tasks = [FakeBatches(10), FakeBatches(3)]
    batches = TaskBatches(tasks, 0, "round_robin", {})
    picked = [batches[i][1] for i in range(len(batches)) if int(batches[i][2]) == 1]
    assert len(picked) == 10 and tasks[1].passes == 3


# --- training -----------------------------------------------------------------------------------

def test_a_step_on_one_task_moves_the_encoder_and_leaves_the_other_heads(trained):
    recipe = trained["recipe"]
    appeals, dept = recipe.tasks
    before = {task.name: [w.copy() for w in task.classifier.get_layer("logits").get_weights()]
              for task in recipe.tasks}
    encoder = appeals.classifier.get_layer("Transformer-0-FeedForward").get_weights()[0].copy()
    step = recipe.model.make_train_function(force=True)
    x, y = dept.batches["train"][0]
    step(iter([(x, y, np.int32(1))]))
    after = {task.name: task.classifier.get_layer("logits").get_weights() for task in recipe.tasks}
    for old, new in zip(before["appeals"], after["appeals"]):
        np.testing.assert_array_equal(old, new)
    assert any(not np.array_equal(old, new) for old, new in zip(before["dept"], after["dept"]))
    assert not np.array_equal(encoder, appeals.classifier.get_layer("Transformer-0-FeedForward").get_weights()[0])
    # the two classifiers share the one encoder
    assert appeals.classifier.get_layer("Transformer-0-FeedForward") is dept.classifier.get_layer(
        "Transformer-0-FeedForward")


def test_each_task_step_is_traced_once_whatever_the_batch_lengths(trained):
    # Retracing a BERT step for each new length cost 1.66x the single-task steps (bench/RESULTS.md §8).
    # Two traces, both on the first call: the second once the optimizer's slots exist, as in the
    # single-task train function of Keras.
    assert trained["traces"] == [2, 2]


def test_uncertainty_weights_are_trained_logged_and_in_the_resume_checkpoint(trained):
    rows = RunDir(trained["result"]["run_dir"]).epochs()
    assert {"appeals_weight", "dept_weight", "appeals_val_acc", "dept_val_acc", "dept_loss", "val_acc"} <= set(rows[0])
    assert rows[0]["appeals_weight"] != 1.0 and rows[-1]["dept_weight"] != rows[0]["dept_weight"]
    tasks = trained["result"]["tasks"]
    assert tasks["dept"]["loss_weight"] == pytest.approx(rows[-1]["dept_weight"], rel=1e-5)
    import tensorflow as tf

    recipe = trained["recipe"]
    variable = recipe.model.trainers[1].log_variance
    path = tf.train.Checkpoint(model=recipe.model).write(str(trained["tmp"] / "ckpt" / "c"))
    names = [name for name, _ in tf.train.list_variables(path)]
    assert any("log_variance" in name for name in names), names
    assert variable.trainable and any(v is variable for v in recipe.model.trainers[1].step_variables())


def test_each_task_h5_is_a_standalone_classifier_predicting_as_its_head_did(trained, tmp_path):
    """Each task's .h5, in a fresh process (`xtune predict`), gives the probabilities its head gave
    in the multi-task model on the test split, and `xtune evaluate` the same metrics."""
    import pandas as pd

    from xtune_keras.train.metrics import ACTIVATIONS

    result, recipe = trained["result"], trained["recipe"]
    assert os.path.basename(result["h5"]) == "mt.h5"
    assert os.path.basename(result["tasks"]["dept"]["h5"]) == "mt.dept.h5"
    for task in recipe.tasks:
        out = str(tmp_path / (task.name + ".csv"))
        done = subprocess.run([sys.executable, "-m", "xtune_keras.cli", "predict", task.h5_path, task.data["test"],
                               "-o", out, "--quiet"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        got = pd.read_csv(out)[["prob_" + name for name in task.labels.names]].to_numpy()
        expected = ACTIVATIONS[task.activation](np.asarray(task.logits["test"], np.float64))
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=task.name)
        done = subprocess.run([sys.executable, "-m", "xtune_keras.cli", "evaluate", task.h5_path, task.data["test"],
                               "--quiet"], capture_output=True, text=True)
        scores = json.loads(done.stdout[done.stdout.index("{"):])
        assert scores["macro_f1"] == pytest.approx(result["tasks"][task.name]["test"]["macro_f1"], abs=1e-6)
    # an auxiliary task's file exports like any model; the SavedModel predicts what its head did
    aux = recipe.tasks[1]
    exported, out = str(tmp_path / "exported"), str(tmp_path / "exported.csv")
    for command in (["export", aux.h5_path, exported], ["predict", exported, aux.data["test"], "-o", out, "--quiet"]):
        done = subprocess.run([sys.executable, "-m", "xtune_keras.cli"] + command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    got = pd.read_csv(out)[["prob_" + name for name in aux.labels.names]].to_numpy()
    np.testing.assert_allclose(got, ACTIVATIONS[aux.activation](np.asarray(aux.logits["test"], np.float64)), atol=1e-4)


def test_one_task_file_trains_like_the_plain_experiment(tiny_ckpt, data, tmp_path):
    """Same numbers without dropout: with dropout the masks differ (TensorFlow derives a random
    op's seed from its place in the traced graph, and the multi-task step is another graph)."""
    no_dropout = {"dir": tiny_ckpt["dir"], "dropout": 0.0, "attention_dropout": 0.0}
    heads = {"heads": [{"type": "cls"}, {"type": "mlp", "units": [16], "dropout": 0.0}]}
    plain = write_experiment(str(tmp_path / "plain.yaml"), data["main"], tiny_ckpt["dir"], str(tmp_path / "p"),
                             name="plain", train=TRAIN, output={"tensorboard": False}, encoder=no_dropout,
                             model=heads)
    single = write_multitask(tmp_path, tiny_ckpt["dir"], [main_task(data["main"], main=False, model=heads)],
                             name="single", encoder=no_dropout)
    expected = run_recipe(load_config(plain), echo=False)
    got = run_recipe(load_config(single), echo=False)
    assert got["best_epoch"] == expected["best_epoch"]
    for key, value in expected["best"].items():
        assert got["best"][key] == pytest.approx(value, abs=1e-5), key
    assert got["test"] == pytest.approx(expected["test"], abs=1e-5)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda t: [t[0], dict(t[1], name="appeals")], r"tasks\[1\] 'appeals': name: a second task named 'appeals'"),
    (lambda t: [dict(t[0], main=False), t[1]], "exactly one task must have main: true \\(got none\\)"),
    (lambda t: [t[0], dict(t[1], main=True)], "exactly one task must have main: true \\(got appeals, dept\\)"),
    (lambda t: [t[0], dict(t[1], data=dict(t[1]["data"], train=None))], r"tasks\[1\] 'dept': data.train is required"),
    (lambda t: [t[0], dict(t[1], data=dict(t[1]["data"], lr=1))], r"tasks\[1\] 'dept': unknown key 'data.lr'"),
    (lambda t: [t[0], dict(t[1], weight=0)], r"tasks\[1\] 'dept': weight must be a number > 0"),
    (lambda t: [t[0], {k: v for k, v in t[1].items() if k != "name"}], r"tasks\[1\]: name is required"),
    (lambda t: [], "tasks must be a non-empty list"),
])
def test_bad_task_lists_fail_when_loaded(tiny_ckpt, data, tmp_path, edit, message):
    tasks = edit([main_task(data["main"]), dept_task(data["dept"])])
    path = write_multitask(tmp_path, tiny_ckpt["dir"], tasks, multitask={"sampling": "main_ratio"})
    with pytest.raises(XtuneError, match=message):
        load_config(path)


@pytest.mark.parametrize("edit, message", [
    (lambda t: dict(t, data=dict(t["data"], train="missing.csv")), "task 'dept': .*missing.csv"),
    (lambda t: dict(t, data=dict(t["data"], label="department")), "task 'dept': .*department"),
])
def test_bad_task_data_is_one_line_exit_2_before_training(tiny_ckpt, data, tmp_path, edit, message):
    import re

    path = write_multitask(tmp_path, tiny_ckpt["dir"], [main_task(data["main"]), edit(dept_task(data["dept"]))])
    done = subprocess.run([sys.executable, "-m", "xtune_keras.cli", "train", path], capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), done.stderr
    assert not os.path.exists(tmp_path / "runs" / "mt") and not os.path.exists(tmp_path / "checkpoints")


def test_only_must_name_tasks_that_exist_and_keep_the_main_one(tiny_ckpt, data, tmp_path):
    tasks = [main_task(data["main"]), dept_task(data["dept"])]
    with pytest.raises(XtuneError, match="multitask.only: no task named 'depts'"):
        load_config(write_multitask(tmp_path, tiny_ckpt["dir"], tasks, multitask={"only": ["appeals", "depts"]}))
    with pytest.raises(XtuneError, match="multitask.only must include the main task 'appeals'"):
        load_config(write_multitask(tmp_path, tiny_ckpt["dir"], tasks, multitask={"only": ["dept"]}))
    with pytest.raises(XtuneError, match="train.grad_accum_steps: not supported with tasks"):
        load_config(write_multitask(tmp_path, tiny_ckpt["dir"], tasks, train={"grad_accum_steps": 2}))


def test_a_killed_multitask_ablation_resumes_to_the_same_table(tiny_ckpt, tmp_path):
    """Row 0 the main task alone (the base: ``multitask.only``), row 1 with the auxiliary task; `xtune ablate`
    killed while row 1 trains, run again: the table of the uninterrupted sweep (no dropout, whose
    random stream a resumed run does not restore)."""
    import signal
    import time

    from tests.helpers import saved_epoch
    from xtune_keras.experiments.report import collect_results
    from xtune_keras.experiments.sweep import run_sweep

    main = write_multilabel_csvs(str(tmp_path), n=600)
    dept = write_department_csvs(main, str(tmp_path))
    heads = {"heads": [{"type": "cls"}, {"type": "mlp", "units": [16], "dropout": 0.0}]}
    tasks = [main_task(main, model=heads), dept_task(dept)]
    ablation = {"base": None, "seeds": [0], "variants": [  # row 0 is the base: what `combine` builds on
        {"name": "main_alone"}, {"name": "with_dept", "part": "auxiliary task", "overrides": {"multitask.only": None}}]}
    rows = {}
    for where in ("whole", "killed"):
        (tmp_path / where).mkdir()
        write_multitask(tmp_path / where, tiny_ckpt["dir"], tasks, name="base", multitask={"only": ["appeals"]},
                        encoder={"dropout": 0.0, "attention_dropout": 0.0},
                        train={"batch_size": 4, "epochs": 3, "patience": 3})
        (tmp_path / where / "ablation.yaml").write_text(yaml.safe_dump(dict(ablation, base="base.yaml")))
    whole = str(tmp_path / "whole" / "ablation.yaml")
    rows["whole"], _ = run_sweep(whole, echo=False)

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "xtune_keras.cli", "ablate", "ablation.yaml"], cwd=killed,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    second = lambda: [RunDir(p) for p in sorted(glob.glob(str(killed / "runs" / "with_dept" / "*")))]  # noqa: E731
    deadline = time.time() + 600
    while not (second() and saved_epoch(second()[0]) >= 1) and time.time() < deadline:
        assert process.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(collect_results(str(killed / "runs"))) == 1 and not second()[0].finished()
    previous = os.getcwd()
    os.chdir(killed)
    try:
        rows["killed"], _ = run_sweep("ablation.yaml", echo=False)
    finally:
        os.chdir(previous)
    assert len(rows["killed"]) == 2
    for got, expected in zip(rows["killed"], rows["whole"]):
        assert got == pytest.approx(expected, abs=1e-6) if isinstance(expected, dict) else got == expected
