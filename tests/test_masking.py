"""Whole-word masking and block packing (data/masking.py)."""
import numpy as np
import pytest
from bert4keras.tokenizers import Tokenizer

from xtune_keras.data.masking import SPECIAL, BlockPacker, mask_block, max_predictions, tokenize_document

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHINESE = "小区门口的道路积水严重请尽快处理"
ENGLISH = ["water", "pipe", "##line", "un", "##break", "##able", "road", "noise"]


def tokenizer():
    vocab = SPECIALS + sorted(set(CHINESE)) + ENGLISH
    return Tokenizer({token: i for i, token in enumerate(vocab)}, do_lower_case=True)


def draw(ids, words, seed, rate=0.15, slots=None):
    slots = slots or max_predictions(len(ids), rate)
    return mask_block(ids, words, np.random.default_rng(seed), rate, 0.8, 0.1, 4, 40, [0, 1, 2, 3, 4], slots)


def test_rate_and_80_10_10_over_many_draws():
    ids = [2] + list(range(10, 37)) * 4 + [3]  # 108 real tokens
    words = [SPECIAL] + list(range(108)) + [SPECIAL]
    masked = replaced = randomized = kept = 0
    for seed in range(2000):
        inputs, positions, labels = draw(ids, words, seed)
        chosen = positions[labels >= 0]
        assert len(chosen) == round(108 * 0.15)
        assert np.array_equal(labels[labels >= 0], np.asarray(ids)[chosen])
        assert 0 not in chosen and len(ids) - 1 not in chosen  # never [CLS] or [SEP]
        masked += len(chosen)
        replaced += int(np.sum(inputs[chosen] == 4))
        kept += int(np.sum(inputs[chosen] == np.asarray(ids)[chosen]))
        randomized += int(np.sum((inputs[chosen] != 4) & (inputs[chosen] != np.asarray(ids)[chosen])))
        unchosen = np.setdiff1d(np.arange(len(ids)), chosen)
        assert np.array_equal(inputs[unchosen], np.asarray(ids)[unchosen])
    # a random token equal to the original counts as kept: 1 in 35 of the random draws
    assert replaced / masked == pytest.approx(0.8, abs=0.01)
    assert randomized / masked == pytest.approx(0.1 * 34 / 35, abs=0.01)
    assert kept / masked == pytest.approx(0.1 + 0.1 / 35, abs=0.01)


def whole_words_hold(words, positions, labels):
    chosen = set(positions[labels >= 0].tolist())
    for word in set(words) - {SPECIAL}:
        members = {i for i, w in enumerate(words) if w == word}
        assert members <= chosen or not members & chosen, "word %d partly masked" % word
    return chosen


def test_jieba_words_are_masked_whole():
    ids, words = tokenize_document(tokenizer(), CHINESE, "jieba")
    assert len(ids) == len(CHINESE) and max(words) < len(CHINESE) - 3  # jieba joined characters
    assert words[:4] == [0, 0, 1, 1]  # 小区 / 门口
    block_ids, block_words = [2] + ids + [3], [SPECIAL] + words + [SPECIAL]
    multi = 0
    for seed in range(200):
        _, positions, labels = draw(block_ids, block_words, seed, rate=0.3)
        chosen = whole_words_hold(block_words, positions, labels)
        multi += len(chosen) > 1
    assert multi > 100


def test_wordpiece_continuations_are_masked_with_their_word():
    ids, words = tokenize_document(tokenizer(), "water pipeline unbreakable road", "whitespace")
    assert words == [0, 1, 1, 2, 2, 2, 3]
    for seed in range(200):
        _, positions, labels = draw([2] + ids + [3], [SPECIAL] + words + [SPECIAL], seed, rate=0.5)
        whole_words_hold([SPECIAL] + words + [SPECIAL], positions, labels)
    assert tokenize_document(tokenizer(), "water pipeline", "none")[1] == [0, 1, 2]


def test_documents_are_packed_into_full_blocks():
    packer = BlockPacker(8, cls_id=2, sep_id=3)
    blocks = packer.add([10, 11, 12], [0, 1, 1]) + packer.add([20, 21, 22, 23, 24], [0, 1, 2, 3, 4])
    blocks.append(packer.flush())
    assert [ids for ids, _ in blocks] == [[2, 10, 11, 12, 3, 20, 21, 3], [2, 22, 23, 24, 3, 3]]
    first_words = blocks[0][1]
    assert first_words[0] == first_words[4] == first_words[-1] == SPECIAL
    assert first_words[1:4] == [0, 1, 1] and first_words[5:7] == [2, 3]  # unique across documents
    assert packer.flush() is None


def test_missing_jieba_is_one_line(monkeypatch):
    import builtins

    from xtune_keras.errors import XtuneError

    real_import = builtins.__import__

    def no_jieba(name, *args, **kwargs):
        if name == "jieba":
            raise ImportError("No module named 'jieba'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jieba)
    with pytest.raises(XtuneError, match="jieba is not installed"):
        tokenize_document(tokenizer(), CHINESE, "jieba")


def test_sentencepiece_pieces_get_jieba_and_whitespace_words():
    pytest.importorskip("sentencepiece", reason="pip install sentencepiece (make install does)")
    from tests.test_export_sentencepiece import train_sentencepiece
    from xtune_keras.model.encoders import SentencePieceTokenizer

    sp = SentencePieceTokenizer(train_sentencepiece(120))
    text = "小区路灯坏了 water leaking"
    tokens = sp.tokenize(text)
    offsets = sp.rematch(text, tokens)
    assert offsets[0] == offsets[-1] == []
    covered = "".join(text[i] for span in offsets for i in span)
    assert covered == text  # every character once, in order ("▁water" spans the space before it)
    ids, words = tokenize_document(sp, text, "jieba")
    assert len(ids) == len(tokens) - 2
    pieces = tokens[1:-1]
    jieba_words = [w for w in __import__("jieba").cut(text) if w.strip()]
    grouped = {}
    for span, word in zip(offsets[1:-1], words):
        grouped.setdefault(word, []).extend(span)
    surfaces = ["".join(text[i] for i in chars).strip() for chars in grouped.values()]
    assert sorted(s for s in surfaces if s) == sorted(jieba_words)  # lone "▁" pieces are words of their own
    _, spaced = tokenize_document(sp, text, "whitespace")
    assert spaced[0] == 0 and all(
        (b == a + 1) == p.startswith("\u2581") for a, b, p in zip(spaced, spaced[1:], pieces[1:]))
