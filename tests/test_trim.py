"""trim_encoder: an encoder cut to a corpus's pieces is the same function of that corpus."""
import json
import os

import numpy as np
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from xtune_keras.convert.checkpoints import CHECKPOINT_NAME, CONFIG_NAME, VOCAB_NAME, load_variables
from xtune_keras.convert.trim import TRIM_NAME, trim_encoder
from xtune_keras.errors import XtuneError
from xtune_keras.model.encoders import SPM_NAME, build_tokenizer, build_transformer
from xtune_keras.testing import tiny_vocab, write_tiny_checkpoint

WORD_TEXTS = ["the cat sat", "a dog ran home", "the dog"]
SP_TEXTS = ["小区路灯坏了三天", "楼上装修噪音太大", "路灯 和 噪音", "the street light is broken"]


def sequence_output(directory, texts):
    tokenizer = build_tokenizer(os.path.join(directory, vocab_name(directory)))
    encoder = build_transformer(os.path.join(directory, CONFIG_NAME), os.path.join(directory, CHECKPOINT_NAME))
    return [encoder.model.predict([np.array([ids]), np.array([segments])], verbose=0)[0]
            for ids, segments in (tokenizer.encode(text) for text in texts)]


def vocab_name(directory):
    return SPM_NAME if os.path.isfile(os.path.join(directory, SPM_NAME)) else VOCAB_NAME


def assert_same_function(full, trimmed, texts):
    for before, after in zip(sequence_output(full, texts), sequence_output(trimmed, texts)):
        np.testing.assert_allclose(after, before, atol=1e-6)


def test_wordpiece_encoder_keeps_the_corpus_pieces_and_its_outputs(tmp_path):
    full, trimmed = str(tmp_path / "full"), str(tmp_path / "trimmed")
    write_tiny_checkpoint(full, seed=3)
    record = trim_encoder(full, trimmed, WORD_TEXTS, source_note="three sentences")

    tokenizer = build_tokenizer(os.path.join(full, VOCAB_NAME))
    used = sorted({0} | {i for t in WORD_TEXTS for i in tokenizer.encode(t)[0]}
                  | {tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")})
    assert record["kept_pieces"] == len(used) < record["source_pieces"] == len(tiny_vocab())
    with open(os.path.join(trimmed, CONFIG_NAME)) as f:
        assert json.load(f)["vocab_size"] == len(used)
    before = load_variables(os.path.join(full, CHECKPOINT_NAME))
    after = load_variables(os.path.join(trimmed, CHECKPOINT_NAME))
    for name in ("bert/embeddings/word_embeddings", "cls/predictions/output_bias"):
        np.testing.assert_array_equal(after[name], before[name][used])
    assert set(after) == set(before)
    with open(os.path.join(trimmed, TRIM_NAME)) as f:
        assert json.load(f)["corpus"] == "three sentences"
    assert_same_function(full, trimmed, WORD_TEXTS)


def write_sentencepiece_encoder(directory):
    """A tiny unigram SentencePiece model (pad 0, as bert4keras wants) under a random tiny checkpoint."""
    spm = pytest.importorskip("sentencepiece")
    os.makedirs(directory)
    corpus = SP_TEXTS * 3 + ["天气很好我们去公园散步", "服务太差了再也不来了", "street light broken again"]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=os.path.join(directory, "spm"), model_type="unigram",
        vocab_size=60, hard_vocab_limit=False, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        user_defined_symbols=["<mask>"], minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=os.path.join(directory, SPM_NAME))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    with open(os.path.join(directory, "pieces.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(pieces) + "\n")
    write_tiny_checkpoint(directory, seed=4, vocab=os.path.join(directory, "pieces.txt"))
    os.remove(os.path.join(directory, VOCAB_NAME))  # the folder's tokenizer is spm.model
    os.remove(os.path.join(directory, "pieces.txt"))
    return processor.get_piece_size()


def test_sentencepiece_encoder_renumbers_its_special_pieces(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    full, trimmed = str(tmp_path / "full"), str(tmp_path / "trimmed")
    size = write_sentencepiece_encoder(full)
    texts = SP_TEXTS[:2]
    record = trim_encoder(full, trimmed, texts)
    assert record["kept_pieces"] < size
    processor = spm.SentencePieceProcessor(model_file=os.path.join(trimmed, SPM_NAME))
    assert processor.get_piece_size() == record["kept_pieces"]
    assert (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) == (0, 1, 2, 3)
    assert processor.piece_to_id("<mask>") != processor.unk_id()
    assert_same_function(full, trimmed, texts)


def test_a_text_that_would_tokenize_differently_writes_nothing(tmp_path, monkeypatch):
    from xtune_keras.convert import trim

    full, trimmed = str(tmp_path / "full"), str(tmp_path / "trimmed")
    write_tiny_checkpoint(full, seed=3)
    monkeypatch.setattr(trim, "kept_ids", lambda tokenizer, encoded: np.array([0, 1, 2, 3, 4]))
    with pytest.raises(XtuneError, match="text 0 tokenizes differently"):
        trim_encoder(full, trimmed, WORD_TEXTS)
    assert not os.path.exists(trimmed)


def test_the_reproduction_trims_e5_to_every_stand_in_text(tmp_path, monkeypatch):
    from xtune_keras.experiments import stand_ins

    monkeypatch.chdir(tmp_path)
    write_sentencepiece_encoder(stand_ins.E5_FULL)  # as if converted: ensure_e5 does not convert again
    for directory, texts in ((stand_ins.APPEALS, SP_TEXTS[:2]), (stand_ins.OTHER, SP_TEXTS[2:])):
        os.makedirs(directory)
        with open(os.path.join(directory, "train.csv"), "w", encoding="utf-8") as f:
            f.write("appeal_title,appeal_context,labels\n" + "".join("%s,%s,x\n" % (t, t[::-1]) for t in texts))
    assert sorted(stand_ins.stand_in_texts()) == sorted(SP_TEXTS + [t[::-1] for t in SP_TEXTS])
    assert stand_ins.ensure_e5() == stand_ins.E5
    with open(os.path.join(stand_ins.E5, TRIM_NAME)) as f:
        assert json.load(f)["texts"] == 2 * len(SP_TEXTS)
    assert_same_function(stand_ins.E5_FULL, stand_ins.E5, SP_TEXTS)
