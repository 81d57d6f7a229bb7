"""Every YAML in experiments/ builds and trains one epoch on the tiny checkpoint."""
import glob
import os

import pytest

from tests.helpers import write_multilabel_csvs
from xtune_keras.config import load_config
from xtune_keras.runner import run_experiment

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
