import os
import pytest
import yaml

from xtune_keras.schema import config_hash, load_config
from xtune_keras.errors import XtuneError


def write(tmp_path, data):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


BASE = {"data": {"train": "t.csv", "valid": "v.csv"}, "encoder": {"dir": "ckpt"}}


def test_defaults_fill_and_name_from_file(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config["name"] == "exp"
    assert config["train"]["monitor"] == "val_loss" and config["data"]["max_len"] == 128


def test_yaml11_exponent_without_dot_is_a_number(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data: {train: t.csv, valid: v.csv}\nencoder: {dir: c}\ntrain: {lr: 1e-3}\n")
    assert load_config(str(path))["train"]["lr"] == 1e-3


def test_overrides_parse_values(tmp_path):
    config = load_config(write(tmp_path, BASE), ["train.epochs=7", "data.text2=[a, b]", "train.lr=2e-5"])
    assert config["train"]["epochs"] == 7 and config["data"]["text2"] == ["a", "b"]
    assert config["train"]["lr"] == 2e-5


@pytest.mark.parametrize("override, fragment", [
    ("data.txt1=x", "unknown key 'data.txt1'; valid keys at 'data': train, valid"),
    ("bogus=1", "unknown key 'bogus'; valid keys at the top level: name, seed, recipe"),
    ("recipe=distill", "recipe: unknown recipe 'distill'; valid: finetune, pretrain"),
    ("train.monitor=val_f1", "train.monitor: unknown choice 'val_f1'; valid: val_loss"),
    ("model.loss=hinge", "model.loss: unknown loss type 'hinge'; valid: bce, ce, focal"),
    ("model.loss={type: focal, beta: 1}", "unknown option 'beta' for loss type 'focal'; valid: alpha, gamma"),
    ("model.threshold=high", "model.threshold must be a number in (0, 1) or \"tuned\""),
    ("train.lr=fast", "'train.lr' must be a number"),
    ("train.epochs=0", "train.epochs must be an integer >= 1"),
    ("model.heads=[{type: mlp, width: 3}]", "unknown option 'width' for head 'mlp'; valid: units"),
    ("trainlr", "expected key=value"),
    ("train.group_by_length=maybe", "train.group_by_length must be true or false"),
    ("train.length_pool=0", "train.length_pool must be an integer >= 1"),
    ("train.micro_batches=0", "train.micro_batches must be an integer >= 1"),
    ("train.micro_batches=true", "train.micro_batches must be an integer >= 1"),
])
def test_bad_config_names_the_key(tmp_path, override, fragment):
    with pytest.raises(XtuneError, match=None) as info:
        load_config(write(tmp_path, BASE), [override])
    assert fragment in str(info.value)


def test_hash_ignores_seed_and_output_only(tmp_path):
    path = write(tmp_path, BASE)
    base = config_hash(load_config(path))
    assert config_hash(load_config(path, ["seed=5", "output.runs_dir=elsewhere"])) == base
    assert config_hash(load_config(path, ["train.lr=1e-5"])) != base


def test_keys_added_later_are_hashed_only_when_changed(tmp_path):
    """A config written before train.group_by_length existed keeps its run folder."""
    path = write(tmp_path, BASE)
    config = load_config(path)
    base = config_hash(config)
    older = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    del older["train"]["group_by_length"], older["train"]["length_pool"], older["train"]["micro_batches"]
    del older["recipe"]
    assert config_hash(older) == base
    assert config_hash(load_config(path, ["train.group_by_length=false", "train.length_pool=50",
                                          "train.micro_batches=1"])) == base
    assert config_hash(load_config(path, ["train.micro_batches=4"])) != base
    grouped = config_hash(load_config(path, ["train.group_by_length=true"]))
    assert grouped != base
    assert config_hash(load_config(path, ["train.group_by_length=true", "train.length_pool=8"])) != grouped


def test_micro_batches_refuse_a_strategy(tmp_path):
    with pytest.raises(XtuneError) as info:
        load_config(write(tmp_path, BASE), ["train.strategy=mirrored", "train.micro_batches=2"])
    assert "train.micro_batches" in str(info.value) and str(tmp_path) in str(info.value)


@pytest.mark.parametrize("override, fragment", [
    ("train.lr=0", "train.lr must be a number > 0 (got 0)"),
    ("train.layer_decay=0", "train.layer_decay must be a number in (0, 1]"),
    ("train.ema_momentum=1", "train.ema_momentum must be a number in [0, 1)"),
    ("train.weight_decay=-1e-2", "train.weight_decay must be a number >= 0"),
    ("encoder.dropout=1.0", "encoder.dropout must be a number in [0, 1)"),
    ("train.patience=-1", "train.patience must be an integer >= 0"),
    ("train.adversarial={method: pgd, steps: 0}", "train.adversarial.steps must be an integer >= 1"),
    ("data.lowercase=1", "data.lowercase must be true or false"),
])
def test_values_out_of_their_declared_range_fail_at_load(tmp_path, override, fragment):
    with pytest.raises(XtuneError) as info:
        load_config(write(tmp_path, BASE), [override])
    assert fragment in str(info.value) and str(tmp_path) in str(info.value)


def test_every_declared_key_has_a_default_that_passes_its_own_check():
    from xtune_keras.keys import KEYS
    from xtune_keras.schema import check_value

    for dotted, key in KEYS.items():
        assert key.doc and key.kind in ("int", "number", "bool", "str", "path", "columns", "choice", "any"), dotted
        assert key.hashed in ("always", "if_changed", "never"), dotted
        check_value(dotted, key.default)


def test_docs_config_table_is_generated_from_the_keys():
    from xtune_keras.keys import config_markdown

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "config.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == config_markdown(), "regenerate: python -m xtune_keras.keys > docs/config.md"
