"""``xtune export``: a trained ``.h5`` as a TensorFlow SavedModel that takes raw text.

The SavedModel needs neither xtune_keras nor bert4keras: the tokenizer, the truncation rule and
the decision rule are TensorFlow ops in the graph (tensorflow-text supplies the regex splitter
and the WordPiece op, so a loading process runs ``import tensorflow_text`` first, and TF Serving
needs a build with the tf-text ops).

Signatures (every output has the batch as its first dimension, so TF Serving's row format works):

- ``serving_default(text1, text2)``: tf.string ``[batch]`` each. ``text1`` and ``text2`` are the
  joined cells of ``data.text1`` / ``data.text2`` (columns joined by a space). ``text2`` must be
  fed; an empty string means no second segment. A model trained without ``data.text2`` ignores it.
- ``from_ids(token_ids, segment_ids)``: int32 ``[batch, len]``, already tokenized and padded (0).
- ``tokenize(text1, text2)``: the ``token_ids`` / ``segment_ids`` that ``serving_default`` feeds
  the model (for checking a client's own tokenization).

The first two return ``probabilities`` (float32 ``[batch, labels]``, the stored activation of the
logits), ``decisions`` (int32 ``[batch, labels]``, 1 = label chosen: probability > threshold, or the
argmax for single-label models), ``labels`` (tf.string ``[batch]``, the chosen names joined with
``label_sep``) and ``logits`` (float32). Column order is ``label_names`` in
``assets.extra/xtune_meta.json`` (also the variable ``label_names`` after ``tf.saved_model.load``).

Tokenization is bert4keras's ``Tokenizer`` rebuilt from tf.strings / tensorflow-text ops, with its
character classes enumerated from the same predicates (and Python's unicodedata) at export time.
tensorflow-text's ``BertTokenizer(lower_case=True)`` is not used as is: it NFKC-case-folds, which
turns full-width punctuation such as "，" into "," and would change token ids of Chinese text.
A model trained on a SentencePiece encoder (``xtune convert-e5``) exports its ``spm.model`` instead:
tensorflow-text's ``SentencepieceTokenizer`` runs that very model proto (normalizer included), as
the SentencePiece library does for bert4keras's ``SpTokenizer``; a copy lies in ``assets.extra``.
"""
import functools
import json
import os
import re
import shutil
import tempfile
import types
import unicodedata

import numpy as np
import tensorflow as tf  # xtune_keras/__init__ ran first: TF_USE_LEGACY_KERAS is set

from xtune_keras.model.encoders import SentencePieceTokenizer, SentencePieceVocab
from xtune_keras.errors import XtuneError
from xtune_keras.train.metrics import ACTIVATIONS
from xtune_keras.data.truncation import CLS, SEP, STRATEGIES

EXTRA_DIR = "assets.extra"
META_FILE = "xtune_meta.json"
VOCAB_FILE = "vocab.txt"
SPM_FILE = "spm.model"  # a SentencePiece model's copy in assets.extra (for clients; the graph has its own)
EXPORT_FORMAT = 1
UNK = "[UNK]"
PAD_ID = 0  # bert4keras's sequence_padding pads with 0, as in training
WORD_MAXLEN = 200  # bert4keras Tokenizer's word_maxlen: a longer word is one [UNK]
MAX_UTF8_BYTES = 4
SIGNATURES = ("serving_default", "from_ids", "tokenize")


def require_tensorflow_text():
    """tensorflow_text, imported (registers its ops); a one-line error when it is missing."""
    try:
        import tensorflow_text
    except ImportError as exc:
        raise XtuneError("SavedModel export needs tensorflow-text (%s); install it with: "
                         "pip install --no-deps \"tensorflow-text==2.21.*\"" % exc)
    return tensorflow_text


# --------------------------------------------------------------------------- character classes


def _re2_class(code_points, negate=False):
    """An RE2 character class of the given (sorted) code points, as ranges."""
    parts, start, previous = [], None, None
    for cp in list(code_points) + [None]:
        if start is not None and (cp is None or cp != previous + 1):
            parts.append("\\x{%X}" % start if start == previous else "\\x{%X}-\\x{%X}" % (start, previous))
            start = None
        if cp is not None and start is None:
            start = cp
        previous = cp
    return "[%s%s]" % ("^" if negate else "", "".join(parts))


def _all_characters():
    # Surrogates cannot occur in valid UTF-8 and RE2 refuses them in a class.
    return (chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)


@functools.lru_cache(maxsize=None)
def tokenizer_classes():
    """bert4keras ``Tokenizer._tokenize`` as four RE2 classes, from its own predicates.

    It looks at each character in this order: punctuation or CJK -> a token of its own; space ->
    separator; NUL, U+FFFD or control -> dropped; anything else is kept, and ``str.split()`` then
    also separates at the other Python whitespace (U+2028, U+2029). ``Mn`` (combining marks) is
    what ``lowercase_and_normalize`` strips after NFD.
    """
    from bert4keras.tokenizers import Tokenizer

    alone, separator, dropped, marks = [], [], [], []
    for ch in _all_characters():
        cp = ord(ch)
        if Tokenizer._is_punctuation(ch) or Tokenizer._is_cjk_character(ch):
            alone.append(cp)
        elif Tokenizer._is_space(ch):
            separator.append(cp)
        elif cp == 0 or cp == 0xFFFD or Tokenizer._is_control(ch):
            dropped.append(cp)
        elif ch.isspace():
            separator.append(cp)
        if unicodedata.category(ch) == "Mn":
            marks.append(cp)
    return {"alone": _re2_class(alone), "separator": _re2_class(separator),
            "dropped": _re2_class(dropped), "marks": _re2_class(marks)}


@functools.lru_cache(maxsize=None)
def python_re_classes():
    """Python's Unicode ``\\s``, ``\\d`` and ``\\w`` (RE2's are ASCII-only), as RE2 class bodies."""
    spaces, digits, word = [], [], []
    for ch in _all_characters():
        if ch.isspace():
            spaces.append(ord(ch))
        if ch.isdecimal():
            digits.append(ord(ch))
        if ch.isalnum() or ch == "_":
            word.append(ord(ch))
    return {"s": _re2_class(spaces)[1:-1], "d": _re2_class(digits)[1:-1], "w": _re2_class(word)[1:-1]}


# --------------------------------------------------------------------------- data.clean_patterns


def re2_pattern(pattern):
    """A Python ``re`` pattern rewritten for RE2 (tf.strings.regex_replace), or an XtuneError.

    ``\\d \\s \\w`` (and ``\\D \\S \\W`` outside brackets) become the Unicode classes Python
    uses; ``\\Z`` becomes ``\\z``. Refused: ``\\b``/``\\B`` (RE2's are ASCII-only), ``\\D \\S \\W``
    inside brackets, patterns that match the empty string (Python and RE2 place empty matches
    differently), and whatever RE2 cannot compile (lookaround, backreferences).
    """
    compiled = re.compile(pattern)
    if compiled.search("") is not None:
        raise _pattern_error(pattern, "it matches the empty string")
    if compiled.flags & re.ASCII:
        return pattern  # (?a): Python's classes are ASCII too, like RE2's
    classes = python_re_classes()
    out, i, bracket_start = [], 0, None  # bracket_start: index of the open "[", None outside
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(_re2_escape(pattern, pattern[i + 1], bracket_start is not None, classes))
            i += 2
            continue
        if bracket_start is None and ch == "[":
            bracket_start = i
        elif bracket_start is not None and ch == "]" and not _opens_class_body(pattern, bracket_start, i):
            bracket_start = None
        out.append(ch)
        i += 1
    return "".join(out)


def _opens_class_body(pattern, start, i):
    # "]" right after "[" or "[^" is a literal in Python, not the end of the class.
    return pattern[start + 1:i] in ("", "^")


def _re2_escape(pattern, letter, in_brackets, classes):
    if letter in "dsw":
        return classes[letter] if in_brackets else "[%s]" % classes[letter]
    if letter in "DSW":
        if in_brackets:
            raise _pattern_error(pattern, "\\%s inside [...] has no RE2 equivalent" % letter)
        return "[^%s]" % classes[letter.lower()]
    if letter in "bB":
        raise _pattern_error(pattern, "RE2's \\%s knows only ASCII words" % letter)
    if letter == "Z":
        return "\\z"
    return "\\" + letter


def _pattern_error(pattern, why):
    return XtuneError("data.clean_patterns: %r cannot run inside the SavedModel: %s" % (pattern, why))


def graph_clean_patterns(patterns):
    """The model's clean patterns as RE2 patterns, each checked by compiling it once."""
    if isinstance(patterns, str):
        patterns = [patterns]
    converted = []
    for pattern in patterns or ():
        rewritten = re2_pattern(pattern)
        try:
            tf.strings.regex_replace(tf.constant([""]), rewritten, " ")
        except (tf.errors.OpError, ValueError) as exc:
            raise _pattern_error(pattern, str(exc).splitlines()[0])
        converted.append(rewritten)
    return converted


def prepare_texts(texts, re2_patterns):
    """``data._joined_text`` after the join: clean patterns -> " ", then ``" ".join(text.split())``."""
    for pattern in re2_patterns:
        texts = tf.strings.regex_replace(texts, pattern, " ")
    spaces = "[%s]+" % python_re_classes()["s"]
    texts = tf.strings.regex_replace(texts, spaces, " ")
    return tf.strings.regex_replace(texts, "^ | $", "")


# --------------------------------------------------------------------------- tokenizer


def vocab_lines(token_dict):
    """Tokens in id order, for vocab.txt; the line number is the id, so ids must be 0..n-1."""
    ordered = sorted(token_dict.items(), key=lambda item: item[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise XtuneError("model vocabulary: token ids are not 0..%d without gaps" % (len(ordered) - 1))
    if any("\n" in token or "\r" in token for token, _ in ordered):
        raise XtuneError("model vocabulary: a token contains a line break")
    for special in (CLS, SEP, UNK):
        if special not in token_dict:
            raise XtuneError("model vocabulary: %s is missing" % special)
    return [token for token, _ in ordered]


class GraphTokenizer(tf.Module):
    """bert4keras ``Tokenizer(token_dict, do_lower_case)`` as TensorFlow ops.

    ``vocab`` is vocab.txt (a path or a ``tf.saved_model.Asset``) whose line numbers are the ids
    of ``token_dict``.
    """

    def __init__(self, vocab, token_dict, lowercase):
        super().__init__(name="tokenizer")
        text = require_tensorflow_text()
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(vocab, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                          tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER),
            default_value=-1)
        self.table = table
        # token_ids() deals with words over WORD_MAXLEN characters itself, so the byte limit must
        # let through every shorter word (4 bytes a character at most) and every vocabulary token.
        longest_token = max(len(token.encode("utf-8")) for token in token_dict)
        self.wordpiece = text.WordpieceTokenizer(
            table, suffix_indicator="##", max_bytes_per_word=max(MAX_UTF8_BYTES * WORD_MAXLEN, longest_token),
            token_out_type=tf.int64, unknown_token=UNK, split_unknown_characters=False)
        self.lowercase = bool(lowercase)
        self.cls_id, self.sep_id = int(token_dict[CLS]), int(token_dict[SEP])
        self._classes = tokenizer_classes()
        self._regex_split = text.regex_split
        self._normalize_utf8 = text.normalize_utf8

    def lowercased(self, texts):
        """bert4keras ``lowercase_and_normalize``: lower(), NFD, combining marks (Mn) dropped."""
        # tf.strings.lower stops at a NUL. U+0001 takes its place: another control character,
        # so lower() treats it alike (it is not case-ignorable), and both are dropped later.
        texts = tf.strings.regex_replace(texts, "\\x00", "\x01")
        texts = self._normalize_utf8(tf.strings.lower(texts, encoding="utf-8"), "NFD")
        return tf.strings.regex_replace(texts, self._classes["marks"], "")

    def words(self, texts):
        """Words of each text (ragged [batch, (words)]), as ``Tokenizer._tokenize`` splits them."""
        classes = self._classes
        if self.lowercase:
            texts = self.lowercased(texts)
        texts = tf.strings.regex_replace(texts, classes["dropped"], "")
        delimiters = "%s+|%s" % (classes["separator"], classes["alone"])
        return self._regex_split(texts, delimiters, classes["alone"])

    def token_ids(self, texts):
        """Token ids without [CLS]/[SEP] (ragged int64 [batch, (tokens)]), like ``_bare_tokens``."""
        words = self.words(texts)
        flat = words.flat_values
        # bert4keras looks a word over WORD_MAXLEN characters up whole, without WordPiece: its id
        # if the vocabulary has it (WordPiece then keeps it whole too), else [UNK].
        too_long = tf.strings.length(flat, unit="UTF8_CHAR") > WORD_MAXLEN
        unknown_whole = too_long & (self.table.lookup(flat) < 0)
        words = words.with_flat_values(tf.where(unknown_whole, UNK, flat))
        return self.wordpiece.tokenize(words).merge_dims(1, 2)


class GraphSentencePieceTokenizer(tf.Module):
    """xtune's ``SentencePieceTokenizer`` (bert4keras ``SpTokenizer``) as TensorFlow ops.

    ``SpTokenizer`` maps ``encode_as_pieces`` through ``piece_to_id``, which is ``encode_as_ids``
    (an unknown piece maps to the unk id either way); tensorflow-text's op encodes ids with the
    same model proto. ``data.lowercase`` does not apply (build_tokenizer ignores it too).
    """

    def __init__(self, token_dict):
        super().__init__(name="tokenizer")
        text = require_tensorflow_text()
        python = SentencePieceTokenizer(token_dict.model_proto)  # [CLS]/[SEP] as training resolved them
        self.cls_id, self.sep_id = int(python.token_to_id(CLS)), int(python.token_to_id(SEP))
        self.sentencepiece = text.SentencepieceTokenizer(model=token_dict.model_proto, out_type=tf.int32)

    def token_ids(self, texts):
        """Token ids without [CLS]/[SEP] (ragged int64 [batch, (tokens)])."""
        return tf.cast(self.sentencepiece.tokenize(texts), tf.int64)


def graph_tokenizer(token_dict, vocab, lowercase):
    """The graph tokenizer that reproduces training's: SentencePiece or WordPiece (vocab.txt)."""
    if isinstance(token_dict, SentencePieceVocab):
        return GraphSentencePieceTokenizer(token_dict)
    return GraphTokenizer(vocab, token_dict, lowercase)


# --------------------------------------------------------------------------- truncation


def split_budgets(len1, len2, budget):
    """``truncation.split_budget`` row by row (int64 tensors)."""
    fits = len1 + len2 <= budget
    keep_shorter_whole = 2 * tf.minimum(len1, len2) <= budget
    first_is_shorter = len1 < len2
    half = budget // 2
    budget1 = tf.where(fits, len1, tf.where(
        keep_shorter_whole, tf.where(first_is_shorter, len1, budget - len2), budget - half))
    budget2 = tf.where(fits, len2, tf.where(
        keep_shorter_whole, tf.where(first_is_shorter, budget - len1, len2), half))
    return budget1, budget2


def truncate_rows(tokens, budgets, strategy, head_ratio):
    """``truncation.truncate`` row by row: keep a head count from the start and a tail count
    from the end of each ragged row."""
    lengths = tokens.row_lengths()
    if strategy == "head":
        head, tail = budgets, tf.zeros_like(budgets)
    elif strategy == "tail":
        head, tail = tf.zeros_like(budgets), budgets
    else:  # Python's round() and tf.round both round half to even
        head = tf.cast(tf.round(tf.cast(budgets, tf.float64) * float(head_ratio)), tf.int64)
        tail = budgets - head
    fits = lengths <= budgets
    head, tail = tf.where(fits, lengths, head), tf.where(fits, tf.zeros_like(tail), tail)
    rows = tokens.value_rowids()
    positions = tf.ragged.range(lengths).flat_values
    keep = (positions < tf.gather(head, rows)) | (positions >= tf.gather(lengths - tail, rows))
    return tf.ragged.boolean_mask(tokens, tokens.with_flat_values(keep))


def encode_pairs(tokens1, tokens2, has_second, max_len, strategy, head_ratio, cls_id, sep_id,
                 strategy2=None):
    """``truncation.encode_pair`` for a batch: padded int32 ``(token_ids, segment_ids)``.

    ``tokens2`` rows must be empty where ``has_second`` is false; ``strategy2`` (default:
    ``strategy``) truncates the second segment.
    """
    has_second = tf.cast(has_second, tf.int64)
    budget = max_len - 2 - has_second
    budget1, budget2 = split_budgets(tokens1.row_lengths(), tokens2.row_lengths(), budget)
    part1 = truncate_rows(tokens1, budget1, strategy, head_ratio)
    part2 = truncate_rows(tokens2, budget2, strategy2 or strategy, head_ratio)
    batch = tf.shape(has_second, out_type=tf.int64)[0]
    cls = _ragged_fill(cls_id, tf.ones([batch], tf.int64))
    sep = _ragged_fill(sep_id, tf.ones([batch], tf.int64))
    sep2 = _ragged_fill(sep_id, has_second)
    ids = tf.concat([cls, part1, sep, part2, sep2], axis=1)
    segments = tf.concat([tf.zeros_like(cls), tf.zeros_like(part1), tf.zeros_like(sep),
                          tf.ones_like(part2), tf.ones_like(sep2)], axis=1)
    return (tf.cast(ids.to_tensor(PAD_ID), tf.int32), tf.cast(segments.to_tensor(0), tf.int32))


def _ragged_fill(value, row_lengths):
    return tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(row_lengths)], tf.constant(value, tf.int64)), row_lengths)


# --------------------------------------------------------------------------- decisions


def graph_activation(name, logits64):
    """``metrics.ACTIVATIONS`` in float64, same formulas, so decisions match the .h5 path."""
    if name == "sigmoid":
        return 0.5 * (1.0 + tf.tanh(0.5 * logits64))
    z = tf.exp(logits64 - tf.reduce_max(logits64, axis=-1, keepdims=True))
    return z / tf.reduce_sum(z, axis=-1, keepdims=True)


def graph_decide(probs64, multi_label, threshold):
    """``metrics.decide``: above the threshold (scalar or per label), or the argmax."""
    if multi_label:
        return tf.cast(probs64 > tf.constant(threshold, tf.float64), tf.int32)
    return tf.one_hot(tf.argmax(probs64, axis=-1), tf.shape(probs64)[-1], dtype=tf.int32)


def joined_names(decisions, label_names, separator):
    """Chosen label names per row, joined with ``label_sep`` ("" when none)."""
    names = tf.broadcast_to(label_names, tf.shape(decisions))
    chosen = tf.ragged.boolean_mask(names, tf.cast(decisions, tf.bool))
    return tf.strings.reduce_join(chosen, axis=1, separator=separator)


# --------------------------------------------------------------------------- the exported module

TEXT_SPECS = [tf.TensorSpec([None], tf.string, name="text1"),
              tf.TensorSpec([None], tf.string, name="text2")]
ID_SPECS = [tf.TensorSpec([None, None], tf.int32, name="token_ids"),
            tf.TensorSpec([None, None], tf.int32, name="segment_ids")]


def _model_caller(model):
    """Calls the Keras model. A closure, not a module attribute: a tracked Keras model would make
    tf.saved_model.save write Keras's own metadata and trace every bert4keras layer. Its variables
    are tracked on their own, which is all the exported functions need."""
    dtypes = [tensor.dtype for tensor in model.inputs]  # bert4keras inputs are float32

    def logits(token_ids, segment_ids):
        return model([tf.cast(token_ids, dtypes[0]), tf.cast(segment_ids, dtypes[1])], training=False)

    return logits


class ServingModule(tf.Module):
    """What ``xtune export`` saves: the model's variables, the tokenizer (vocab.txt, or the
    SentencePiece model inside its op) and three signatures."""

    def __init__(self, model, meta, token_dict, vocab_path=None):
        super().__init__(name="xtune")
        self.model_variables = list(model.variables)
        self._logits = _model_caller(model)
        if vocab_path is not None:
            self.vocab = tf.saved_model.Asset(vocab_path)
        self.tokenizer = graph_tokenizer(token_dict, getattr(self, "vocab", None), meta["lowercase"])
        self.label_names = tf.Variable(meta["labels"], trainable=False, dtype=tf.string)
        self.meta_json = tf.Variable(json.dumps(meta, ensure_ascii=False), trainable=False)
        # A plain namespace: tf.Module would wrap (and try to save) dicts and lists.
        self._settings = types.SimpleNamespace(
            meta=meta, patterns=graph_clean_patterns(meta.get("clean_patterns")),
            uses_text2=bool(meta.get("text2")))

    @tf.function(input_signature=TEXT_SPECS)
    def tokenize(self, text1, text2):
        token_ids, segment_ids = self._encode(text1, text2)
        return {"token_ids": token_ids, "segment_ids": segment_ids}

    @tf.function(input_signature=TEXT_SPECS)
    def serve_text(self, text1, text2):
        return self._classify(*self._encode(text1, text2))

    @tf.function(input_signature=ID_SPECS)
    def from_ids(self, token_ids, segment_ids):
        return self._classify(token_ids, segment_ids)

    def _encode(self, text1, text2):
        meta, patterns = self._settings.meta, self._settings.patterns
        tokens1 = self.tokenizer.token_ids(prepare_texts(text1, patterns))
        if self._settings.uses_text2:
            text2 = prepare_texts(text2, patterns)
            has_second = tf.strings.length(text2) > 0  # encode_pair: "" means no second segment
            tokens2 = self.tokenizer.token_ids(text2)  # empty where has_second is false
        else:  # trained on text1 only: text2 is not read
            has_second = tf.zeros_like(text1, dtype=tf.bool)
            tokens2 = tf.RaggedTensor.from_row_lengths(
                tf.zeros([0], tf.int64), tf.zeros_like(text1, dtype=tf.int64))
        return encode_pairs(tokens1, tokens2, has_second, int(meta["max_len"]), meta["truncation"],
                            float(meta["head_ratio"]), self.tokenizer.cls_id, self.tokenizer.sep_id,
                            meta.get("truncation2"))

    def _classify(self, token_ids, segment_ids):
        meta = self._settings.meta
        logits = tf.cast(self._logits(token_ids, segment_ids), tf.float32)
        probs64 = graph_activation(meta["activation"], tf.cast(logits, tf.float64))
        decisions = graph_decide(probs64, meta["multi_label"], meta["threshold"])
        return {"probabilities": tf.cast(probs64, tf.float32), "decisions": decisions,
                "labels": joined_names(decisions, self.label_names, meta["label_sep"]),
                "logits": logits}


# --------------------------------------------------------------------------- export


def check_exportable(meta, token_dict):
    """Refuse, before anything is written, a meta the graph could not reproduce."""
    for key in ("labels", "activation", "threshold", "max_len", "truncation", "head_ratio",
                "lowercase", "multi_label", "label_sep"):
        if key not in meta:
            raise XtuneError("model meta has no %r; re-save the model with this xtune version" % key)
    if meta["truncation"] not in STRATEGIES or meta.get("truncation2") not in STRATEGIES + (None,):
        raise XtuneError("model meta: unknown truncation %r / %r" % (meta["truncation"], meta.get("truncation2")))
    if meta["activation"] not in ACTIVATIONS:
        raise XtuneError("model meta: unknown activation %r" % (meta["activation"],))
    threshold = meta["threshold"]
    if isinstance(threshold, list) and len(threshold) != len(meta["labels"]):
        raise XtuneError("model meta: %d thresholds for %d labels" % (len(threshold), len(meta["labels"])))
    specials = 3 if meta.get("text2") else 2
    if int(meta["max_len"]) - specials < 1:
        raise XtuneError("model meta: max_len %r leaves no room for text" % (meta["max_len"],))
    if isinstance(token_dict, SentencePieceVocab):
        SentencePieceTokenizer(token_dict.model_proto, source="the model's SentencePiece model")
    else:
        vocab_lines(token_dict)
    graph_clean_patterns(meta.get("clean_patterns"))


def export_model(h5_path, out_dir):
    """Write the SavedModel of ``h5_path`` to ``out_dir`` (replaced only if it is an earlier
    export); returns a summary. The folder appears complete or not at all."""
    from xtune_keras.model.modelfile import load_model_file, read_meta

    meta, token_dict = read_meta(h5_path)
    check_exportable(meta, token_dict)
    target = os.path.abspath(out_dir)
    _check_replaceable(target)
    require_tensorflow_text()
    model, meta, token_dict = load_model_file(h5_path)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".%s.tmp." % os.path.basename(target), dir=parent)
    try:
        _write_saved_model(model, meta, token_dict, staging, source=h5_path)
        _replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"saved_model": out_dir, "signatures": list(SIGNATURES), "labels": meta["labels"],
            "max_len": meta["max_len"], "truncation": meta["truncation"]}


def _write_saved_model(model, meta, token_dict, directory, source):
    saved = os.path.join(directory, "model")
    sentencepiece = isinstance(token_dict, SentencePieceVocab)
    with tempfile.TemporaryDirectory() as vocab_dir:
        vocab_path = None
        if not sentencepiece:
            vocab_path = os.path.join(vocab_dir, VOCAB_FILE)
            with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
                f.write("\n".join(vocab_lines(token_dict)) + "\n")
        module = ServingModule(model, meta, token_dict, vocab_path)
        signatures = {"serving_default": module.serve_text, "from_ids": module.from_ids,
                      "tokenize": module.tokenize}
        tf.saved_model.save(module, saved, signatures=signatures)
    os.makedirs(os.path.join(saved, EXTRA_DIR))
    info = dict(_export_info(source), tokenizer="sentencepiece" if sentencepiece else "wordpiece")
    with open(os.path.join(saved, EXTRA_DIR, META_FILE), "w", encoding="utf-8") as f:
        json.dump(dict(meta, export=info), f, ensure_ascii=False, indent=2)
    if sentencepiece:
        with open(os.path.join(saved, EXTRA_DIR, SPM_FILE), "wb") as f:
            f.write(token_dict.model_proto)


def _export_info(source):
    import xtune_keras

    text = require_tensorflow_text()
    return {"format": EXPORT_FORMAT, "source": os.path.basename(source),
            "signatures": list(SIGNATURES), "pad_id": PAD_ID, "word_maxlen": WORD_MAXLEN,
            "xtune_version": xtune_keras.__version__, "tensorflow": tf.__version__,
            "tensorflow_text": text.__version__, "python_unicodedata": unicodedata.unidata_version}


def is_export(directory):
    return os.path.isfile(os.path.join(directory, EXTRA_DIR, META_FILE))


def _check_replaceable(out_dir):
    if os.path.isfile(out_dir):
        raise XtuneError("%s: is a file; give a folder for the SavedModel" % out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not is_export(out_dir):
        raise XtuneError("%s: folder exists and is not an xtune export; not overwritten" % out_dir)


def _replace_dir(staging, out_dir):
    """Move staging/model to out_dir; an earlier export is moved aside first, then deleted."""
    old = os.path.join(staging, "old")
    if os.path.isdir(out_dir):
        os.rename(out_dir, old)
    os.rename(os.path.join(staging, "model"), out_dir)


# --------------------------------------------------------------------------- using an export


def read_export_meta(directory):
    """The meta stored by ``xtune export`` (the .h5's meta plus an ``export`` entry)."""
    if not os.path.isdir(directory):
        raise XtuneError("%s: model folder not found" % directory)
    if not is_export(directory):
        raise XtuneError("%s: not an xtune SavedModel (no %s/%s); make one with xtune export"
                         % (directory, EXTRA_DIR, META_FILE))
    with open(os.path.join(directory, EXTRA_DIR, META_FILE), encoding="utf-8") as f:
        return json.load(f)


def raw_texts(meta, data_path):
    """Each example's cells joined as ``data._joined_text`` joins them, before the clean patterns
    and whitespace folding that serving_default applies itself (so nothing is applied twice)."""
    from xtune_keras.data.tables import _cell_text, read_table

    table = read_table(data_path)

    def joined(columns):
        return [" ".join(part for part in (_cell_text(table[c].iat[i]) for c in columns) if part)
                for i in range(len(table))]

    first = joined(meta["text1"])
    return first, joined(meta["text2"]) if meta.get("text2") else [""] * len(first)


def open_saved_model(directory, batch_size=64):
    """``(meta, probabilities_of)`` like ``inference.open_model``, for an exported folder."""
    meta = read_export_meta(directory)
    require_tensorflow_text()
    serve = tf.saved_model.load(directory).signatures["serving_default"]

    def probabilities_of(examples, data_path):
        text1, text2 = raw_texts(meta, data_path)
        logits = [serve(text1=tf.constant(text1[i:i + batch_size], tf.string),
                        text2=tf.constant(text2[i:i + batch_size], tf.string))["logits"].numpy()
                  for i in range(0, len(text1), batch_size)]
        logits = np.concatenate(logits) if logits else np.zeros((0, len(meta["labels"])), np.float32)
        return ACTIVATIONS[meta["activation"]](logits.astype(np.float64))

    return meta, probabilities_of

