"""xtune combine: best row of each part, merged, run with the same seeds, against row 0."""
import json
import os
import time

import pytest
import yaml

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.experiments.combine import COMBINED, choose_best_per_part, merge_overrides, run_combine
from xtune_keras.schema import config_hash, load_config
from xtune_keras.experiments.report import collect_results


def ablation_of(variants, parts):
    return {"variants": variants, "parts": parts}


def row(name, mean, p=None):
    return {"variant": name, "val_acc_mean": mean, "p": p}


VARIANTS = [("row0", []), ("lr_a", ["train.lr=0.001"]), ("lr_b", ["train.lr=0.002"]),
            ("head", ['model.heads=[{"type": "avg"}]']), ("loss", ['model.loss="multilabel_ce"']),
            ("warm_lr", ["train.warmup_steps=0.1", "train.lr=0.003"])]
PARTS = {"lr_a": "lr", "lr_b": "lr", "head": "head", "loss": "loss", "warm_lr": "warmup"}


def test_best_of_each_part_that_beats_row_zero():
    rows = [row("row0", 0.50), row("lr_a", 0.55, 0.01), row("lr_b", 0.60, 0.20), row("head", 0.45),
            row("loss", 0.50), row("warm_lr", 0.52, 0.04)]
    choices = choose_best_per_part(ablation_of(VARIANTS, PARTS), rows)
    # head is worse and loss only ties row 0: both parts keep the baseline; best first
    assert [(part, name) for part, name, _, _ in choices] == [("lr", "lr_b"), ("warmup", "warm_lr")]
    significant = choose_best_per_part(ablation_of(VARIANTS, PARTS), rows, alpha=0.05)
    assert [(part, name) for part, name, _, _ in significant] == [("lr", "lr_a"), ("warmup", "warm_lr")]


def test_a_row_without_part_is_a_part_of_its_own():
    rows = [row("row0", 0.5), row("lr_a", 0.6), row("lr_b", 0.7)]
    choices = choose_best_per_part(ablation_of(VARIANTS[:3], {}), rows)
    assert [name for _, name, _, _ in choices] == ["lr_b", "lr_a"]


def test_merge_keeps_the_better_row_on_a_conflict():
    choices = [("lr", "lr_b", 0.60, None), ("warmup", "warm_lr", 0.52, None), ("loss", "loss", 0.51, None)]
    overrides, conflicts = merge_overrides(ablation_of(VARIANTS, PARTS), choices)
    assert overrides == ["train.lr=0.002", "train.warmup_steps=0.1", 'model.loss="multilabel_ce"']
    assert conflicts == [{"key": "train.lr", "kept": "lr_b", "kept_value": "0.002",
                          "dropped": "warm_lr", "dropped_value": "0.003"}]


def write_ablation(tmp_path, tiny_ckpt):
    data = write_multilabel_csvs(str(tmp_path))
    write_experiment(str(tmp_path / "base.yaml"), data, tiny_ckpt["dir"], str(tmp_path),
                     output={"runs_dir": str(tmp_path / "runs"), "h5": None})
    variants = [{"name": "row0"},
                {"name": "lr_high", "part": "lr", "overrides": {"train.lr": 1.0e-2}},
                {"name": "avg_head", "part": "head", "overrides": {"model.heads": [{"type": "avg"}]}}]
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "epochs": 1, "seeds": [0, 1], "variants": variants}))
    return str(path)


@pytest.fixture(scope="module")
def combined(tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("combine")
    previous = os.getcwd()
    os.chdir(tmp)
    try:
        rows, tables, choices, conflicts = run_combine(write_ablation(tmp, tiny_ckpt), echo=False)
        yield {"tmp": tmp, "rows": rows, "tables": tables, "choices": choices}
    finally:
        os.chdir(previous)


def test_combined_run_uses_the_same_seeds_and_is_reported_against_row_zero(combined):
    names = [r["variant"] for r in combined["rows"]]
    chosen = [name for _, name, _, _ in combined["choices"]]
    assert names == ["row0"] + [n for n in ("lr_high", "avg_head") if n in chosen] + [COMBINED]
    finished = collect_results(str(combined["tmp"] / "runs"))
    assert sorted(r["seed"] for r in finished if r["name"] == COMBINED) == [0, 1]
    assert len(finished) == 3 * 2 + 2  # the ablation, then only the combined runs
    assert combined["rows"][-1]["t"] is not None or combined["rows"][-1]["runs"] == 2
    with open(combined["tables"]["md"], encoding="utf-8") as f:
        assert "| combined | 2 |" in f.read()
    assert os.path.basename(os.path.dirname(combined["tables"]["md"])) == "abl_combined"


def test_final_configuration_is_an_experiment_file_of_the_combined_run(combined):
    with open(combined["tables"]["choices"], encoding="utf-8") as f:
        saved = json.load(f)
    assert [c["variant"] for c in saved["choices"]] == [name for _, name, _, _ in combined["choices"]]
    config = load_config(combined["tables"]["experiment"])
    run = [r for r in collect_results(str(combined["tmp"] / "runs")) if r["name"] == COMBINED][0]
    assert config_hash(config) == run["config_hash"]  # `xtune train combined.yaml` is that run


def test_rerun_trains_nothing(combined):
    previous = os.getcwd()
    os.chdir(combined["tmp"])
    try:
        start = time.time()
        rows, _, choices, _ = run_combine(str(combined["tmp"] / "abl.yaml"), echo=False)
    finally:
        os.chdir(previous)
    assert time.time() - start < 20 and rows == combined["rows"] and choices == combined["choices"]


def test_command_line_prints_choices_table_and_final_configuration(combined, capsys, monkeypatch):
    from xtune_keras.cli import main

    monkeypatch.chdir(combined["tmp"])
    assert main(["combine", "abl.yaml"]) == 0
    out = capsys.readouterr().out
    for part, name, _, _ in combined["choices"]:
        assert "part %s: %s" % (part, name) in out
    assert "| combined | 2 |" in out and "final configuration: " in out
    assert main(["combine", "nope.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "xtune: error: nope.yaml: ablation file not found"
