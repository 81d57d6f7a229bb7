"""xtune generalize: BERT frozen or not x validation data from the same or another source."""
import os

import pytest
import yaml

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.errors import XtuneError
from xtune_keras.experiments.generalize import default_names, load_generalization, run_generalize
from xtune_keras.experiments.report import collect_results


def write_files(tmp_path, tiny_ckpt, **extra):
    data = write_multilabel_csvs(str(tmp_path))
    os.makedirs(tmp_path / "other")
    other = write_multilabel_csvs(str(tmp_path / "other"), seed=5)
    write_experiment(str(tmp_path / "base.yaml"), data, tiny_ckpt["dir"], str(tmp_path), name="gbase",
                     output={"runs_dir": str(tmp_path / "runs"), "h5": None})
    spec = {"base": "base.yaml", "other_valid": other["valid"], "seeds": [0], "epochs": 1}
    spec.update(extra)
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return str(path), data, other


def test_four_cells_in_the_write_up_order(tiny_ckpt, tmp_path):
    path, data, other = write_files(tmp_path, tiny_ckpt, names=["v1", "v2", "v3", "v4"])
    plan = load_generalization(path)
    assert plan["variants"] == [
        ("v1", ["encoder.freeze=true"]), ("v2", ["encoder.freeze=true", 'data.valid="%s"' % other["valid"]]),
        ("v3", ["encoder.freeze=false"]), ("v4", ["encoder.freeze=false", 'data.valid="%s"' % other["valid"]]),
    ]
    assert default_names("x")[1] == "x_frozen_other"


@pytest.mark.parametrize("extra, message", [
    ({"other_valid": "missing.csv"}, "other_valid: file not found: missing.csv"),
    ({"names": ["a", "b"]}, "'names' needs 4 entries"),
    ({"seed": [0]}, "unknown key 'seed'"),
])
def test_bad_generalization_file(tiny_ckpt, tmp_path, extra, message):
    path, _, _ = write_files(tmp_path, tiny_ckpt, **extra)
    with pytest.raises(XtuneError, match=message):
        load_generalization(path)


def test_an_override_that_would_undo_a_cell_is_refused(tiny_ckpt, tmp_path):
    path, data, _ = write_files(tmp_path, tiny_ckpt)
    with pytest.raises(XtuneError, match="'data.valid=x.csv' would undo a cell"):
        run_generalize(path, extra_overrides=["data.valid=x.csv"], echo=False)
    assert not os.path.exists(tmp_path / "runs")


def test_generalize_trains_the_four_runs_and_writes_one_table(tiny_ckpt, tmp_path, monkeypatch):
    path, data, other = write_files(tmp_path, tiny_ckpt)
    monkeypatch.chdir(tmp_path)
    rows, tables = run_generalize(path, echo=False)
    names = default_names("gbase")
    assert [r["variant"] for r in rows] == names
    runs = {r["name"]: r for r in collect_results(str(tmp_path / "runs"))}
    assert set(runs) == set(names)
    for name, frozen, valid in zip(names, (True, True, False, False),
                                   (data["valid"], other["valid"], data["valid"], other["valid"])):
        with open(os.path.join(runs[name]["run_dir"], "config.yaml"), encoding="utf-8") as f:
            config = yaml.safe_load(f)
        assert config["encoder"]["freeze"] is frozen and config["data"]["valid"] == valid
    with open(tables["generalization"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("| index | bert freezing | data homology |")
    assert [line.split(" | ")[1:3] for line in lines[2:]] == [
        ["True", "True"], ["True", "False"], ["False", "True"], ["False", "False"]]


def test_command_line_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from xtune_keras.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["generalize", "nope.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "xtune: error: nope.yaml: generalization file not found"
