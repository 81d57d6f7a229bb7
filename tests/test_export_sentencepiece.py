"""xtune export of a model trained on a SentencePiece encoder (a tiny one, trained here)."""
import io
import os

import numpy as np
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import tensorflow as tf
from bert4keras.snippets import sequence_padding

spm = pytest.importorskip("sentencepiece", reason="pip install sentencepiece")

from tests.helpers import write_experiment, write_multilabel_csvs  # noqa: E402
from tests.test_export import CORPUS, strings  # noqa: E402
from xtune_keras.convert.checkpoints import VOCAB_NAME  # noqa: E402
from xtune_keras.testing import write_tiny_checkpoint  # noqa: E402
from xtune_keras.schema import load_config  # noqa: E402
from xtune_keras.model.encoders import (SentencePieceVocab, build_tokenizer, resolve_encoder_paths,  # noqa: E402
                                  tokenizer_from_vocab)
from xtune_keras.export.savedmodel import EXTRA_DIR, SPM_FILE, export_model, read_export_meta  # noqa: E402
from xtune_keras.train.metrics import ACTIVATIONS  # noqa: E402
from xtune_keras.model.modelfile import load_model_file  # noqa: E402
from xtune_keras.recipes.finetune import run_experiment  # noqa: E402
from xtune_keras.data.truncation import encode_pair  # noqa: E402

TRAINING_TEXT = [
    "小区路灯坏了三天，晚上出行很不方便。", "楼上装修噪音太大，严重影响休息。", "厨房水管漏水，物业不管。",
    "The street light near my house is broken.", "Noise from the construction site at night.",
    "北京路 12 号 停电 了", "water leaking from the ceiling 漏水", "全角字符：Ａｂｃ１２３ 还有数字 2024 年",
] * 3


def train_sentencepiece(vocab_size):
    """A unigram model with XLM-R's special ids (pad 0, bos 1, eos 2, unk 3), as convert-e5 writes."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT), model_writer=model, vocab_size=vocab_size,
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        model_type="unigram", minloglevel=2)
    return model.getvalue()


@pytest.fixture(scope="module")
def sp_encoder(tmp_path_factory):
    """A tiny BERT whose folder has spm.model instead of vocab.txt (ids < the embedding rows)."""
    directory = str(tmp_path_factory.mktemp("tiny_sp_bert"))
    write_tiny_checkpoint(directory, seed=3)
    os.remove(os.path.join(directory, VOCAB_NAME))
    with open(os.path.join(directory, "spm.model"), "wb") as f:
        f.write(train_sentencepiece(100))
    assert resolve_encoder_paths(directory)["vocab"].endswith("spm.model")
    return directory


@pytest.fixture(scope="module")
def exported(sp_encoder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sp_export")
    os.makedirs(tmp / "data")
    data = write_multilabel_csvs(str(tmp / "data"))
    yaml_path = write_experiment(str(tmp / "sp.yaml"), data, sp_encoder, str(tmp), name="sp",
                                 data={"max_len": 16, "truncation": "head+tail", "head_ratio": 0.3},
                                 model={"threshold": "tuned"}, train={"epochs": 1})
    h5 = run_experiment(load_config(yaml_path), echo=False)["h5"]
    directory = str(tmp / "export")
    export_model(h5, directory)
    return {"h5": h5, "dir": directory}


def test_export_carries_the_sentencepiece_model(exported):
    _, h5_meta, token_dict = load_model_file(exported["h5"])
    assert isinstance(token_dict, SentencePieceVocab)
    meta = read_export_meta(exported["dir"])
    assert meta["export"]["tokenizer"] == "sentencepiece"
    assert {k: v for k, v in meta.items() if k != "export"} == h5_meta
    with open(os.path.join(exported["dir"], EXTRA_DIR, SPM_FILE), "rb") as f:
        assert f.read() == token_dict.model_proto
    assert not os.path.exists(os.path.join(exported["dir"], "assets", "vocab.txt"))


def test_sentencepiece_signatures_match_the_keras_model(exported):
    model, meta, token_dict = load_model_file(exported["h5"])
    tokenizer = tokenizer_from_vocab(token_dict)
    first = TRAINING_TEXT[:8] + CORPUS + ["", "  spaces  and\ttabs ", "unseen ☃ 字符 ğ"]
    second = first[::-1]
    pairs = [encode_pair(tokenizer, " ".join(a.split()), " ".join(b.split()), meta["max_len"],
                         meta["truncation"], meta["head_ratio"]) for a, b in zip(first, second)]
    ids, segments = (sequence_padding([p[i] for p in pairs]).astype(np.int32) for i in (0, 1))
    signatures = tf.saved_model.load(exported["dir"]).signatures
    tokenized = signatures["tokenize"](text1=strings(first), text2=strings(second))
    assert tokenized["token_ids"].numpy().tolist() == ids.tolist()
    assert tokenized["segment_ids"].numpy().tolist() == segments.tolist()
    probs = ACTIVATIONS[meta["activation"]](model.predict([ids, segments], verbose=0).astype(np.float64))
    served = signatures["serving_default"](text1=strings(first), text2=strings(second))
    np.testing.assert_allclose(served["probabilities"].numpy(), probs, atol=1e-5, rtol=0)


def test_a_literal_special_token_in_text_is_unknown(sp_encoder):
    """A text holding "[CLS]" gets the unk id, as SentencePiece's encode_as_ids (and the graph)
    gives it, not the [CLS] id that the alias would map the piece to."""
    tokenizer = build_tokenizer(os.path.join(sp_encoder, "spm.model"))
    ids, _ = tokenizer.encode("[CLS] [SEP] [MASK] road")
    unk = tokenizer.sp_model.unk_id()
    assert ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")
    assert tokenizer.token_to_id("[CLS]") not in ids[1:-1] and tokenizer.token_to_id("[SEP]") not in ids[1:-1]
    assert unk in ids[1:-1]
    assert ids[1:-1] == tokenizer.sp_model.encode_as_ids("[CLS] [SEP] [MASK] road")

