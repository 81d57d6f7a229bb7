"""End to end on the tiny checkpoint: train, the named .h5, metrics on disk, reload elsewhere."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.schema import load_config
from xtune_keras.model.modelfile import load_model_file
from xtune_keras.recipes.finetune import run_experiment

EPOCH_KEYS = {"epoch", "seconds", "loss", "acc", "val_loss", "val_acc", "val_subset_acc",
              "val_micro_f1", "val_macro_f1"}


@pytest.fixture(scope="module")
def trained(tiny_ckpt, tmp_path_factory):
    """One tiny multi-label training run, shared by the tests that only read its outputs."""
    tmp = tmp_path_factory.mktemp("train")
    data = write_multilabel_csvs(str(tmp))
    name = "bert_texcnn_Realmutil_mlps_v2(619)"  # the write-up's names must work as file names
    yaml_path = write_experiment(str(tmp / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp), name=name)
    config = load_config(yaml_path)
    result = run_experiment(config, echo=False)
    return {"tmp": tmp, "data": data, "yaml": yaml_path, "config": config, "result": result}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_run_writes_named_h5_and_metrics(trained):
    result = trained["result"]
    assert os.path.basename(result["h5"]) == "bert_texcnn_Realmutil_mlps_v2(619).h5"
    assert os.path.isfile(result["h5"])
    rows = read_jsonl(os.path.join(result["run_dir"], "metrics.jsonl"))
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert EPOCH_KEYS <= set(row)
    for name in ("config.yaml", "labels.json", "result.json"):
        assert os.path.isfile(os.path.join(result["run_dir"], name))
    assert os.listdir(os.path.join(result["run_dir"], "tensorboard"))
    assert result["examples"] == {"train": 36, "valid": 12, "test": 12}
    assert set(result["test"]) == {"loss", "acc", "subset_acc", "micro_f1", "macro_f1"}


def test_best_epoch_is_the_saved_one(trained):
    result = trained["result"]
    rows = read_jsonl(os.path.join(result["run_dir"], "metrics.jsonl"))
    best = min(rows, key=lambda r: r["val_loss"])
    assert result["best_epoch"] == best["epoch"]
    _, meta, _ = load_model_file(result["h5"])
    assert meta["epoch"] == best["epoch"]
    assert meta["labels"] == ["noise", "road", "water"]


def test_finished_run_is_not_trained_again(trained):
    again = run_experiment(trained["config"], echo=False)
    assert again == trained["result"]


RELOAD_SCRIPT = """
import sys, numpy as np
import xtune_keras.model  # registers the custom layers and losses
from bert4keras.backend import keras
model = keras.models.load_model(sys.argv[1], compile=False)
inputs = np.load(sys.argv[2])
np.save(sys.argv[3], model.predict({"Input-Token": inputs["ids"], "Input-Segment": inputs["segs"]}, verbose=0))
"""


def test_h5_reloads_in_a_fresh_process_with_identical_predictions(trained, tmp_path):
    model, _, _ = load_model_file(trained["result"]["h5"])
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, size=(4, 11)).astype(np.int32)
    ids[:, 0], ids[2, 7:] = 2, 0  # [CLS] first, one padded row
    segs = np.zeros_like(ids)
    expected = model.predict({"Input-Token": ids, "Input-Segment": segs}, verbose=0)
    np.savez(tmp_path / "inputs.npz", ids=ids, segs=segs)
    subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, trained["result"]["h5"],
                    str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")], check=True)
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)


def test_same_seed_same_metrics(trained):
    again = run_experiment(dict(trained["config"], output=dict(trained["config"]["output"],
                                h5=str(trained["tmp"] / "again.h5"))), force=True, echo=False)
    first = read_jsonl(os.path.join(trained["result"]["run_dir"], "metrics.jsonl"))
    second = read_jsonl(os.path.join(again["run_dir"], "metrics.jsonl"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(first) == strip(second)


def test_single_label_softmax_run(tiny_ckpt, tmp_path):
    data = write_multilabel_csvs(str(tmp_path), seed=1)
    for part in ("train", "valid", "test"):  # keep the first label only: one label per row
        with open(data[part], encoding="utf-8") as f:
            text = f.read()
        lines = [line.split("|")[0] if "|" in line else line for line in text.splitlines()]
        with open(data[part], "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    yaml_path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp_path),
                                 data={"multi_label": False}, model={"loss": "ce"},
                                 train={"epochs": 1, "monitor": "val_acc"})
    result = run_experiment(load_config(yaml_path), echo=False)
    assert result["best_epoch"] == 1
    _, meta, _ = load_model_file(result["h5"])
    assert meta["activation"] == "softmax" and meta["multi_label"] is False


def test_albert_encoder_trains(tiny_albert, tmp_path):
    data = write_multilabel_csvs(str(tmp_path))
    yaml_path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_albert["dir"], str(tmp_path),
                                 encoder={"model": "albert"}, train={"epochs": 1})
    result = run_experiment(load_config(yaml_path), echo=False)
    assert os.path.isfile(result["h5"])


def test_overrides_reach_the_run(trained):
    config = load_config(trained["yaml"], ["train.lr=2e-5", "data.max_len=16", "seed=3"])
    assert config["train"]["lr"] == 2e-5 and config["data"]["max_len"] == 16 and config["seed"] == 3


def cli(*args):
    return subprocess.run([sys.executable, "-m", "xtune_keras.cli", *args],
                          capture_output=True, text=True)


def test_cli_evaluate_and_predict(trained, tmp_path):
    h5 = trained["result"]["h5"]
    done = cli("evaluate", h5, trained["data"]["test"])
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["examples"] == 12
    assert metrics["micro_f1"] == pytest.approx(trained["result"]["test"]["micro_f1"])
    out = tmp_path / "pred.csv"
    done = cli("predict", h5, trained["data"]["test"], "-o", str(out))
    assert done.returncode == 0, done.stderr
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table.columns) == ["row", "labels", "prob_noise", "prob_road", "prob_water"]
    assert len(table) == 12
    probs = table[["prob_noise", "prob_road", "prob_water"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()


def test_cli_train_prints_one_line_per_epoch_or_nothing_with_quiet(trained, tmp_path):
    """Off a terminal: one line per epoch and no progress bar; --quiet: neither. Through a
    micro-batch trainer the checkpoint saves an uncompiled classifier: Keras's warning about its
    compiled metrics must not come back at every epoch."""
    outputs = ["output.runs_dir=%s" % (tmp_path / "runs"), "output.h5=%s" % (tmp_path / "m.h5"),
               "train.micro_batches=2", "train.epochs=2"]
    done = cli("train", trained["yaml"], *outputs)
    assert done.returncode == 0, done.stderr
    assert [line.split(" (")[0] for line in done.stdout.splitlines() if line.startswith("epoch ")] == \
        ["epoch 1", "epoch 2"]
    assert "compiled metrics have yet to be built" not in done.stderr and "\b" not in done.stdout
    quiet = cli("train", trained["yaml"], *outputs, "--force", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert not any(line.startswith("epoch ") for line in quiet.stdout.splitlines())
    assert json.loads(quiet.stdout)["epochs_run"] == 2


def test_lazy_embedding_rows_through_the_trainer(tiny_ckpt, tmp_path):
    """``train.embedding_update: lazy`` with AdamW, FGM and micro-batches: the row of a token no text
    uses ([MASK]) keeps the checkpoint's values (dense AdamW would decay it); used rows move."""
    import tensorflow as tf
    from xtune_keras.testing import tiny_vocab
    data = write_multilabel_csvs(str(tmp_path))
    train = {"epochs": 1, "optimizer": "adamw", "embedding_update": "lazy", "micro_batches": 2,
             "adversarial": {"method": "fgm"}}
    yaml_path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp_path), train=train)
    model, _, _ = load_model_file(run_experiment(load_config(yaml_path), echo=False)["h5"])
    trained = model.get_layer("Embedding-Token").embeddings.numpy()
    initial = tf.train.load_variable(tiny_ckpt["checkpoint"], "bert/embeddings/word_embeddings")
    vocab = tiny_vocab()
    np.testing.assert_array_equal(trained[vocab.index("[MASK]")], initial[vocab.index("[MASK]")])
    assert np.all(trained[vocab.index("[CLS]")] != initial[vocab.index("[CLS]")])


def test_fused_adam_kernel_through_the_trainer(tiny_ckpt, tmp_path):
    """``train.adam_kernel: fused`` with AdamW, layer-wise LR decay, EMA, FGM and micro-batches trains
    the weights the op-by-op update trains, up to float rounding."""
    data = write_multilabel_csvs(str(tmp_path))
    weights = {}
    for kernel in ("ops", "fused"):
        train = {"epochs": 2, "optimizer": "adamw", "adam_kernel": kernel, "micro_batches": 2, "layer_decay": 0.9,
                 "ema_momentum": 0.9, "adversarial": {"method": "fgm"}}
        folder = tmp_path / kernel
        folder.mkdir()
        yaml_path = write_experiment(str(folder / "exp.yaml"), data, tiny_ckpt["dir"], str(folder), train=train)
        model, _, _ = load_model_file(run_experiment(load_config(yaml_path), echo=False)["h5"])
        weights[kernel] = model.get_weights()
    for fused, ops in zip(weights["fused"], weights["ops"]):
        np.testing.assert_allclose(fused, ops, rtol=1e-4, atol=1e-5)
    # The two kernels round differently: bit-equal weights would mean the key never reached Adam.
    assert any(not np.array_equal(fused, ops) for fused, ops in zip(weights["fused"], weights["ops"]))
