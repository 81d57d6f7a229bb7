"""Token ids cached on disk, so the variants and seeds of an ablation tokenize each split once.

One ``<key>.npz`` per split holds the flattened token and segment ids and the row offsets. The
key hashes everything the ids depend on: the texts themselves (after column selection, joining
and ``clean_patterns``, so the data file, the fields, the cleaning and the train/valid split are
all covered at once), the tokenizer (vocab file bytes, lowercase flag, bert4keras and Unicode
versions), ``max_len``, the truncation rules, ``head_ratio`` and :data:`FORMAT_VERSION`.
"""
import hashlib
import itertools
import json
import os
import tempfile
import unicodedata
import warnings

import bert4keras
import numpy as np

import xtune_keras

# Bump when the file layout or the way truncation.py turns texts into ids changes: old files
# then simply stop matching (they are never read again).
FORMAT_VERSION = 1


def tokenizer_id(vocab_path, lowercase):
    """Hash of what decides how text becomes word pieces: the vocab's bytes, lowercasing, and the
    code that applies them (bert4keras's tokenizer normalises with the running Unicode tables)."""
    digest = hashlib.sha256()
    with open(vocab_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    parts = (digest.hexdigest(), bool(lowercase), bert4keras.__version__, unicodedata.unidata_version)
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def cache_key(tok_id, examples, max_len, truncation, head_ratio, truncation2):
    """Hex key of one split's ids under these settings."""
    settings = {
        "format": FORMAT_VERSION, "xtune": xtune_keras.__version__, "tokenizer": tok_id,
        "max_len": int(max_len), "truncation": truncation,
        # encode_pair reads a missing truncation2 as "same as truncation": one entry for both.
        "truncation2": truncation2 or truncation,
        "head_ratio": float(head_ratio),  # 1 and 1.0 from YAML are the same setting
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8"))
    _hash_texts(digest, examples.text1)
    # A marker, so that "no text2" and "text2 of empty strings" cannot collide.
    digest.update(b"\x00text2:" + (b"none" if examples.text2 is None else b"list"))
    _hash_texts(digest, examples.text2 or ())
    return digest.hexdigest()


def _hash_texts(digest, texts):
    # Each text as a JSON string: quoted and escaped, so ["ab", "c"] and ["a", "bc"] differ.
    digest.update(b"\x00%d\x00" % len(texts))
    for text in texts:
        digest.update(json.dumps(text, ensure_ascii=False).encode("utf-8"))


def cached_encode(cache_dir, key, count, encode):
    """``encode()``'s ``(token_ids, segment_ids)``, read from ``cache_dir/<key>.npz`` when a
    readable file of ``count`` rows is there, else computed and stored."""
    path = os.path.join(cache_dir, key + ".npz")
    loaded = load_ids(path, key, count) if os.path.exists(path) else None
    if loaded is not None:
        return loaded
    token_ids, segment_ids = encode()
    save_ids(path, key, token_ids, segment_ids)
    return token_ids, segment_ids


def load_ids(path, key, count):
    """The stored ids, or None when the file is damaged or is not this key's (then recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key or len(stored["offsets"]) != count + 1:
                return None
            offsets, tokens, segments = stored["offsets"], stored["token_ids"], stored["segment_ids"]
    except Exception:  # a cut-off zip raises BadZipFile, EOFError, ValueError, OSError, KeyError...
        return None
    if offsets[-1] != len(tokens) or len(tokens) != len(segments):
        return None
    return _unflatten(tokens, offsets), _unflatten(segments, offsets)


def save_ids(path, key, token_ids, segment_ids):
    """Write atomically: a temporary file in the same folder, then ``os.replace``. Parallel runs
    of the same key each replace the file with identical content, and a run killed mid-write
    leaves only a stray ``.tmp``, never a half-written ``.npz``."""
    lengths = np.fromiter((len(ids) for ids in token_ids), np.int64, len(token_ids))
    # int64 offsets: int32 would overflow silently past 2**31 tokens in one split.
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".%s." % key, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, key=np.array(key), offsets=offsets, token_ids=_flatten(token_ids, offsets),
                         segment_ids=_flatten(segment_ids, offsets))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as exc:  # a read-only or full disk costs the cache, not the run
        warnings.warn("token cache not written to %s (%s)" % (path, exc), stacklevel=2)


def _flatten(rows, offsets):
    return np.fromiter(itertools.chain.from_iterable(rows), np.int32, int(offsets[-1]))


def _unflatten(flat, offsets):
    # Python lists of ints, exactly what encode_examples returns.
    values = flat.tolist()
    return [values[start:end] for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
