"""evaluate / predict with a trained ``.h5`` (or its ``xtune export`` SavedModel folder): raw text
prepared exactly as in training."""
import os

import numpy as np
import pandas as pd
from xtune_keras.data.batches import PaddedBatches
from xtune_keras.data.tables import LabelVocab, examples_from_texts, load_examples
from xtune_keras.model.encoders import tokenizer_from_vocab
from xtune_keras.errors import XtuneError
from xtune_keras.train.metrics import ACTIVATIONS, classification_metrics
from xtune_keras.model.modelfile import load_model_file
from xtune_keras.data.truncation import encode_examples

PREDICT_BATCH = 64


def read_examples(meta, data_path, with_labels):
    return load_examples(
        data_path, meta["text1"], meta["text2"], meta["label"] if with_labels else None,
        multi_label=meta["multi_label"], label_sep=meta["label_sep"],
        clean_patterns=meta["clean_patterns"],
    )


def predict_probs(model, meta, token_dict, examples, verbose=0):
    """Per-label probabilities, tokenized with the vocab and truncation rule stored in the .h5."""
    batches = encoded_batches(meta, token_dict, examples)
    return probabilities(meta, batches.in_input_order(model.predict(batches, verbose=verbose)))


def encoded_batches(meta, token_dict, examples):
    """The examples tokenized and truncated as in training, in batches sorted by length."""
    tokenizer = tokenizer_from_vocab(token_dict, do_lower_case=meta["lowercase"])
    ids, segs = encode_examples(tokenizer, examples, meta["max_len"], meta["truncation"],
                                meta["head_ratio"], meta.get("truncation2"))  # absent in older files
    return PaddedBatches(ids, segs, None, PREDICT_BATCH, by_length=True)


def probabilities(meta, logits):
    return ACTIVATIONS[meta["activation"]](np.asarray(logits, dtype=np.float64))


def onnx_probs(logits_of, meta, token_dict, examples):
    """``predict_probs`` for an ONNX folder's ``logits(token_ids, segment_ids)``."""
    batches = encoded_batches(meta, token_dict, examples)
    parts = [logits_of(inputs["Input-Token"], inputs["Input-Segment"]) for (inputs,) in batches]
    logits = np.concatenate(parts) if parts else np.zeros((0, len(meta["labels"])), np.float32)
    return probabilities(meta, batches.in_input_order(logits))


def open_model(model_path, verbose=0, precision="float32"):
    """``(meta, probabilities_of(examples, data_path))`` of an .h5 file or an exported folder.

    A SavedModel folder is fed the raw text through ``serving_default`` (its in-graph tokenizer);
    its meta (labels, threshold, ...) comes from the export. An ONNX folder is fed token ids made
    here as for the .h5. ``precision``: the .h5's policy for predicting (``train.precision``'s
    choices; an export computes as it was exported).
    """
    from xtune_keras.export.folders import is_onnx_export

    if os.path.isdir(model_path) and is_onnx_export(model_path):
        from xtune_keras.export.onnx import onnx_logits, read_onnx_export

        meta, token_dict = read_onnx_export(model_path)
        logits_of = onnx_logits(model_path)
        return meta, lambda examples, data_path: onnx_probs(logits_of, meta, token_dict, examples)
    if os.path.isdir(model_path):
        from xtune_keras.export.savedmodel import open_saved_model

        return open_saved_model(model_path, batch_size=PREDICT_BATCH)
    model, meta, vocab = load_model_file(model_path, precision)
    return meta, lambda examples, data_path: predict_probs(model, meta, vocab, examples, verbose)


def open_text_model(model_path, precision="float32"):
    """``(meta, probabilities_of_texts(text1, text2))`` of any model kind, for texts that are the
    joined cells of ``data.text1`` / ``data.text2`` (``text2`` a list of "" for none): cleaned and
    tokenized as a table's rows are (``xtune serve``)."""
    from xtune_keras.export.folders import is_onnx_export

    if os.path.isdir(model_path) and not is_onnx_export(model_path):
        from xtune_keras.export.savedmodel import open_saved_model_texts

        return open_saved_model_texts(model_path, batch_size=PREDICT_BATCH)
    meta, probabilities_of = open_model(model_path, precision=precision)

    def probabilities_of_texts(text1, text2):
        examples = examples_from_texts(text1, text2 if meta["text2"] else None, meta["clean_patterns"])
        return probabilities_of(examples, None)

    return meta, probabilities_of_texts


def evaluate_file(model_path, data_path, threshold=None, verbose=0, precision="float32"):
    """Metrics of a model on a labelled table; unknown labels are an error naming the row.
    ``verbose=1``: Keras's progress bar while predicting."""
    meta, probabilities_of = open_model(model_path, verbose, precision)
    examples = read_examples(meta, data_path, with_labels=True)
    y_true = LabelVocab(meta["labels"]).encode(examples)
    probs = probabilities_of(examples, data_path)
    threshold = meta["threshold"] if threshold is None else threshold
    return dict(classification_metrics(y_true, probs, meta["multi_label"], threshold),
                examples=len(examples))


def predict_file(model_path, data_path, out_path, threshold=None, verbose=0, precision="float32"):
    """Write ``row, labels, prob_<label>...`` to ``out_path`` (atomically); returns the row count."""
    meta, probabilities_of = open_model(model_path, verbose, precision)
    examples = read_examples(meta, data_path, with_labels=False)
    probs = probabilities_of(examples, data_path)
    threshold = meta["threshold"] if threshold is None else threshold
    labels = LabelVocab(meta["labels"])
    decided = labels.decode(probs, threshold=threshold, multi_label=meta["multi_label"])
    table = pd.DataFrame({"row": examples.rows,
                          "labels": [meta["label_sep"].join(d) for d in decided]})
    probs_table = pd.DataFrame(probs, columns=["prob_" + n for n in labels.names])
    write_csv_atomically(pd.concat([table, probs_table], axis=1), out_path)
    return len(table)


def write_csv_atomically(frame, path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise XtuneError("%s: output folder does not exist" % path)
    tmp = os.path.join(directory, ".%s.tmp" % os.path.basename(path))
    frame.to_csv(tmp, index=False, float_format="%.6f")
    os.replace(tmp, path)
