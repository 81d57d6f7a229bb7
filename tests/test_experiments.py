"""Every YAML in experiments/ builds and trains one epoch on the tiny checkpoint."""
import glob
import os

import pytest
import yaml

from tests.helpers import write_multilabel_csvs
from xtune_keras.schema import load_config
from xtune_keras.recipes.finetune import run_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.yaml")))


def test_there_are_experiments():
    assert EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_builds_on_tiny_checkpoint(path, tiny_ckpt, tmp_path):
    declared = load_config(path)  # to read the columns it names
    data = declared["data"]
    text2 = data["text2"][0] if data["text2"] else "unused_text2"
    paths = write_multilabel_csvs(str(tmp_path), text1=data["text1"][0], text2=text2, label=data["label"])
    overrides = [
        "data.train=%s" % paths["train"], "data.valid=%s" % paths["valid"], "data.test=null",
        "encoder.dir=%s" % tiny_ckpt["dir"], "data.max_len=24", "train.epochs=1", "train.batch_size=8",
        "output.runs_dir=%s" % (tmp_path / "runs"), "output.h5=%s" % (tmp_path / "model.h5"),
    ]
    result = run_experiment(load_config(path, overrides), echo=False)
    assert result["epochs_run"] == 1
    assert os.path.isfile(tmp_path / "model.h5")


ABLATIONS = sorted(glob.glob(os.path.join(ROOT, "experiments", "ablations", "*.yaml")))


@pytest.mark.parametrize("path", ABLATIONS, ids=os.path.basename)
def test_every_ablation_variant_builds_on_tiny_checkpoint(path, tmp_path):
    from xtune_keras.testing import write_tiny_checkpoint
    from xtune_keras.experiments.sweep import load_ablation, planned_runs

    # 12 layers like BERT-base, so that rows choosing layer 10 or pooling the last 4 build too
    tiny_ckpt = {"dir": str(tmp_path / "tiny12")}
    write_tiny_checkpoint(tiny_ckpt["dir"], num_hidden_layers=12)
    ablation = load_ablation(path, seeds=1)
    base = load_config(ablation["base"])
    data = base["data"]
    paths = write_multilabel_csvs(str(tmp_path), text1=data["text1"][0],
                                  text2=data["text2"][0] if data["text2"] else "unused_text2", label=data["label"])
    tiny = ["data.train=%s" % paths["train"], "data.valid=%s" % paths["valid"],
            "encoder.dir=%s" % tiny_ckpt["dir"], "data.max_len=24", "train.batch_size=8",
            "output.runs_dir=%s" % (tmp_path / "runs"), "output.h5=%s" % (tmp_path / "m.h5")]
    for name, _seed, _overrides, config in planned_runs(ablation, tiny):
        built = build_for_training(config)
        assert built.name in ("xtune_classifier", "adversarial_trainer"), name


def build_for_training(config, num_labels=3, steps_per_epoch=4):
    """Everything run_experiment builds before fit: classifier, freezing, loss, optimizer, trainer."""
    from xtune_keras.model.encoders import read_config, resolve_encoder_paths
    from xtune_keras.model.losses import ACTIVATIONS, build_loss, loss_type
    from xtune_keras.model.classifier import freeze_layers
    from xtune_keras.recipes.finetune import build_model, compile_model, make_optimizer, make_trainer

    enc = config["encoder"]
    paths = resolve_encoder_paths(enc["dir"], enc["config"], enc["checkpoint"], enc["vocab"])
    classifier = build_model(config, paths, num_labels)
    freeze_layers(classifier, enc["freeze"], enc["freeze_pattern"])
    optimizer = make_optimizer(config["train"], classifier, read_config(paths["config"])["num_hidden_layers"],
                               steps_per_epoch)
    model = make_trainer(classifier, config["train"], ACTIVATIONS[loss_type(config["model"]["loss"])])
    compile_model(model, optimizer, build_loss(config["model"]["loss"]))
    return model


GENERALIZATIONS = sorted(glob.glob(os.path.join(ROOT, "experiments", "generalize", "*.yaml")))


def test_there_are_generalization_files():
    assert GENERALIZATIONS


@pytest.mark.parametrize("path", GENERALIZATIONS, ids=os.path.basename)
def test_every_generalization_cell_builds_on_tiny_checkpoint(path, tiny_ckpt, tmp_path):
    from xtune_keras.experiments.generalize import load_generalization
    from xtune_keras.experiments.sweep import planned_runs

    with open(path, encoding="utf-8") as f:
        data = load_config(os.path.join(os.path.dirname(path), yaml.safe_load(f)["base"]))["data"]
    paths = write_multilabel_csvs(str(tmp_path), text1=data["text1"][0], text2=data["text2"][0],
                                  label=data["label"])
    plan = load_generalization(path, seeds=1, other_valid=paths["test"])
    tiny = ["data.train=%s" % paths["train"], "encoder.dir=%s" % tiny_ckpt["dir"], "data.max_len=24",
            "train.batch_size=8", "output.runs_dir=%s" % (tmp_path / "runs"), "output.h5=%s" % (tmp_path / "m.h5")]
    runs = planned_runs(plan, tiny)
    assert [config["encoder"]["freeze"] for *_, config in runs] == [True, True, False, False]
    for name, _seed, _overrides, config in runs:
        assert build_for_training(config).name == "xtune_classifier", name


MULTITASK = sorted(glob.glob(os.path.join(ROOT, "experiments", "multitask", "*.yaml")))


def test_there_are_multitask_experiments():
    assert MULTITASK


@pytest.mark.parametrize("path", MULTITASK, ids=os.path.basename)
def test_multitask_experiment_trains_on_tiny_checkpoint(path, tiny_ckpt, tmp_path):
    """Every task gets tiny data with the columns it names (a single-label task: each row's first
    label), through ``tasks.<name>.data.*`` overrides; one epoch writes every task's .h5."""
    import csv

    from xtune_keras.recipes import run_recipe

    overrides = ["encoder.dir=%s" % tiny_ckpt["dir"], "train.epochs=1", "train.batch_size=8",
                 "output.runs_dir=%s" % (tmp_path / "runs"), "output.h5=%s" % (tmp_path / "model.h5")]
    for task in load_config(path)["tasks"]:
        data, folder = task["data"], tmp_path / task["name"]
        folder.mkdir()
        paths = write_multilabel_csvs(str(folder), text1=data["text1"][0],
                                      text2=data["text2"][0] if data["text2"] else "unused_text2", label=data["label"])
        if not data["multi_label"]:
            for part in paths.values():
                with open(part, encoding="utf-8") as f:
                    rows = list(csv.DictReader(f))
                for row in rows:
                    row[data["label"]] = row[data["label"]].split("|")[0]
                with open(part, "w", newline="", encoding="utf-8") as f:
                    writer = csv.DictWriter(f, list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
        overrides += ["tasks.%s.data.%s=%s" % (task["name"], part, paths[part]) for part in ("train", "valid")]
        overrides += ["tasks.%s.data.max_len=24" % task["name"], "tasks.%s.data.test=null" % task["name"]]
    result = run_recipe(load_config(path, overrides), echo=False)
    assert result["epochs_run"] == 1 and os.path.isfile(tmp_path / "model.h5")
    for name, task in result["tasks"].items():
        assert os.path.isfile(task["h5"]), name
