"""Bad input: one line naming the file, row or key; exit status 2; no traceback; nothing lost."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import write_csv, write_experiment, write_multilabel_csvs
from xtune_keras.convert.checkpoints import load_variables, save_variables
from xtune_keras.schema import load_config
from xtune_keras.recipes.finetune import run_experiment


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "xtune_keras.cli", *args],
                          capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("xtune: error: ")
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def setup(tiny_ckpt, tmp_path_factory):
    """A trained model whose .h5 must survive every failed command below."""
    tmp = tmp_path_factory.mktemp("errors")
    data = write_multilabel_csvs(str(tmp))
    yaml_path = write_experiment(str(tmp / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp),
                                 train={"epochs": 1})
    result = run_experiment(load_config(yaml_path), echo=False)
    return {"tmp": tmp, "data": data, "yaml": yaml_path, "h5": result["h5"], "ckpt": tiny_ckpt}


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def train_with(setup, tmp_path, **sections):
    """Run `xtune train` on a variant of the experiment; the trained .h5 must be untouched."""
    before = file_bytes(setup["h5"])
    yaml_path = write_experiment(str(tmp_path / "bad.yaml"), setup["data"], setup["ckpt"]["dir"],
                                 str(setup["tmp"]), **sections)
    done = cli("train", yaml_path)
    assert file_bytes(setup["h5"]) == before
    return done


def test_missing_column(setup, tmp_path):
    done = train_with(setup, tmp_path, data={"text2": ["context"]})
    assert_one_line_error(done, "train.csv", "missing column 'context'", "data.text2")


def test_empty_file(setup, tmp_path):
    empty = tmp_path / "valid.csv"
    empty.write_text("")
    done = train_with(setup, tmp_path, data={"valid": str(empty)})
    assert_one_line_error(done, str(empty), "empty file")


def test_empty_text(setup, tmp_path):
    path = str(tmp_path / "train.csv")
    write_csv(path, [{"addr": "地址 1", "ctx": "road", "labels": "road"},
                     {"addr": "", "ctx": "noise", "labels": "noise"}], ["addr", "ctx", "labels"])
    done = train_with(setup, tmp_path, data={"train": path})
    assert_one_line_error(done, "train.csv row 2", "empty")


def test_unknown_label_at_evaluate(setup, tmp_path):
    path = str(tmp_path / "new.csv")
    write_csv(path, [{"addr": "a", "ctx": "road", "labels": "road"},
                     {"addr": "b", "ctx": "x", "labels": "parking"}], ["addr", "ctx", "labels"])
    done = cli("evaluate", setup["h5"], path)
    assert_one_line_error(done, "new.csv row 2", "unknown label 'parking'")


def test_checkpoint_shape_mismatch(setup, tmp_path):
    bad_dir = tmp_path / "bad_ckpt"
    shutil.copytree(setup["ckpt"]["dir"], bad_dir)
    values = load_variables(str(bad_dir / "bert_model.ckpt"))
    values["bert/encoder/layer_0/output/dense/kernel"] = np.zeros((12, 8), np.float32)
    save_variables(values, str(bad_dir / "bert_model.ckpt"))
    done = train_with(setup, tmp_path, encoder={"dir": str(bad_dir)})
    assert_one_line_error(done, "bert_model.ckpt", "layer_0/output/dense/kernel", "[12, 8]", "[13, 8]")


def test_unknown_yaml_key_lists_valid_ones(setup, tmp_path):
    done = train_with(setup, tmp_path, train={"learning_rate": 1e-3})
    assert_one_line_error(done, "bad.yaml", "train.learning_rate", "valid keys", "lr", "batch_size")


def test_non_utf8_file(setup, tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("addr,ctx,labels\n地址,路灯坏了,road\n".encode("gbk"))
    done = train_with(setup, tmp_path, data={"train": str(path)})
    assert_one_line_error(done, "gbk.csv", "UTF-8", "line 2")


def test_failed_predict_keeps_existing_output(setup, tmp_path):
    out = tmp_path / "pred.csv"
    out.write_text("earlier predictions\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    done = cli("predict", setup["h5"], str(empty), "-o", str(out))
    assert_one_line_error(done, "empty.csv", "empty file")
    assert out.read_text() == "earlier predictions\n"


def test_unknown_head_and_bad_choice(setup, tmp_path):
    done = train_with(setup, tmp_path, model={"heads": [{"type": "cls"}, {"type": "lstm"}]})
    assert_one_line_error(done, "model.heads[1]", "unknown head 'lstm'", "mlp")
    done = train_with(setup, tmp_path, data={"truncation": "middle"})
    assert_one_line_error(done, "data.truncation", "head+tail")


def test_missing_experiment_file(tmp_path):
    done = cli("train", str(tmp_path / "nope.yaml"))
    assert_one_line_error(done, "nope.yaml", "not found")


def test_a_missing_vocabulary_for_tiny_checkpoint(tmp_path):
    done = cli("tiny-checkpoint", str(tmp_path / "ckpt"), "--vocab", str(tmp_path / "no_such_vocab.txt"))
    assert_one_line_error(done, "no_such_vocab.txt", "cannot read the vocabulary")
