"""The write-up's generalization tests: BERT frozen or fine-tuned x validation data from the same
source as the training data or from another one (its ``bert_texcnn_Realmutil_mlps_Gtest_v1..v4``).

A generalization file (see ``experiments/generalize/write_up_gtest.yaml``)::

    base: ../bert_texcnn_Realmutil_mlps_Gtest_v1.yaml   # relative to this file
    other_valid: data/appeals/valid_other_source.csv    # like data.* paths: from the working dir
    seeds: [0, 1, 2]                                     # or: xtune generalize FILE --seeds N
    epochs: null                                         # null: the base experiment's
    names: [Gtest_v1, Gtest_v2, Gtest_v3, Gtest_v4]      # optional, in the order below

The four runs, in the write-up's order: (frozen, same source), (frozen, other source),
(fine-tuned, same source), (fine-tuned, other source). The same-source validation set is the
base experiment's own (``data.valid``, or the split of the training file). One table, with the
freezing and homology columns beside the usual mean and variance.
"""
import json
import os

from xtune_keras.schema import load_config
from xtune_keras.errors import XtuneError
from xtune_keras.experiments.report import METRIC_HEADER, format_markdown, metric_cells
from xtune_keras.experiments.sweep import execute_runs, planned_runs, read_sweep_file, report_ablation

GENERALIZE_KEYS = ("base", "other_valid", "seeds", "epochs", "names")
# (encoder frozen, validation from the training data's source), Gtest_v1..v4
CELLS = ((True, True), (True, False), (False, True), (False, False))


def load_generalization(path, seeds=None, other_valid=None):
    """The four runs as an ablation (see sweep.load_ablation) plus the frozen/same-source cells."""
    raw = _read(path)
    base = os.path.join(os.path.dirname(os.path.abspath(path)), raw["base"])
    names = raw.get("names") or default_names(load_config(base)["name"])
    if len(names) != len(CELLS):
        raise XtuneError("%s: 'names' needs %d entries (frozen/same, frozen/other, tuned/same, tuned/other)"
                         % (path, len(CELLS)))
    other = other_valid or raw["other_valid"]
    if not os.path.isfile(other):
        raise XtuneError("%s: other_valid: file not found: %s" % (path, other))
    variants = []
    for name, (frozen, same) in zip(names, CELLS):
        overrides = ["encoder.freeze=%s" % json.dumps(frozen)]
        if not same:
            overrides.append("data.valid=%s" % json.dumps(other))
        variants.append((name, overrides))
    return {"path": path, "base": base, "epochs": raw.get("epochs"),
            "seeds": list(range(seeds)) if seeds is not None else list(raw.get("seeds") or [0]),
            "variants": variants, "parts": {}, "cells": dict(zip(names, CELLS))}


def _read(path):
    raw = read_sweep_file(path, "generalization", GENERALIZE_KEYS)
    for key in ("base", "other_valid"):
        if not raw.get(key):
            raise XtuneError("%s: missing key '%s'" % (path, key))
    return raw


def default_names(base_name):
    return ["%s_%s_%s" % (base_name, "frozen" if frozen else "tuned", "same" if same else "other")
            for frozen, same in CELLS]


def run_generalize(path, seeds=None, extra_overrides=(), other_valid=None, echo=True, **backend):
    """Train the four cells (finished runs are skipped) and write the generalization table."""
    plan = load_generalization(path, seeds, other_valid)
    fixed = [o for o in extra_overrides if o.split("=", 1)[0] in ("data.valid", "encoder.freeze")]
    if fixed:
        raise XtuneError("%s: '%s' would undo a cell of the test; set data.valid in the base experiment "
                         "and other_valid in this file (or --other-valid)" % (path, fixed[0]))
    runs = planned_runs(plan, extra_overrides)
    execute_runs(plan["base"], runs, echo=echo, **backend)
    rows, tables = report_ablation(plan, runs)
    for row in rows:
        row["bert_frozen"], row["same_source"] = plan["cells"][row["variant"]]
    tables["generalization"] = os.path.join(os.path.dirname(tables["md"]), "generalization.md")
    with open(tables["generalization"], "w", encoding="utf-8") as f:
        f.write(generalization_table(rows))
    return rows, tables


def generalization_table(rows):
    """The write-up's table: index, bert freezing, data homology, best result (mean, variance)."""
    header = ["index", "bert freezing", "data homology", "runs"] + METRIC_HEADER
    return format_markdown(header, [[row["variant"], str(row["bert_frozen"]), str(row["same_source"]),
                                     str(row["runs"])] + metric_cells(row) for row in rows])
