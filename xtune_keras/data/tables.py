"""Reading labelled text tables (csv, tsv, jsonl, json, xlsx) into :class:`Examples`.

Every problem with a user's file becomes an :class:`XtuneError` whose one-line message names the
file and the data row (and, for text files, the line), so a typo in row 12,000 can be found.
"""
import json
import numbers
import os
import re
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from xtune_keras.errors import XtuneError
from xtune_keras.data.readers import WHERE_ATTR, _cell_text, read_table

DEFAULT_THRESHOLD = 0.5


# --------------------------------------------------------------------------- examples


@dataclass
class Examples:
    """Texts and labels of one file; ``rows`` are 1-based data row numbers for error messages."""

    text1: List[str]
    text2: Optional[List[str]]
    labels: Optional[List[List[str]]]
    source: str
    rows: List[int]

    def __len__(self):
        return len(self.text1)

    def subset(self, indices):
        indices = [int(i) for i in indices]
        return Examples(
            text1=[self.text1[i] for i in indices],
            text2=None if self.text2 is None else [self.text2[i] for i in indices],
            labels=None if self.labels is None else [self.labels[i] for i in indices],
            source=self.source,
            rows=[self.rows[i] for i in indices],
        )

    def row_name(self, index):
        """``"data.csv row 3"`` for the example at ``index``."""
        return "%s row %d" % (self.source, self.rows[index])


def load_examples(path, text1, text2=(), label=None, multi_label=True, label_sep="|",
                  clean_patterns=(), require_labels=True):
    """Texts (columns joined by a space, cleaned) and labels of the table at ``path``."""
    text1, text2 = _column_list(text1, "data.text1"), _column_list(text2, "data.text2")
    table = read_table(path)
    for key, columns in (("data.text1", text1), ("data.text2", text2), ("data.label", [label] if label else [])):
        for column in columns:
            if column not in table.columns:
                raise XtuneError(
                    "%s: missing column %r (columns: %s), named by %s"
                    % (path, column, ", ".join(map(str, table.columns)), key)
                )
    patterns = _compile_patterns(clean_patterns)
    where = table.attrs.get(WHERE_ATTR) or [None] * len(table)
    rows = list(range(1, len(table) + 1))
    places = [_place(path, row, spot) for row, spot in zip(rows, where)]
    first = [_joined_text(table, i, text1, patterns) for i in range(len(table))]
    for place, text in zip(places, first):
        if not text:
            raise XtuneError(
                "%s: empty text in data.text1 (columns %s, after data.clean_patterns)"
                % (place, ", ".join(text1))
            )
    second = [_joined_text(table, i, text2, patterns) for i in range(len(table))] if text2 else None
    labels = None
    if label:
        labels = [
            _parse_label(table[label].iat[i], place, label, multi_label, label_sep, require_labels)
            for i, place in enumerate(places)
        ]
    return Examples(text1=first, text2=second, labels=labels, source=str(path), rows=rows)


def _column_list(columns, key):
    if columns is None:
        return []
    if isinstance(columns, str):
        return [columns]
    columns = list(columns)
    if not all(isinstance(column, str) and column for column in columns):
        raise XtuneError("%s: expected a column name or a list of column names, got %r" % (key, columns))
    return columns


def _compile_patterns(patterns):
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for pattern in patterns or ():
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise XtuneError("data.clean_patterns: bad regular expression %r (%s)" % (pattern, exc))
    return compiled


def _place(path, row, where):
    return "%s row %d (%s)" % (path, row, where) if where else "%s row %d" % (path, row)


def _joined_text(table, index, columns, patterns):
    parts = [_cell_text(table[column].iat[index]) for column in columns]
    return _cleaned(" ".join(part for part in parts if part), patterns)


def _cleaned(text, patterns):
    for pattern in patterns:
        # A space, not "": removing a template must not glue the words around it together.
        text = pattern.sub(" ", text)
    return " ".join(text.split())


def column_texts(path, column):
    """Every row's text of one ``column`` of the table at ``path``, as ``load_examples`` reads it (empty ones too)."""
    table = read_table(path)
    if column not in table.columns:
        raise XtuneError("%s: missing column %r (columns: %s)" % (path, column, ", ".join(map(str, table.columns))))
    return [_joined_text(table, i, [column], ()) for i in range(len(table))]


def examples_from_texts(text1, text2=None, clean_patterns=(), source="request"):
    """Examples of already joined texts (a server's request), cleaned as ``load_examples`` cleans
    a table's cells; no labels."""
    patterns = _compile_patterns(clean_patterns)
    first = [_cleaned(text, patterns) for text in text1]
    second = None if text2 is None else [_cleaned(text, patterns) for text in text2]
    return Examples(text1=first, text2=second, labels=None, source=source, rows=list(range(1, len(first) + 1)))


def _parse_label(cell, place, column, multi_label, label_sep, require_labels):
    names = _label_names(cell, label_sep) if multi_label else _single_label(cell, place, column)
    if not names and require_labels:
        raise XtuneError("%s: empty label in column %r (data.label)" % (place, column))
    return names


def _label_names(cell, label_sep):
    if isinstance(cell, (list, tuple)):
        values = [_cell_text(value) for value in cell]
    else:
        text = _cell_text(cell)
        values = _json_list(text)
        if values is None:
            values = text.split(label_sep) if label_sep else [text]
    # dict.fromkeys: a label repeated in one cell counts once, first order kept.
    return list(dict.fromkeys(value.strip() for value in values if value.strip()))


def _json_list(text):
    # '["a", "b"]' is how pandas/Excel users often store lists; anything else is a plain label
    # text (a label name may itself start with "[").
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return [_cell_text(item) for item in value] if isinstance(value, list) else None


def _single_label(cell, place, column):
    names = _label_names(cell, label_sep=None) if isinstance(cell, (list, tuple)) else None
    if names is None:
        text = _cell_text(cell)
        return [text] if text else []
    if len(names) > 1:
        raise XtuneError(
            "%s: %d labels in column %r but data.multi_label is false" % (place, len(names), column)
        )
    return names


def split_examples(examples, valid_ratio, seed):
    """A seeded random (train, valid) split; both keep file order; neither is empty."""
    if isinstance(valid_ratio, bool) or not isinstance(valid_ratio, numbers.Real) or not 0 < valid_ratio < 1:
        raise XtuneError("data.valid_ratio: must be a number between 0 and 1 (exclusive), got %r" % (valid_ratio,))
    count = len(examples)
    if count < 2:
        raise XtuneError(
            "%s: %d row(s) cannot be split by data.valid_ratio (need at least 2)" % (examples.source, count)
        )
    valid_count = min(max(round(count * valid_ratio), 1), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    valid, train = sorted(order[:valid_count]), sorted(order[valid_count:])
    return examples.subset(train), examples.subset(valid)


# --------------------------------------------------------------------------- labels


class LabelVocab:
    """The ordered label names of a model: column j of the output layer is ``names[j]``."""

    def __init__(self, names):
        self.names = [str(name) for name in names]
        self._index = {}
        for position, name in enumerate(self.names):
            if name in self._index:
                raise XtuneError("labels: duplicate label %r" % name)
            self._index[name] = position

    @classmethod
    def from_label_lists(cls, *label_lists):
        """Sorted unique names of one or more lists of per-row label lists (None skipped)."""
        names = {name for labels in label_lists if labels for row in labels for name in row}
        if not names:
            raise XtuneError("data.label: no labels found (every label cell is empty)")
        return cls(sorted(names))

    def __len__(self):
        return len(self.names)

    def __eq__(self, other):
        return isinstance(other, LabelVocab) and self.names == other.names

    def __repr__(self):
        return "LabelVocab(%r)" % (self.names,)

    def encode(self, examples):
        """Multi-hot float32 targets ``[len(examples), len(self)]`` (one-hot for single labels)."""
        if examples.labels is None:
            raise XtuneError("%s: no labels to train on (set data.label)" % examples.source)
        targets = np.zeros((len(examples), len(self)), dtype=np.float32)
        for row, names in enumerate(examples.labels):
            for name in names:
                if name not in self._index:
                    raise XtuneError(
                        "%s: unknown label %r (the model knows %d labels, e.g. %s)"
                        % (examples.row_name(row), name, len(self), self._examples_of_names())
                    )
                targets[row, self._index[name]] = 1.0
        return targets

    def _examples_of_names(self, shown=5):
        more = ", ..." if len(self.names) > shown else ""
        return ", ".join(self.names[:shown]) + more

    def decode(self, probabilities, threshold=None, multi_label=True):
        """Label lists: every label above ``threshold`` (0.5; scalar or per label), or the argmax."""
        probabilities = np.asarray(probabilities)
        if multi_label:
            chosen = probabilities > np.asarray(DEFAULT_THRESHOLD if threshold is None else threshold)
            return [[self.names[j] for j in np.flatnonzero(row)] for row in chosen]
        return [[self.names[j]] for j in np.argmax(probabilities, axis=-1)]

    def to_json(self):
        """A JSON-ready dict ``{"labels": [...]}``."""
        return {"labels": list(self.names)}

    @classmethod
    def from_json(cls, value, source="labels"):
        """From :meth:`to_json`'s dict or its JSON text."""
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise XtuneError("%s: not valid JSON (%s)" % (source, exc))
        names = value.get("labels") if isinstance(value, dict) else None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise XtuneError('%s: expected {"labels": [names...]}' % source)
        return cls(names)

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=2)

    @classmethod
    def load(cls, path):
        if not os.path.isfile(path):
            raise XtuneError("%s: label file not found" % path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise XtuneError("%s: not UTF-8 (%s)" % (path, exc))
        return cls.from_json(text, source=path)
