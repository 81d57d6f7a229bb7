"""`xtune pretrain` on the tiny checkpoint: the loss falls, the output folder is a Google-format
checkpoint plain bert4keras loads with its MLM head, a killed run resumes, bad input is one line."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tests.helpers import saved_epoch
from xtune_keras.errors import XtuneError
from xtune_keras.recipes import run_recipe
from xtune_keras.rundir import RunDir
from xtune_keras.schema import load_config

PHRASES = ["the road", "water pipe", "noise at night", "street light", "小区门口", "道路积水", "请尽快处理", "噪音扰民"]


def write_corpus(path, lines=300, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choice(PHRASES, rng.integers(3, 12))) + "\n")
    return path


def write_pretrain(tmp, tiny_ckpt, name="tapt_tiny", **sections):
    spec = {"name": name, "corpus": {"files": [write_corpus(str(tmp / "corpus.txt"))], "valid_ratio": 0.05},
            "masking": {"max_len": 32},
            "encoder": {"dir": tiny_ckpt["dir"], "dropout": 0.0, "attention_dropout": 0.0},
            "train": {"lr": 1e-3, "batch_size": 8, "epochs": 2, "eval_every": 10, "optimizer": "adamw",
                      "warmup_steps": 0.1, "lr_decay": True},
            "output": {"dir": str(tmp / "out"), "runs_dir": str(tmp / "runs"), "tensorboard": False}}
    for section, values in sections.items():
        spec[section].update(values)
    path = tmp / (name + ".yaml")
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def pretrained(tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    path = write_pretrain(tmp, tiny_ckpt)
    result = run_recipe(load_config(path, recipe="pretrain"), echo=False)
    return {"tmp": tmp, "yaml": path, "result": result}


def test_loss_falls_and_held_out_metrics_are_logged(pretrained):
    rows = RunDir(pretrained["result"]["run_dir"]).epochs()
    assert [row["step"] for row in rows] == [10.0 * (i + 1) for i in range(len(rows))]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5 and rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.5
    assert rows[-1]["val_perplexity"] == pytest.approx(np.exp(rows[-1]["val_loss"]), rel=1e-6)
    assert 0 <= rows[-1]["val_mlm_acc"] <= 1 and pretrained["result"]["fresh_head"] == []


PLAIN_BERT4KERAS = """
import json, sys, numpy as np
import xtune_keras.compat
from bert4keras.models import build_transformer_model
folder, ids = sys.argv[1], np.array(json.loads(sys.argv[2]), np.int32)
model = build_transformer_model(folder + "/bert_config.json", folder + "/bert_model.ckpt", with_mlm=True)
print(json.dumps(model.predict([ids, np.zeros_like(ids)], verbose=0).tolist()))
"""


def test_output_folder_loads_in_plain_bert4keras_with_the_same_mlm_head(pretrained):
    from xtune_keras.model.mlm import build_mlm_model, build_mlm_transformer, load_available

    folder = pretrained["result"]["output_dir"]
    assert sorted(os.listdir(folder)) == ["bert_config.json", "bert_model.ckpt.data-00000-of-00001",
                                          "bert_model.ckpt.index", "checkpoint", "vocab.txt"]
    ids = np.array([[2, 30, 4, 32, 40, 3], [2, 41, 42, 4, 43, 3]], np.int32)
    done = subprocess.run([sys.executable, "-c", PLAIN_BERT4KERAS, folder, json.dumps(ids.tolist())],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    plain = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    transformer = build_mlm_transformer(os.path.join(folder, "bert_config.json"))
    assert load_available(transformer, os.path.join(folder, "bert_model.ckpt")) == []
    positions = np.array([[2, 4], [3, 1]], np.int32)
    logits = build_mlm_model(transformer, 2).predict(
        {"Input-Token": ids, "Input-Segment": np.zeros_like(ids), "Input-Masked-Positions": positions}, verbose=0)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, np.take_along_axis(plain, positions[:, :, None], axis=1), atol=1e-6)


def test_a_finetuning_experiment_reads_the_output_folder(pretrained, tmp_path):
    from tests.helpers import write_experiment, write_multilabel_csvs

    data = write_multilabel_csvs(str(tmp_path))
    path = write_experiment(str(tmp_path / "exp.yaml"), data, pretrained["result"]["output_dir"], str(tmp_path),
                            train={"epochs": 1})
    assert run_recipe(load_config(path), echo=False)["epochs_run"] == 1


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(pretrained, tmp_path):
    overrides = ["output.dir=%s" % (tmp_path / "out"), "output.runs_dir=%s" % (tmp_path / "runs"),
                 "train.epochs=4", "train.ema_momentum=0.9"]
    whole = ["output.dir=%s" % (tmp_path / "whole"), "output.runs_dir=%s" % (tmp_path / "whole_runs"),
             "train.epochs=4", "train.ema_momentum=0.9"]
    command = [sys.executable, "-m", "xtune_keras.cli", "pretrain", pretrained["yaml"]]
    subprocess.run(command + whole, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = RunDir.of(load_config(pretrained["yaml"], overrides, recipe="pretrain"))
    process = subprocess.Popen(command + overrides, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while saved_epoch(run_dir) < 3 and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not run_dir.finished() and saved_epoch(run_dir) >= 3
    again = subprocess.run(command + overrides, check=True, capture_output=True, text=True)
    assert "resuming" in again.stdout
    expected = RunDir.of(load_config(pretrained["yaml"], whole, recipe="pretrain"))
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert strip(run_dir.epochs()) == [pytest.approx(row, abs=1e-6) for row in strip(expected.epochs())]
    from xtune_keras.convert.checkpoints import load_variables

    got, want = (load_variables(str(tmp_path / name / "bert_model.ckpt")) for name in ("out", "whole"))
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)


def test_save_every_keeps_a_resume_checkpoint_every_few_evaluations(pretrained, tmp_path):
    from bert4keras.backend import keras

    class SeenAtEachChunk:
        def __init__(self):
            self.saved = []

        def callbacks(self, recipe):
            seen = self.saved
            return [keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda epoch, logs: seen.append(saved_epoch(recipe.run_dir)))]

    hook = SeenAtEachChunk()
    overrides = ["output.dir=%s" % (tmp_path / "out"), "output.runs_dir=%s" % (tmp_path / "runs"),
                 "train.save_every=25"]
    result = run_recipe(load_config(pretrained["yaml"], overrides, recipe="pretrain"), echo=False, hooks=[hook])
    chunks = result["steps"] // result["chunk_steps"]
    assert result["chunk_steps"] == 10 and chunks > 3
    assert hook.saved == [3 * (chunk // 3) for chunk in range(chunks)]
    assert RunDir(result["run_dir"]).finished()


@pytest.mark.parametrize("content, override, message", [
    ("\n  \n\n", [], "the corpus has no usable line"),
    (b"good line\n\xff\xfe bad\n", [], "corpus.txt line 2: not UTF-8 text"),
    ("text\nhello\n", ["corpus.columns=[body]"], "no column 'body' (corpus.columns); columns: text"),
    ("a line\n", ["masking.mask_ratio=0.95"], "masking.mask_ratio + masking.random_ratio must be <= 1"),
    ("a line\n", ["masking.segmenter=ltp"], "masking.segmenter: unknown choice 'ltp'"),
])
def test_bad_input_is_one_line(tiny_ckpt, tmp_path, content, override, message):
    path = write_pretrain(tmp_path, tiny_ckpt)
    corpus = tmp_path / ("corpus.csv" if "columns" in " ".join(override) else "corpus.txt")
    (corpus.write_bytes if isinstance(content, bytes) else corpus.write_text)(content)
    overrides = override + ["corpus.files=[%s]" % corpus]
    with pytest.raises(XtuneError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        run_recipe(load_config(path, overrides, recipe="pretrain"), echo=False)
    assert not os.path.exists(tmp_path / "out")


def test_a_vocabulary_that_does_not_match_the_checkpoint(tiny_ckpt, tmp_path):
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt["dir"], folder)
    with open(folder / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("extra_token\n")
    path = write_pretrain(tmp_path, tiny_ckpt, encoder={"dir": str(folder)})
    with pytest.raises(XtuneError, match="the vocabulary does not match the checkpoint"):
        run_recipe(load_config(path, recipe="pretrain"), echo=False)


def test_encoder_pretrain_runs_the_pretraining_once_then_reuses_it(tiny_ckpt, tmp_path):
    from tests.helpers import write_experiment, write_multilabel_csvs

    pretrain = write_pretrain(tmp_path, tiny_ckpt, name="tapt_chain", train={"epochs": 1})
    data = write_multilabel_csvs(str(tmp_path))
    path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp_path),
                            train={"epochs": 1}, encoder={"pretrain": pretrain})
    first = run_recipe(load_config(path), echo=False)
    finished = RunDir.of(load_config(pretrain, recipe="pretrain")).file("result.json")
    stamp = os.path.getmtime(finished)
    second = run_recipe(load_config(path, ["seed=1"]), echo=False)
    assert os.path.getmtime(finished) == stamp  # reused, not trained again
    assert first["epochs_run"] == second["epochs_run"] == 1
    assert load_config(path)["encoder"]["dir"] == tiny_ckpt["dir"]  # the config (and its hash) unchanged
    with pytest.raises(XtuneError, match="tapt_chain.yaml: unknown key 'train.lrr'"):
        load_config(path, ["encoder.pretrain=%s" % write_pretrain(tmp_path, tiny_ckpt, name="tapt_chain",
                                                                     train={"lrr": 1})])


PRESETS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                        "experiments", "pretrain", "*.yaml")))


@pytest.mark.parametrize("path", PRESETS, ids=os.path.basename)
def test_every_shipped_preset_runs_scaled_down_on_the_tiny_checkpoint(path, tiny_ckpt, tmp_path):
    assert load_config(path, recipe="pretrain")["recipe"] == "pretrain"
    corpus = write_corpus(str(tmp_path / "corpus.txt"), lines=40)
    tiny = ["corpus.files=[%s]" % corpus, "corpus.from_experiment=null", "encoder.dir=%s" % tiny_ckpt["dir"],
            "masking.max_len=32", "train.max_steps=4", "train.eval_every=2", "train.batch_size=4",
            "train.grad_accum_steps=1", "train.warmup_steps=0.1", "output.dir=%s" % (tmp_path / "out"),
            "output.runs_dir=%s" % (tmp_path / "r")]
    result = run_recipe(load_config(path, tiny, recipe="pretrain"), echo=False)
    assert result["steps"] == 4 and os.path.isfile(tmp_path / "out" / "bert_model.ckpt.index")


def test_an_edited_pretraining_yaml_changes_the_fine_tuning_runs_hash(tiny_ckpt, tmp_path):
    from tests.helpers import write_experiment, write_multilabel_csvs
    from xtune_keras.schema import config_hash

    pretrain = write_pretrain(tmp_path, tiny_ckpt, name="tapt_hash", train={"epochs": 1})
    path = write_experiment(str(tmp_path / "exp.yaml"), write_multilabel_csvs(str(tmp_path)), tiny_ckpt["dir"],
                            str(tmp_path), encoder={"pretrain": pretrain})
    before = config_hash(load_config(path))
    assert config_hash(load_config(path)) == before
    write_pretrain(tmp_path, tiny_ckpt, name="tapt_hash", train={"epochs": 2})  # same file, new settings
    assert config_hash(load_config(path)) != before


def test_an_embedding_with_more_rows_than_the_vocabulary_pretrains(tiny_ckpt, tmp_path):
    import shutil

    folder = tmp_path / "ckpt"  # like e5: 250002 SentencePiece pieces, an embedding of 250037 rows
    shutil.copytree(tiny_ckpt["dir"], folder)
    tokens = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (folder / "vocab.txt").write_text("\n".join(tokens[:-3]) + "\n", encoding="utf-8")
    path = write_pretrain(tmp_path, tiny_ckpt, encoder={"dir": str(folder)}, train={"max_steps": 2, "eval_every": 2})
    assert run_recipe(load_config(path, recipe="pretrain"), echo=False)["steps"] == 2
