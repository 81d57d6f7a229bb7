"""The token cache: same ids as tokenizing, a key that follows everything the ids depend on, and
damaged or missing files that cost a recompute, never a run."""
import glob
import os
import shutil

import numpy as np
import pytest

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.data import prepare
from xtune_keras.data import token_cache as tc
from xtune_keras.schema import config_hash, load_config
from xtune_keras.data.tables import Examples
from xtune_keras.errors import XtuneError
from xtune_keras.data.prepare import prepare_data


@pytest.fixture
def exp(tiny_ckpt, tmp_path):
    """A YAML experiment on tiny data (head+tail, so head_ratio matters) and its folders."""
    data = write_multilabel_csvs(str(tmp_path))
    path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp_path),
                            data={"truncation": "head+tail", "max_len": 12})
    return {"yaml": path, "data": data, "tmp": tmp_path, "ckpt": tiny_ckpt,
            "default_cache": str(tmp_path / "runs" / "_cache" / "tokens")}


def cache_files(directory):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(directory, "*.npz")))


def test_cached_ids_equal_tokenized_ids(exp):
    plain = prepare_data(load_config(exp["yaml"], ["data.cache=false"]))["encoded"]
    cold = prepare_data(load_config(exp["yaml"]))["encoded"]
    assert len(cache_files(exp["default_cache"])) == 3  # train, valid, test
    warm = prepare_data(load_config(exp["yaml"]))["encoded"]
    assert cold == plain and warm == plain
    token_ids, _ = warm["train"]
    assert isinstance(token_ids[0], list) and isinstance(token_ids[0][0], int)


def test_second_call_does_not_tokenize(exp, monkeypatch):
    first = prepare_data(load_config(exp["yaml"]))["encoded"]

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized although the cache holds these ids")

    monkeypatch.setattr(prepare, "encode_examples", no_tokenizing)
    assert prepare_data(load_config(exp["yaml"], ["seed=7", "train.lr=1e-5"]))["encoded"] == first


def changed_vocab(exp):
    path = str(exp["tmp"] / "vocab_more.txt")
    shutil.copy(exp["ckpt"]["vocab"], path)
    with open(path, "a", encoding="utf-8") as f:
        f.write("extra\n")
    return ["encoder.vocab=" + path]


def changed_test_text(exp):
    with open(exp["data"]["test"], encoding="utf-8") as f:
        text = f.read()
    with open(exp["data"]["test"], "w", encoding="utf-8") as f:
        f.write(text.replace("地址 59 路", "地址 59 街"))
    return []


CHANGES = {
    "max_len": lambda exp: ["data.max_len=16"],
    "truncation": lambda exp: ["data.truncation=tail"],
    "truncation2": lambda exp: ["data.truncation2=head"],
    "head_ratio": lambda exp: ["data.head_ratio=0.5"],
    "lowercase": lambda exp: ["data.lowercase=false"],
    "vocab": changed_vocab,
    "field": lambda exp: ["data.text2=[]"],
    "clean_patterns": lambda exp: ["data.clean_patterns=[路]"],
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_key_follows_what_the_ids_depend_on(exp, change):
    prepare_data(load_config(exp["yaml"]))
    before = cache_files(exp["default_cache"])
    prepare_data(load_config(exp["yaml"], CHANGES[change](exp)))
    after = cache_files(exp["default_cache"])
    assert len(after) == 6 and set(before) < set(after)  # three new keys, the old files untouched


def test_a_changed_text_changes_only_its_split(exp):
    prepare_data(load_config(exp["yaml"]))
    changed_test_text(exp)
    prepare_data(load_config(exp["yaml"]))
    assert len(cache_files(exp["default_cache"])) == 4


def test_seed_lr_and_output_keep_the_key(exp, tmp_path):
    prepare_data(load_config(exp["yaml"]))
    before = cache_files(exp["default_cache"])
    prepare_data(load_config(exp["yaml"], ["seed=3", "train.lr=1e-5", "train.epochs=9",
                                           "data.cache_dir=" + exp["default_cache"]]))
    assert cache_files(exp["default_cache"]) == before


def test_key_of_texts_is_unambiguous():
    def key(text1, text2=None):
        return tc.cache_key("tok", Examples(text1, text2, None, "x", []), 32, "head", 0.25, None)

    assert key(["ab", "c"]) != key(["a", "bc"])
    assert key(["a"]) != key(["a"], [""])
    assert key(["a"], ["b"]) != key(["a", "b"])
    assert key(["a"]) == key(["a"])
    # Equivalent spellings of one setting share an entry.
    assert key(["a"]) == tc.cache_key("tok", Examples(["a"], None, None, "x", []), 32, "head", 0.25, "head")


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "other_key", "wrong_rows"])
def test_damaged_file_is_recomputed_and_overwritten(exp, damage):
    expected = prepare_data(load_config(exp["yaml"]))["encoded"]
    files = sorted(glob.glob(os.path.join(exp["default_cache"], "*.npz")))
    contents = []
    for path in files:
        with open(path, "rb") as f:
            contents.append(f.read())
    for i, (path, content) in enumerate(zip(files, contents)):
        if damage == "other_key":  # each file holds the next one's ids (copied under a wrong name)
            with open(path, "wb") as f:
                f.write(contents[(i + 1) % len(files)])
            continue
        if damage == "wrong_rows":
            with np.load(path) as stored:
                arrays = dict(stored)
            arrays["offsets"] = arrays["offsets"][:-1]
            np.savez(path[:-len(".npz")], **arrays)
            continue
        with open(path, "wb") as f:
            f.write({"truncated": content[:len(content) // 2], "empty": b"",
                     "garbage": b"not a zip file at all"}[damage])
    assert prepare_data(load_config(exp["yaml"]))["encoded"] == expected
    for path in files:  # overwritten with good files
        key = os.path.basename(path)[:-len(".npz")]
        with np.load(path) as stored:
            assert str(stored["key"]) == key
    assert not glob.glob(os.path.join(exp["default_cache"], "*.tmp"))


def test_cache_false_writes_nothing(exp):
    cache_dir = str(exp["tmp"] / "my_cache")
    prepare_data(load_config(exp["yaml"], ["data.cache=false", "data.cache_dir=" + cache_dir]))
    assert not os.path.exists(cache_dir)
    assert not os.path.exists(os.path.dirname(exp["default_cache"]))


def test_cache_dir_is_used(exp):
    cache_dir = str(exp["tmp"] / "my_cache")
    prepare_data(load_config(exp["yaml"], ["data.cache_dir=" + cache_dir]))
    assert len(cache_files(cache_dir)) == 3
    assert not os.path.exists(exp["default_cache"])


def test_failed_write_warns_and_leaves_no_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tc.os, "replace", refuse)
    with pytest.warns(UserWarning, match="token cache not written"):
        ids = tc.cached_encode(str(tmp_path), "k", 2, lambda: ([[2, 5, 3], [2, 3]], [[0, 0, 0], [0, 0]]))
    assert ids == ([[2, 5, 3], [2, 3]], [[0, 0, 0], [0, 0]])
    assert os.listdir(str(tmp_path)) == []


def test_round_trip_keeps_empty_rows(tmp_path):
    ids = ([[2, 7, 3], [], [2, 3]], [[0, 1, 1], [], [0, 0]])
    assert tc.cached_encode(str(tmp_path), "k", 3, lambda: ids) == ids
    assert tc.cached_encode(str(tmp_path), "k", 3, lambda: pytest.fail("recomputed")) == ids


def test_config_hash_ignores_cache_keys(exp):
    config = load_config(exp["yaml"])
    base = config_hash(config)
    assert config_hash(load_config(exp["yaml"], ["data.cache=false", "data.cache_dir=elsewhere"])) == base
    # The hash of a config from before the cache keys existed: run folders keep their names.
    older = dict(config, data={k: v for k, v in config["data"].items() if k not in ("cache", "cache_dir")})
    assert config_hash(older) == base
    assert config_hash(load_config(exp["yaml"], ["data.max_len=16"])) != base


@pytest.mark.parametrize("override, fragment", [
    ("data.cache=maybe", "data.cache must be true or false"),
    ("data.cache_dir=3", "data.cache_dir must be a path or null"),
    ("data.cache_dir=''", "data.cache_dir must be a path or null"),
])
def test_bad_cache_keys_are_named(exp, override, fragment):
    with pytest.raises(XtuneError) as info:
        load_config(exp["yaml"], [override])
    assert fragment in str(info.value)
