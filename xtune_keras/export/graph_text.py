"""The exported graph's text ops: bert4keras's tokenizer (or a SentencePiece model), head/tail
truncation and the decision rule, as TensorFlow ops. See ``savedmodel.py``."""

import tensorflow as tf

from xtune_keras.model.encoders import SentencePieceTokenizer, SentencePieceVocab
from xtune_keras.errors import XtuneError
from xtune_keras.data.truncation import CLS, SEP
from xtune_keras.export.patterns import tokenizer_classes

UNK = "[UNK]"
PAD_ID = 0  # bert4keras's sequence_padding pads with 0, as in training
WORD_MAXLEN = 200  # bert4keras Tokenizer's word_maxlen: a longer word is one [UNK]
MAX_UTF8_BYTES = 4


def require_tensorflow_text():
    """tensorflow_text, imported (registers its ops); a one-line error when it is missing."""
    try:
        import tensorflow_text
    except ImportError as exc:
        raise XtuneError("SavedModel export needs tensorflow-text (%s); install it with: "
                         "pip install --no-deps \"tensorflow-text==2.21.*\"" % exc)
    return tensorflow_text


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


