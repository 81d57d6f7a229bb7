import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from xtune_keras.testing import tiny_vocab
from xtune_keras.data.tables import Examples
from xtune_keras.model.encoders import build_tokenizer
from xtune_keras.errors import XtuneError
from xtune_keras.data.truncation import STRATEGIES, encode_examples, encode_pair, split_budget, truncate

NUMBERS = list(range(10))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    return build_tokenizer(str(path))


def ids_to_tokens(tokenizer, ids):
    return tokenizer.ids_to_tokens(ids)


# --------------------------------------------------------------------------- truncate


def test_strategies():
    assert STRATEGIES == ("head", "tail", "head+tail")


def test_head_tail_and_head_plus_tail():
    assert truncate(NUMBERS, 4, "head") == [0, 1, 2, 3]
    assert truncate(NUMBERS, 4, "tail") == [6, 7, 8, 9]
    assert truncate(NUMBERS, 4, "head+tail") == [0, 7, 8, 9]  # round(4 * 0.25) = 1 head token
    assert truncate(NUMBERS, 4, "head+tail", head_ratio=0.5) == [0, 1, 8, 9]
    assert truncate(NUMBERS, 5, "head+tail", head_ratio=0.5) == [0, 1, 7, 8, 9]  # round(2.5) = 2
    assert truncate(NUMBERS, 4, "head+tail", head_ratio=1.0) == [0, 1, 2, 3]
    assert truncate(NUMBERS, 4, "head+tail", head_ratio=0.0) == [6, 7, 8, 9]


def test_paper_setting_keeps_128_head_and_382_tail_tokens():
    tokens = list(range(1000))
    kept = truncate(tokens, 510, "head+tail")
    assert kept == list(range(128)) + list(range(1000 - 382, 1000))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_short_input_unchanged_and_zero_budget_empty(strategy):
    assert truncate(NUMBERS, 10, strategy) == NUMBERS
    assert truncate(NUMBERS, 50, strategy) == NUMBERS
    assert truncate(NUMBERS, 0, strategy) == []
    assert truncate([], 3, strategy) == []


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(XtuneError) as excinfo:
        truncate(NUMBERS, 4, "middle")
    text = str(excinfo.value)
    assert "data.truncation" in text and "'middle'" in text
    assert "head, tail, head+tail" in text


def test_bad_head_ratio():
    with pytest.raises(XtuneError, match="data.head_ratio"):
        truncate(NUMBERS, 4, "head+tail", head_ratio=1.5)


# --------------------------------------------------------------------------- split_budget


def google_truncate_seq_pair(len1, len2, budget):
    """The loop of google-research/bert run_classifier, on lengths."""
    while len1 + len2 > budget:
        if len1 > len2:
            len1 -= 1
        else:
            len2 -= 1
    return len1, len2


@pytest.mark.parametrize("len1,len2,budget,expected", [
    (3, 4, 10, (3, 4)),      # fits: nothing trimmed
    (5, 100, 20, (5, 15)),   # short address kept whole
    (100, 5, 20, (15, 5)),
    (100, 100, 20, (10, 10)),
    (100, 100, 21, (11, 10)),  # ties trim the second segment first
    (11, 30, 21, (11, 10)),
    (0, 30, 8, (0, 8)),
])
def test_split_budget_cases(len1, len2, budget, expected):
    assert split_budget(len1, len2, budget) == expected


def test_split_budget_matches_google_loop():
    for len1 in range(0, 14):
        for len2 in range(0, 14):
            for budget in range(0, 20):
                assert split_budget(len1, len2, budget) == google_truncate_seq_pair(len1, len2, budget)


# --------------------------------------------------------------------------- encode_pair


def test_single_text_layout(tokenizer):
    ids, segments = encode_pair(tokenizer, "the stock price", None, 16)
    assert ids_to_tokens(tokenizer, ids) == ["[CLS]", "the", "stock", "price", "[SEP]"]
    assert segments == [0] * 5


def test_empty_text2_is_a_single_segment(tokenizer):
    assert encode_pair(tokenizer, "the stock price", "", 16) == encode_pair(tokenizer, "the stock price", None, 16)


def test_pair_layout_with_long_text_keeps_short_address(tokenizer):
    complaint = " ".join(["noise"] * 30)
    ids, segments = encode_pair(tokenizer, "city road", complaint, 12)
    tokens = ids_to_tokens(tokenizer, ids)
    assert tokens == ["[CLS]", "city", "road", "[SEP]"] + ["noise"] * 7 + ["[SEP]"]
    assert segments == [0] * 4 + [1] * 8


@pytest.mark.parametrize("strategy,expected", [
    ("head", list("01234")),
    ("tail", list("56789")),
    ("head+tail", ["0", "6", "7", "8", "9"]),  # round(5 * 0.25) = 1 head token
])
def test_pair_truncation_by_strategy(tokenizer, strategy, expected):
    # max_len 9 leaves 6 for two segments: "city" keeps its 1 token, text1 gets 5.
    ids, segments = encode_pair(tokenizer, "0 1 2 3 4 5 6 7 8 9", "city", 9, strategy=strategy)
    tokens = ids_to_tokens(tokenizer, ids)
    assert tokens == ["[CLS]"] + expected + ["[SEP]", "city", "[SEP]"]
    assert segments == [0] * 7 + [1] * 2


def test_a_rule_per_segment_head_of_text_in_text1_tail_in_text2(tokenizer):
    # The write-up's last data variant: the same long text, its head as text1, its tail as text2.
    text = "0 1 2 3 4 5 6 7 8 9"
    ids, segments = encode_pair(tokenizer, text, text, 11, strategy="head", strategy2="tail")
    assert ids_to_tokens(tokenizer, ids) == ["[CLS]"] + list("0123") + ["[SEP]"] + list("6789") + ["[SEP]"]
    assert segments == [0] * 6 + [1] * 5
    with pytest.raises(XtuneError, match="data.truncation2: unknown strategy 'middle'"):
        encode_pair(tokenizer, text, text, 11, strategy2="middle")


def test_head_plus_tail_single_segment(tokenizer):
    ids, _ = encode_pair(tokenizer, "0 1 2 3 4 5 6 7 8 9", None, 10, strategy="head+tail")
    assert ids_to_tokens(tokenizer, ids) == ["[CLS]", "0", "1", "4", "5", "6", "7", "8", "9", "[SEP]"]


LONG_CHINESE = "小区路灯不好了噪音很大快维修" * 40
LONG_ENGLISH = "please fix the broken street light on the road " * 40


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("max_len", [4, 5, 16, 33, 64])
@pytest.mark.parametrize("text1,text2", [
    (LONG_CHINESE, None), (LONG_ENGLISH, None), (LONG_CHINESE, LONG_ENGLISH),
    ("地址", LONG_CHINESE), (LONG_ENGLISH, "city"), (LONG_CHINESE, ""),
])
def test_encoded_length_never_exceeds_max_len(tokenizer, strategy, max_len, text1, text2):
    ids, segments = encode_pair(tokenizer, text1, text2, max_len, strategy=strategy)
    assert len(ids) == len(segments) == max_len  # the texts are long enough to fill it
    tokens = ids_to_tokens(tokenizer, ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens.count("[SEP]") == (2 if text2 else 1)
    assert "[UNK]" not in tokens
    if text2:
        first_sep = tokens.index("[SEP]")
        assert segments == [0] * (first_sep + 1) + [1] * (max_len - first_sep - 1)


def test_chinese_head_and_tail_characters(tokenizer):
    text = "路灯" + "噪音" * 50 + "停电"
    head_ids, _ = encode_pair(tokenizer, text, None, 6, strategy="head")
    tail_ids, _ = encode_pair(tokenizer, text, None, 6, strategy="tail")
    assert ids_to_tokens(tokenizer, head_ids) == ["[CLS]", "路", "灯", "噪", "音", "[SEP]"]
    assert ids_to_tokens(tokenizer, tail_ids) == ["[CLS]", "噪", "音", "停", "电", "[SEP]"]


def test_max_len_too_small_names_key(tokenizer):
    with pytest.raises(XtuneError, match="data.max_len"):
        encode_pair(tokenizer, "the", "a", 3)
    with pytest.raises(XtuneError, match="data.max_len"):
        encode_pair(tokenizer, "the", None, 2)


def test_encode_examples(tokenizer):
    examples = Examples(["the stock", "oil price"], ["city", ""], None, "s.csv", [1, 2])
    token_ids, segment_ids = encode_examples(tokenizer, examples, 16, "head", 0.25)
    assert [ids_to_tokens(tokenizer, ids) for ids in token_ids] == [
        ["[CLS]", "the", "stock", "[SEP]", "city", "[SEP]"],
        ["[CLS]", "oil", "price", "[SEP]"],
    ]
    assert segment_ids == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0]]
    single = Examples(["the stock"], None, None, "s.csv", [1])
    assert encode_examples(tokenizer, single, 16, "tail", 0.25)[0] == [token_ids[0][:4]]
