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
import json
import os
import tempfile
import types
import unicodedata

import numpy as np
import tensorflow as tf  # xtune_keras/__init__ ran first: TF_USE_LEGACY_KERAS is set

from xtune_keras.model.encoders import SentencePieceTokenizer, SentencePieceVocab
from xtune_keras.errors import XtuneError
from xtune_keras.train.metrics import ACTIVATIONS
from xtune_keras.data.truncation import STRATEGIES
from xtune_keras.export.graph_text import (
    PAD_ID, WORD_MAXLEN, encode_pairs, graph_activation, graph_decide, graph_tokenizer, joined_names,
    require_tensorflow_text, vocab_lines,
)
from xtune_keras.export.folders import (EXTRA_DIR, META_FILE, check_replaceable, is_saved_model_export,
                                        staged_folder)
from xtune_keras.export.patterns import graph_clean_patterns, prepare_texts

VOCAB_FILE = "vocab.txt"
SPM_FILE = "spm.model"  # a SentencePiece model's copy in assets.extra (for clients; the graph has its own)
EXPORT_FORMAT = 1
SIGNATURES = ("serving_default", "from_ids", "tokenize")


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
    check_replaceable(os.path.abspath(out_dir))
    require_tensorflow_text()
    model, meta, token_dict = load_model_file(h5_path)
    with staged_folder(out_dir) as saved:
        _write_saved_model(model, meta, token_dict, saved, source=h5_path)
    return {"saved_model": out_dir, "signatures": list(SIGNATURES), "labels": meta["labels"],
            "max_len": meta["max_len"], "truncation": meta["truncation"]}


def _write_saved_model(model, meta, token_dict, saved, source):
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


# --------------------------------------------------------------------------- using an export


def read_export_meta(directory):
    """The meta stored by ``xtune export`` (the .h5's meta plus an ``export`` entry)."""
    if not os.path.isdir(directory):
        raise XtuneError("%s: model folder not found" % directory)
    if not is_saved_model_export(directory):
        raise XtuneError("%s: not an xtune SavedModel (no %s/%s); make one with xtune export"
                         % (directory, EXTRA_DIR, META_FILE))
    with open(os.path.join(directory, EXTRA_DIR, META_FILE), encoding="utf-8") as f:
        return json.load(f)


def raw_texts(meta, data_path):
    """Each example's cells joined as ``data._joined_text`` joins them, before the clean patterns
    and whitespace folding that serving_default applies itself (so nothing is applied twice)."""
    from xtune_keras.data.readers import _cell_text, read_table

    table = read_table(data_path)

    def joined(columns):
        return [" ".join(part for part in (_cell_text(table[c].iat[i]) for c in columns) if part)
                for i in range(len(table))]

    first = joined(meta["text1"])
    return first, joined(meta["text2"]) if meta.get("text2") else [""] * len(first)


def open_saved_model(directory, batch_size=64):
    """``(meta, probabilities_of)`` like ``inference.open_model``, for an exported folder."""
    meta, probabilities_of_texts = open_saved_model_texts(directory, batch_size)
    return meta, lambda examples, data_path: probabilities_of_texts(*raw_texts(meta, data_path))


def open_saved_model_texts(directory, batch_size=64):
    """``(meta, probabilities_of_texts(text1, text2))``: raw joined cells in, as ``serving_default``
    takes them (it cleans and tokenizes them itself)."""
    meta = read_export_meta(directory)
    require_tensorflow_text()
    serve = tf.saved_model.load(directory).signatures["serving_default"]

    def probabilities_of_texts(text1, text2):
        logits = [serve(text1=tf.constant(text1[i:i + batch_size], tf.string),
                        text2=tf.constant(text2[i:i + batch_size], tf.string))["logits"].numpy()
                  for i in range(0, len(text1), batch_size)]
        logits = np.concatenate(logits) if logits else np.zeros((0, len(meta["labels"])), np.float32)
        return ACTIVATIONS[meta["activation"]](logits.astype(np.float64))

    return meta, probabilities_of_texts
