"""xtune serve: a real uvicorn process on a free localhost port, over a tiny .h5, its ONNX export and
its SavedModel export. Every bad request gets its 4xx and a one-line JSON error, and the next good
request still answers; concurrent callers get their own rows; --workers N serves too."""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.errors import XtuneError
from xtune_keras.export.serve import Batcher, parse_request, RequestError
from xtune_keras.inference import predict_file
from xtune_keras.recipes.finetune import run_experiment
from xtune_keras.schema import load_config

pytest.importorskip("fastapi", reason="xtune serve needs fastapi and uvicorn (make install)")

# Texts of the fields the model was trained on, some long enough to be truncated, one to be cleaned.
ADDRESSES = ["地址 %d 路" % i for i in range(12)]
CONTEXTS = ["road street broken light 路灯 " * (i % 4 + 1) + ("noise 噪音 " if i % 3 else "water 漏水 停电")
            for i in range(12)]


@pytest.fixture(scope="module")
def model(tiny_ckpt, tmp_path_factory):
    """A two-segment multi-label tiny model (head+tail, a clean pattern) and the probabilities
    ``xtune predict`` gives for ADDRESSES / CONTEXTS read from a table (the reference)."""
    tmp = tmp_path_factory.mktemp("serve")
    os.makedirs(tmp / "data")
    data = write_multilabel_csvs(str(tmp / "data"))
    yaml_path = write_experiment(str(tmp / "serve.yaml"), data, tiny_ckpt["dir"], str(tmp), name="serve",
                                 data={"max_len": 16, "truncation": "head+tail", "clean_patterns": [r"地址\s*\d+"]},
                                 train={"epochs": 1})
    h5 = run_experiment(load_config(yaml_path), echo=False)["h5"]
    table = str(tmp / "texts.csv")
    pd.DataFrame({"addr": ADDRESSES, "ctx": CONTEXTS}).to_csv(table, index=False)
    out = str(tmp / "predicted.csv")
    predict_file(h5, table, out)
    predicted = pd.read_csv(out)
    probs = predicted[[c for c in predicted.columns if c.startswith("prob_")]].to_numpy()
    return {"h5": h5, "tmp": tmp, "probs": probs, "labels": [c[5:] for c in predicted.columns if c.startswith("prob_")]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``xtune serve`` in a subprocess; ``request`` sends one HTTP request and returns (status, JSON)."""

    def __init__(self, model_path, *options):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xtune_keras.cli", "serve", model_path, "--port", str(self.port), *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("server exited: %s" % self.process.stdout.read()[-3000:])
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("server did not answer /health in 180 s")

    def request(self, method, path, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def predict(self, payload):
        return self.request("POST", "/predict", json.dumps(payload).encode("utf-8"),
                            {"Content-Type": "application/json"})

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(model):
    running = Server(model["h5"], "--max-batch", "8", "--max-wait-ms", "100", "--max-texts", "20",
                     "--max-body-bytes", "4000")
    yield running
    running.stop()


def probabilities(answer, labels):
    return np.array([[row["probabilities"][name] for name in labels] for row in answer["predictions"]])


def test_health_and_meta(server, model):
    assert server.request("GET", "/health") == (200, {"status": "ok"})
    status, meta = server.request("GET", "/meta")
    assert status == 200
    assert meta["kind"] == "h5" and meta["labels"] == model["labels"]
    assert meta["text1"] == ["addr"] and meta["text2"] == ["ctx"] and meta["max_batch"] == 8


def test_predictions_equal_xtune_predict_on_a_table(server, model):
    status, answer = server.predict({"text1": ADDRESSES, "text2": CONTEXTS})
    assert status == 200
    assert len(answer["predictions"]) == len(ADDRESSES)
    np.testing.assert_allclose(probabilities(answer, model["labels"]), model["probs"], atol=1e-5)
    for row in answer["predictions"]:  # labels: those over the model's threshold (0.5 here)
        assert row["labels"] == [n for n in model["labels"] if row["probabilities"][n] > 0.5]


def test_empty_request_answers_no_predictions(server):
    assert server.predict({"texts": []}) == (200, {"predictions": []})


BAD_REQUESTS = [
    ("not JSON", b"{texts: [", 400, "not JSON"),
    ("not UTF-8", b"\xff\xfe{", 400, "not JSON"),
    ("an array", b'["a"]', 400, "JSON object"),
    ("no field", b"{}", 400, "missing field 'texts'"),
    ("unknown field", b'{"texts": ["a"], "labels": []}', 400, "unknown field 'labels'"),
    ("both forms", b'{"texts": ["a"], "text1": ["a"]}', 400, "not both"),
    ("texts a string", b'{"texts": "a"}', 400, "'texts' must be a list of strings, got str"),
    ("a number among texts", b'{"texts": ["a", 3]}', 400, "'texts'[1] must be a string, got int"),
    ("text2 of another length", b'{"text1": ["a", "b"], "text2": ["c"]}', 400, "'text1' has 2 texts and 'text2' 1"),
    ("too many texts", json.dumps({"texts": ["a"] * 21}).encode(), 413, "at most 20 (--max-texts)"),
    ("over-long body", json.dumps({"texts": ["a" * 5000]}).encode(), 413, "at most 4000 (--max-body-bytes)"),
]


@pytest.mark.parametrize("body,status,message", [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_gets_its_4xx_and_the_server_goes_on(server, model, body, status, message):
    got_status, answer = server.request("POST", "/predict", body, {"Content-Type": "application/json"})
    assert got_status == status
    assert list(answer) == ["error"] and message in answer["error"] and "\n" not in answer["error"]
    status, answer = server.predict({"text1": ADDRESSES[:2], "text2": CONTEXTS[:2]})
    assert status == 200
    np.testing.assert_allclose(probabilities(answer, model["labels"]), model["probs"][:2], atol=1e-5)


def test_body_streamed_past_the_limit_without_a_length_is_refused(server):
    """A chunked body declares no Content-Length: the limit holds while it is read."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = iter([b'{"texts": ["', b"a" * 3000, b"a" * 3000, b'"]}'])
    connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "--max-body-bytes" in json.loads(response.read())["error"]
    connection.close()
    assert server.predict({"texts": ["a"]})[0] == 200


@pytest.mark.parametrize("method,path,status", [("GET", "/nowhere", 404), ("GET", "/predict", 405),
                                                ("POST", "/health", 405)])
def test_unknown_route_and_method_are_one_line_json(server, method, path, status):
    got_status, answer = server.request(method, path)
    assert got_status == status and list(answer) == ["error"]


def test_concurrent_callers_get_their_own_rows(server, model):
    """16 threads, each asking for its own subset in its own order, several times, at once: each
    answer holds its own rows (batching across callers must not mix them), and the server did batch."""
    batches_before = server.request("GET", "/meta")[1]["batches"]
    rng = np.random.default_rng(0)
    asks = [rng.permutation(len(ADDRESSES))[:int(rng.integers(1, 6))] for _ in range(16)]
    barrier, errors, requests_sent = threading.Barrier(len(asks)), [], []

    def caller(rows):
        barrier.wait()
        for _ in range(3):
            status, answer = server.predict({"text1": [ADDRESSES[i] for i in rows],
                                             "text2": [CONTEXTS[i] for i in rows]})
            requests_sent.append(1)
            try:
                assert status == 200
                np.testing.assert_allclose(probabilities(answer, model["labels"]), model["probs"][rows], atol=1e-5)
            except AssertionError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=caller, args=(rows,)) for rows in asks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    batches = server.request("GET", "/meta")[1]["batches"] - batches_before
    assert 0 < batches < len(requests_sent)  # requests shared batches


def test_onnx_and_saved_model_exports_serve_the_same_predictions(model):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow_text")
    from xtune_keras.export.onnx import export_onnx
    from xtune_keras.export.savedmodel import export_model

    folders = {"onnx": str(model["tmp"] / "served_onnx"), "savedmodel": str(model["tmp"] / "served_savedmodel")}
    export_onnx(model["h5"], folders["onnx"])
    export_model(model["h5"], folders["savedmodel"])
    for kind, folder in folders.items():
        running = Server(folder)
        try:
            assert running.request("GET", "/meta")[1]["kind"] == kind
            status, answer = running.predict({"text1": ADDRESSES, "text2": CONTEXTS})
            assert status == 200
            np.testing.assert_allclose(probabilities(answer, model["labels"]), model["probs"], atol=1e-4)
            assert running.request("POST", "/predict", b"[", {})[0] == 400
            assert running.predict({"text1": ADDRESSES[:1], "text2": CONTEXTS[:1]})[0] == 200
        finally:
            running.stop()


def test_workers_serve_from_several_processes(model):
    running = Server(model["h5"], "--workers", "2")
    try:
        for _ in range(4):
            status, answer = running.predict({"text1": ADDRESSES[:3], "text2": CONTEXTS[:3]})
            assert status == 200
            np.testing.assert_allclose(probabilities(answer, model["labels"]), model["probs"][:3], atol=1e-5)
        assert running.request("GET", "/nowhere")[0] == 404
    finally:
        running.stop()


@pytest.mark.parametrize("options,message", [(["--max-batch", "0"], "--max-batch: 0; at least 1"),
                                             (["--port", "70000"], "--port: 70000 is not a port"),
                                             (["--workers", "0"], "--workers: 0; at least 1")])
def test_bad_settings_are_one_line_errors(model, options, message):
    done = subprocess.run([sys.executable, "-m", "xtune_keras.cli", "serve", model["h5"], *options],
                          capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_path_that_is_no_model_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "xtune_keras.cli", "serve", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not an xtune export" in done.stderr and "Traceback" not in done.stderr


def test_parse_request_forms():
    assert parse_request(b'{"texts": ["a", "b"]}', 5) == (["a", "b"], ["", ""])
    assert parse_request(b'{"text1": ["a"]}', 5) == (["a"], [""])
    assert parse_request(b'{"text1": ["a"], "text2": ["b"]}', 5) == (["a"], ["b"])
    with pytest.raises(RequestError):
        parse_request(b'{"texts": ["a", "b"]}', 1)


def test_batcher_sorts_by_length_and_returns_each_request_its_rows():
    import asyncio

    seen = []

    def predict(text1, text2):
        seen.append(list(text1))
        return np.array([[len(a) + len(b), float(a[-1])] for a, b in zip(text1, text2)], np.float64)

    async def main():
        batcher = Batcher(predict, max_batch=100, max_wait_ms=50)
        task = asyncio.create_task(batcher.run())
        first, second = await asyncio.gather(batcher.submit(["xxxx1", "x2"], ["", ""]),
                                             batcher.submit(["xxx3"], ["yy"]))
        task.cancel()
        batcher.close()
        return first, second, batcher.batches

    first, second, batches = asyncio.run(main())
    assert batches == 1 and seen == [["x2", "xxxx1", "xxx3"]]
    np.testing.assert_array_equal(first, [[5, 1], [2, 2]])
    np.testing.assert_array_equal(second, [[6, 3]])


def test_xtune_error_is_the_base_of_setting_errors():
    from xtune_keras.export.serve import DEFAULTS, check_settings

    with pytest.raises(XtuneError, match="--max-wait-ms"):
        check_settings(dict(DEFAULTS, max_wait_ms=-1))
