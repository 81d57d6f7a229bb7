"""The corpus of further pretraining: documents from text files, tables or an experiment's splits,
tokenized once into packed blocks on disk and read back memory-mapped.

A text file holds one document per line (empty lines skipped). A table (csv, tsv, jsonl, json,
xlsx, parquet) gives one document per row, its ``corpus.columns`` joined by a space. With
``corpus.from_experiment`` the documents are the text1 + text2 fields of the experiment's
``corpus.splits``. Text files are streamed line by line and blocks are appended to the cache as
they fill, so memory stays flat however large the corpus; the cache key is the content of every
source, the vocabulary, the segmenter and the block length.
"""
import codecs
import hashlib
import json
import os
import shutil

import numpy as np

from xtune_keras.data.masking import SPECIAL, BlockPacker, tokenize_document
from xtune_keras.errors import XtuneError

TEXT_EXTENSIONS = (".txt", ".text", "")
CHUNK = 1 << 20


def documents(corpus):
    """Every document of the corpus, as text, in source order."""
    for path in corpus["files"]:
        if os.path.splitext(path)[1].lower() in TEXT_EXTENSIONS:
            yield from _text_lines(path)
        else:
            yield from _table_rows(path, corpus["columns"])
    if corpus["from_experiment"]:
        yield from _experiment_texts(corpus["from_experiment"], corpus["splits"])


def _text_lines(path):
    if not os.path.isfile(path):
        raise XtuneError("%s: corpus file not found" % path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError as exc:
                raise XtuneError("%s line %d: not UTF-8 text (byte %d of the line)" % (path, number, exc.start))
            text = " ".join(line.split())
            if text:
                yield text


def _table_rows(path, columns):
    import pandas as pd

    if path.lower().endswith(".parquet"):
        if not os.path.isfile(path):
            raise XtuneError("%s: corpus file not found" % path)
        frame = pd.read_parquet(path)
    else:
        from xtune_keras.data.readers import read_table

        frame = read_table(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise XtuneError("%s: no column %r (corpus.columns); columns: %s"
                         % (path, missing[0], ", ".join(map(str, frame.columns))))
    for values in frame[list(columns)].itertuples(index=False):
        text = " ".join(" ".join(str(v).split()) for v in values if isinstance(v, str) or pd.notna(v))
        if text.strip():
            yield text


def _experiment_texts(experiment, splits):
    from xtune_keras.data.prepare import load_splits
    from xtune_keras.schema import load_config

    data = load_config(experiment)["data"]
    loaded = load_splits(data)
    for split in splits:
        if split not in loaded:
            raise XtuneError("corpus.splits: no split %r in %s; splits: train, valid, test" % (split, experiment))
        if loaded[split] is None:
            raise XtuneError("corpus.splits: %s has no %s file" % (experiment, split))
        examples = loaded[split]
        for i in range(len(examples)):
            yield " ".join(t for t in (examples.text1[i], examples.text2[i] if examples.text2 else "") if t)


def source_digest(corpus):
    """Content hash of every source (streamed), for the cache key."""
    digest = hashlib.sha1()
    for path in corpus["files"] + ([corpus["from_experiment"]] if corpus["from_experiment"] else []):
        if not os.path.isfile(path):
            raise XtuneError("%s: corpus file not found" % path)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
    digest.update(json.dumps([corpus["columns"], corpus["splits"]]).encode())
    return digest.hexdigest()


class BlockCache:
    """``ids.int32`` (token ids) and ``words.int32`` (word ids), raw ``[blocks, max_len]`` int32
    arrays written as the blocks fill, plus ``shape.json``; read back memory-mapped, so neither
    writing nor training holds the corpus in memory."""

    def __init__(self, directory, key):
        self.path = os.path.join(directory, key)

    def ready(self):
        return os.path.isfile(os.path.join(self.path, "shape.json"))

    def load(self):
        with open(os.path.join(self.path, "shape.json"), encoding="utf-8") as f:
            shape = tuple(json.load(f))
        return tuple(np.memmap(os.path.join(self.path, name), dtype=np.int32, mode="r", shape=shape)
                     for name in ("ids.int32", "words.int32"))

    def write(self, blocks, max_len):
        """Stream ``(ids, words)`` blocks to disk; returns the block count."""
        tmp = self.path + ".tmp"
        os.makedirs(tmp, exist_ok=True)
        count = 0
        with open(os.path.join(tmp, "ids.int32"), "wb") as ids_file, \
                open(os.path.join(tmp, "words.int32"), "wb") as words_file:
            for ids, words in blocks:
                ids_file.write(_padded(ids, max_len, 0).tobytes())
                words_file.write(_padded(words, max_len, SPECIAL).tobytes())
                count += 1
        if count == 0:
            shutil.rmtree(tmp)
            return 0
        with open(os.path.join(tmp, "shape.json"), "w", encoding="utf-8") as f:
            json.dump([count, max_len], f)
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(tmp, self.path)
        return count


def _padded(values, length, fill):
    out = np.full(length, fill, dtype=np.int32)
    out[:len(values)] = values
    return out


def packed_blocks(texts, tokenizer, segmenter, max_len):
    """``(ids, words)`` blocks of the documents, packed (see ``BlockPacker``)."""
    packer = BlockPacker(max_len, tokenizer._token_start_id, tokenizer._token_end_id)
    for text in texts:
        ids, words = tokenize_document(tokenizer, text, segmenter)
        if ids:
            yield from packer.add(ids, words)
    last = packer.flush()
    if last is not None:
        yield last


def tokenized_corpus(corpus, masking, tokenizer, tokenizer_key, cache_dir):
    """``(block ids, word ids)`` of the corpus, memory-mapped from the cache (built if missing)."""
    key = hashlib.sha1(json.dumps([source_digest(corpus), tokenizer_key, masking["segmenter"],
                                   masking["max_len"]]).encode()).hexdigest()[:16]
    cache = BlockCache(cache_dir, key)
    if not cache.ready():
        count = cache.write(packed_blocks(documents(corpus), tokenizer, masking["segmenter"], masking["max_len"]),
                            masking["max_len"])
        if count == 0:
            raise XtuneError("%s: the corpus has no usable line (every document is empty after tokenizing)"
                             % ", ".join(corpus["files"] + [corpus["from_experiment"] or ""]).strip(", "))
    return cache.load()
