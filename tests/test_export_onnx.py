"""xtune export --format onnx: the ONNX folder predicts like the .h5 (float32 within 1e-4, int8 close),
runs in ONNX Runtime without TensorFlow, and xtune predict / evaluate take it like the .h5."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from tests.helpers import write_csv, write_experiment, write_multilabel_csvs
from tests.test_export import CORPUS, assert_one_line_error, single_label_csvs
from xtune_keras.data.tables import Examples
from xtune_keras.errors import XtuneError
from xtune_keras.export.onnx import export_onnx, onnx_logits, read_onnx_export
from xtune_keras.export.savedmodel import export_model
from xtune_keras.inference import evaluate_file, onnx_probs, predict_probs
from xtune_keras.model.modelfile import load_model_file
from xtune_keras.recipes.finetune import run_experiment
from xtune_keras.schema import load_config

pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime (make install)")


@pytest.fixture(scope="module")
def models(tiny_ckpt, tiny_albert, tmp_path_factory):
    """A two-segment multi-label TextCNN + MLP model (head+tail, tuned thresholds, a clean pattern)
    and a one-segment single-label softmax model on the last two layers pooled, each exported as
    float32 and as int8 ONNX (fused); the pair model also unfused, and an ALBERT model (layers
    shared across blocks: only its embedding LayerNorm can be fused) as float32; a [CLS] model (the
    default heads on the last layer: its last block is computed for the first token only, and the
    position-wise ops of every block for the real tokens only)."""
    tmp = tmp_path_factory.mktemp("onnx")
    os.makedirs(tmp / "pair_data")
    pair_data = write_multilabel_csvs(str(tmp / "pair_data"))
    pair_yaml = write_experiment(str(tmp / "pair.yaml"), pair_data, tiny_ckpt["dir"], str(tmp), name="pair",
                                 data={"max_len": 16, "truncation": "head+tail", "head_ratio": 0.3,
                                       "clean_patterns": [r"地址\s*\d+"]},
                                 model={"threshold": "tuned",
                                        "heads": [{"type": "textcnn", "filters": 4, "kernel_sizes": [2, 3]},
                                                  {"type": "mlp", "units": [8]}]},
                                 train={"epochs": 1})
    os.makedirs(tmp / "single_data")
    single_data = single_label_csvs(str(tmp / "single_data"))
    single_yaml = write_experiment(str(tmp / "single.yaml"), single_data, tiny_ckpt["dir"], str(tmp),
                                   name="single", model={"loss": "ce"}, train={"epochs": 1},
                                   data={"text1": ["text"], "text2": [], "label": "label",
                                         "multi_label": False, "max_len": 12, "truncation": "tail"},
                                   encoder={"dir": tiny_ckpt["dir"], "pool_layers": 2})
    albert_yaml = write_experiment(str(tmp / "albert.yaml"), single_data, tiny_albert["dir"], str(tmp),
                                   name="albert", model={"loss": "ce"}, train={"epochs": 1},
                                   data={"text1": ["text"], "text2": [], "label": "label",
                                         "multi_label": False, "max_len": 12},
                                   encoder={"dir": tiny_albert["dir"], "model": "albert"})
    cls_yaml = write_experiment(str(tmp / "cls.yaml"), single_data, tiny_ckpt["dir"], str(tmp), name="cls",
                                model={"loss": "ce"}, train={"epochs": 1},
                                data={"text1": ["text"], "text2": [], "label": "label", "multi_label": False,
                                      "max_len": 12})
    out = {}
    for name, yaml_path, data in (("pair", pair_yaml, pair_data), ("single", single_yaml, single_data),
                                  ("albert", albert_yaml, single_data), ("cls", cls_yaml, single_data)):
        h5 = run_experiment(load_config(yaml_path), echo=False)["h5"]
        out[name] = {"h5": h5, "data": data, "float32": str(tmp / ("%s_onnx" % name)),
                     "int8": str(tmp / ("%s_int8" % name))}
    done = cli("export", out["pair"]["h5"], out["pair"]["float32"], "--format", "onnx")  # one by the CLI
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["quantize"] is None
    export_onnx(out["single"]["h5"], out["single"]["float32"])
    export_onnx(out["cls"]["h5"], out["cls"]["float32"])
    for name in ("pair", "single", "cls"):
        export_onnx(out[name]["h5"], out[name]["int8"], quantize="int8")
    out["pair"]["unfused"] = str(tmp / "pair_unfused")
    done = cli("export", out["pair"]["h5"], out["pair"]["unfused"], "--format", "onnx", "--no-fuse")
    assert done.returncode == 0, done.stderr[-3000:]
    export_onnx(out["albert"]["h5"], out["albert"]["float32"])
    return out


def cli(*args):
    return subprocess.run([sys.executable, "-m", "xtune_keras.cli", *args], capture_output=True, text=True)


def corpus_examples(meta):
    """The parity corpus of test_export (hard texts), as examples of the model's fields."""
    second = CORPUS[::-1] if meta["text2"] else None
    return Examples(text1=list(CORPUS), text2=second, labels=None, source="corpus", rows=list(range(1, 18)))


def test_layout_and_meta(models):
    directory = models["pair"]["float32"]
    assert sorted(os.listdir(directory)) == ["model.onnx", "vocab.json", "xtune_meta.json"]
    meta, token_dict = read_onnx_export(directory)
    _, h5_meta, h5_vocab = load_model_file(models["pair"]["h5"])
    assert {k: v for k, v in meta.items() if k != "export"} == h5_meta
    assert token_dict == h5_vocab
    assert meta["export"]["format"] == "onnx" and meta["export"]["inputs"] == ["token_ids", "segment_ids"]
    assert read_onnx_export(models["pair"]["int8"])[0]["export"]["quantize"] == "int8"


@pytest.mark.parametrize("name, kind", [("pair", "float32"), ("single", "float32"), ("pair", "unfused"),
                                        ("albert", "float32"), ("cls", "float32")])
def test_float32_probabilities_equal_the_keras_model(models, name, kind):
    model, meta, token_dict = load_model_file(models[name]["h5"])
    examples = corpus_examples(meta)
    keras_probs = predict_probs(model, meta, token_dict, examples)
    probs = onnx_probs(onnx_logits(models[name][kind]), meta, token_dict, examples)
    np.testing.assert_allclose(probs, keras_probs, atol=1e-4, rtol=0)


def op_counts(directory):
    import onnx

    counts = {}
    for node in onnx.load(os.path.join(directory, "model.onnx")).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_fused_graphs_use_onnx_runtime_kernels_where_bert4keras_layers_allow(models, tiny_ckpt):
    layers = json.load(open(tiny_ckpt["config"]))["num_hidden_layers"]
    fused = read_onnx_export(models["pair"]["float32"])[0]["export"]["fused"]
    assert fused == {"MultiHeadAttention": layers, "FeedForward": layers, "LayerNormalization": 2 * layers + 1}
    ops = op_counts(models["pair"]["float32"])
    assert ops["Attention"] == layers and "Erf" not in ops and "Expand" not in ops
    assert sum(ops.values()) < sum(op_counts(models["pair"]["unfused"]).values()) / 3
    unfused = op_counts(models["pair"]["unfused"])
    assert "Attention" not in unfused and "LayerNormalization" not in unfused
    assert read_onnx_export(models["pair"]["unfused"])[0]["export"]["fused"] == {}
    int8 = op_counts(models["pair"]["int8"])
    assert int8["QAttention"] == layers and "SkipLayerNormalization" not in int8  # SLOW_FUSIONS left out
    # ALBERT shares one attention, feed-forward and LayerNorm across blocks: those stay as converted
    assert read_onnx_export(models["albert"]["float32"])[0]["export"]["fused"] == {"LayerNormalization": 1}


def first_token_gathers(directory):
    import onnx

    return [node for node in onnx.load(os.path.join(directory, "model.onnx")).graph.node
            if node.op_type == "Gather" and node.name.startswith("xtune_first_token/")]


def test_a_cls_model_computes_its_last_block_for_the_first_token_only(models, tiny_ckpt):
    layers = json.load(open(tiny_ckpt["config"]))["num_hidden_layers"]
    for kind, attention in (("float32", "Attention"), ("int8", "QAttention")):
        fused = read_onnx_export(models["cls"][kind])[0]["export"]["fused"]
        assert fused["FirstTokenOnly"] == 1
        assert len(first_token_gathers(models["cls"][kind])) == 1  # the last block's input at position 0
        # every block's position-wise ops, QKV products included, on the real tokens only (onnx_padding);
        # the attention cores on them scattered back
        assert fused["DropPadding"] == layers
        ops = op_counts(models["cls"][kind])
        assert attention not in ops and ops["MultiHeadAttention"] == layers and ops["NonZero"] == 1
    # TextCNN reads every position; pooled layers read two layers; ALBERT's attention is not fused
    for name in ("pair", "single", "albert"):
        fused = read_onnx_export(models[name]["float32"])[0]["export"]["fused"]
        assert "FirstTokenOnly" not in fused and "DropPadding" not in fused
    assert read_onnx_export(models["cls"]["float32"])[0]["export"]["fused"]["MultiHeadAttention"] == layers


@pytest.mark.parametrize("name", ["pair", "single", "cls"])
def test_int8_is_quantized_and_close_to_float32(models, name):
    import onnx

    ops = {node.op_type for node in onnx.load(os.path.join(models[name]["int8"], "model.onnx")).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger"}, ops
    meta, token_dict = read_onnx_export(models[name]["int8"])
    examples = corpus_examples(meta)
    float32 = onnx_probs(onnx_logits(models[name]["float32"]), meta, token_dict, examples)
    int8 = onnx_probs(onnx_logits(models[name]["int8"]), meta, token_dict, examples)
    # int8 weights with per-batch activation scales: near, not equal (the benchmark measures decisions)
    assert np.abs(int8 - float32).max() < 0.05


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_evaluate_on_the_onnx_folder(models, kind):
    test_csv = models["pair"]["data"]["test"]
    on_onnx, on_h5 = evaluate_file(models["pair"][kind], test_csv), evaluate_file(models["pair"]["h5"], test_csv)
    assert on_onnx["examples"] == on_h5["examples"]
    if kind == "float32":
        assert on_onnx == on_h5


def test_cli_predict_on_the_onnx_folder_equals_the_h5(models, tmp_path):
    single = models["single"]
    rows = [{"text": text.replace("\x00", "") or "空", "label": "road"} for text in CORPUS if text.strip()]
    table = str(tmp_path / "hard.csv")
    write_csv(table, rows, ["text", "label"])
    outputs = {}
    for kind in ("h5", "float32"):
        outputs[kind] = str(tmp_path / ("%s.csv" % kind))
        done = cli("predict", single[kind], table, "-o", outputs[kind])
        assert done.returncode == 0, done.stderr[-3000:]
    from_h5, from_onnx = pd.read_csv(outputs["h5"]), pd.read_csv(outputs["float32"])
    assert from_onnx["labels"].tolist() == from_h5["labels"].tolist()
    probs = [c for c in from_h5.columns if c.startswith("prob_")]
    np.testing.assert_allclose(from_onnx[probs].to_numpy(), from_h5[probs].to_numpy(), atol=1e-4)


PLAIN_ORT = """
import json, sys
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx", providers=["CPUExecutionProvider"])
ids = np.array(json.loads(sys.argv[2]), np.int32)
logits = session.run(["logits"], {"token_ids": ids, "segment_ids": np.zeros_like(ids)})[0]
assert "tensorflow" not in sys.modules and "xtune_keras" not in sys.modules, "imported"
print(json.dumps(logits.tolist()))
"""


def test_runs_in_onnx_runtime_without_tensorflow(models, tmp_path):
    directory = models["single"]["float32"]
    meta, token_dict = read_onnx_export(directory)
    ids = [[token_dict["[CLS]"], 7, 8, 9, token_dict["[SEP]"]], [token_dict["[CLS]"], 10, token_dict["[SEP]"], 0, 0]]
    done = subprocess.run([sys.executable, "-c", PLAIN_ORT, directory, json.dumps(ids)],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    model = load_model_file(models["single"]["h5"])[0]
    expected = model.predict([np.array(ids), np.zeros((2, 5))], verbose=0)
    np.testing.assert_allclose(json.loads(done.stdout), expected, atol=1e-4)


def test_quantize_without_onnx_or_an_unknown_format_is_one_line_error(models, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert_one_line_error(capsys, ["export", models["single"]["h5"], out, "--quantize", "int8"],
                          "only with --format onnx")
    assert not os.path.exists(out)
    with pytest.raises(XtuneError, match="--quantize"):
        export_onnx(models["single"]["h5"], out, quantize="int4")


def test_an_export_of_either_format_is_replaced_but_not_other_folders(models, tmp_path):
    single = models["single"]
    target = str(tmp_path / "served")
    export_model(single["h5"], target)
    export_onnx(single["h5"], target)  # a SavedModel replaced by an ONNX folder
    assert sorted(os.listdir(target)) == ["model.onnx", "vocab.json", "xtune_meta.json"]
    export_onnx(single["h5"], target, quantize="int8")
    assert sorted(os.listdir(tmp_path)) == ["served"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(XtuneError, match="not an xtune export"):
        export_onnx(single["h5"], str(other))
    assert (other / "keep.txt").read_text() == "mine"
