import numpy as np
import pytest

from xtune_keras.convert.checkpoints import (
    load_variables, save_transformer_checkpoint, save_variables, transformer_variables,
)
from xtune_keras.model.encoders import build_transformer
from xtune_keras.errors import XtuneError


def test_loaded_weights_bit_identical_to_written(tiny_ckpt):
    written = load_variables(tiny_ckpt["checkpoint"])
    transformer = build_transformer(tiny_ckpt["config"], tiny_ckpt["checkpoint"], with_pool=True, with_mlm=True)
    loaded = transformer_variables(transformer)
    assert set(loaded) == set(written)
    for name, value in written.items():
        assert loaded[name].dtype == value.dtype
        assert np.array_equal(loaded[name], value), name


def test_odd_sizes_reach_the_model(tiny_ckpt):
    written = load_variables(tiny_ckpt["checkpoint"])
    assert written["bert/encoder/layer_1/intermediate/dense/kernel"].shape == (8, 13)
    assert written["bert/encoder/layer_0/attention/self/query/kernel"].shape == (8, 8)


def test_a_random_checkpoint_takes_a_given_vocabulary_and_shape(tmp_path):
    import json
    import subprocess
    import sys

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ["w%d" % i for i in range(40)]
    (tmp_path / "v.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "xtune_keras.cli", "tiny-checkpoint", str(tmp_path / "ckpt"),
                           "--vocab", str(tmp_path / "v.txt"), "--hidden", "12", "--heads", "3",
                           "--max-position", "96"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "ckpt" / "bert_config.json").read_text())
    assert (config["vocab_size"], config["hidden_size"], config["max_position_embeddings"]) == (45, 12, 96)
    assert (tmp_path / "ckpt" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == vocab
    written = load_variables(str(tmp_path / "ckpt" / "bert_model.ckpt"))
    assert written["bert/embeddings/word_embeddings"].shape == (45, 12)
    assert written["bert/embeddings/position_embeddings"].shape == (96, 12)


def test_albert_checkpoint_round_trip(tiny_albert):
    written = load_variables(tiny_albert["checkpoint"])
    transformer = build_transformer(tiny_albert["config"], tiny_albert["checkpoint"], model="albert")
    loaded = transformer_variables(transformer)
    assert loaded
    for name, value in loaded.items():
        assert np.array_equal(value, written[name]), name


def test_transformer_checkpoint_writer_round_trip(tiny_ckpt, tmp_path):
    transformer = build_transformer(tiny_ckpt["config"], tiny_ckpt["checkpoint"])
    prefix = str(tmp_path / "again" / "bert_model.ckpt")
    save_transformer_checkpoint(transformer, prefix)
    again = load_variables(prefix)
    for name, value in transformer_variables(transformer).items():
        assert np.array_equal(again[name], value), name


def test_shape_mismatch_names_variable(tiny_ckpt, tmp_path):
    values = load_variables(tiny_ckpt["checkpoint"])
    values["bert/encoder/layer_1/intermediate/dense/kernel"] = np.zeros((8, 12), np.float32)
    prefix = str(tmp_path / "bad" / "bert_model.ckpt")
    save_variables(values, prefix)
    with pytest.raises(XtuneError, match=r"layer_1/intermediate/dense/kernel has shape \[8, 12\]"):
        build_transformer(tiny_ckpt["config"], prefix)
