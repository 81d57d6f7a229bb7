"""``xtune serve MODEL``: an HTTP JSON API over a trained ``.h5``, a SavedModel export or an ONNX
export (FastAPI on uvicorn).

- ``POST /predict`` with ``{"texts": [...]}`` (the first segment only) or ``{"text1": [...],
  "text2": [...]}`` (the joined cells of ``data.text1`` / ``data.text2``, cleaned and tokenized
  here as a table's rows are) answers ``{"predictions": [{"labels": [...], "probabilities":
  {label: p}}, ...]}``, one entry per text, in the request's order.
- ``GET /health``: ``{"status": "ok"}``; ``GET /meta``: labels, decision rule, fields, limits.
- A bad request (not JSON, not an object, a missing or unknown field, a wrong type, text1/text2 of
  different lengths, too many texts, a body over the limit) gets a 4xx and a one-line JSON
  ``{"error": "..."}``; it never reaches the model, so the server goes on answering.

Dynamic batching (as TF Serving's batching and Triton's dynamic batcher do): the texts of
concurrent requests are collected until ``max_batch`` texts are waiting or ``max_wait_ms`` has
passed since the first, sorted by length (less padding), predicted as one batch on a worker
thread (one batch at a time: the model's own ops use every core), and each request gets its own rows back.
"""
import asyncio
import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from xtune_keras.errors import XtuneError

SETTINGS_ENV = "XTUNE_SERVE_SETTINGS"  # how --workers N hands the settings to each worker process
DEFAULTS = {"host": "127.0.0.1", "port": 8080, "max_batch": 32, "max_wait_ms": 5.0, "max_texts": 256,
            "max_body_bytes": 1_000_000, "workers": 1, "precision": "float32"}
FIELDS = ("texts", "text1", "text2")


class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


# --------------------------------------------------------------------------- requests


def parse_request(body, max_texts):
    """``(text1, text2)`` lists of a /predict body; ``RequestError`` naming what is wrong."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "body is not JSON (%s)" % str(exc).splitlines()[0])
    if not isinstance(payload, dict):
        raise RequestError(400, "body must be a JSON object with 'texts', or 'text1' and 'text2'")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise RequestError(400, "unknown field %r (fields: %s)" % (unknown[0], ", ".join(FIELDS)))
    if "texts" in payload:
        if "text1" in payload or "text2" in payload:
            raise RequestError(400, "give 'texts', or 'text1' and 'text2', not both")
        text1 = _strings(payload, "texts")
        text2 = [""] * len(text1)
    elif "text1" in payload:
        text1 = _strings(payload, "text1")
        text2 = _strings(payload, "text2") if "text2" in payload else [""] * len(text1)
        if len(text2) != len(text1):
            raise RequestError(400, "'text1' has %d texts and 'text2' %d" % (len(text1), len(text2)))
    else:
        raise RequestError(400, "missing field 'texts' (or 'text1' and 'text2')")
    if len(text1) > max_texts:
        raise RequestError(413, "%d texts in one request; at most %d (--max-texts)" % (len(text1), max_texts))
    return text1, text2


def _strings(payload, key):
    value = payload[key]
    if not isinstance(value, list):
        raise RequestError(400, "'%s' must be a list of strings, got %s" % (key, type(value).__name__))
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise RequestError(400, "'%s'[%d] must be a string, got %s" % (key, i, type(text).__name__))
    return value


async def read_body(request, max_bytes):
    """The body, refused with 413 past ``max_bytes`` (by Content-Length, or while streaming it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, "body of %s bytes; at most %d (--max-body-bytes)" % (declared, max_bytes))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, "body over %d bytes (--max-body-bytes)" % max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- batching


class Batcher:
    """Dynamic batching of the texts of concurrent requests (see the module's doc)."""

    def __init__(self, predict, max_batch, max_wait_ms):
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000.0
        self.queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xtune-predict")
        self.batches = 0  # predicted batches (GET /meta; tests read it)

    async def submit(self, text1, text2):
        """The probabilities of these texts, ``[len(text1), labels]``, once their batch has run."""
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((text1, text2, done))
        return await done

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            waiting, deadline = len(pending[0][0]), loop.time() + self.max_wait
            while waiting < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
                waiting += len(pending[-1][0])
            await self._predict(pending, loop)

    async def _predict(self, pending, loop):
        text1 = [t for request in pending for t in request[0]]
        text2 = [t for request in pending for t in request[1]]
        order = sorted(range(len(text1)), key=lambda i: len(text1[i]) + len(text2[i]))
        try:
            sorted_probs = await loop.run_in_executor(
                self.executor, self.predict, [text1[i] for i in order], [text2[i] for i in order])
        except Exception as exc:  # the requests of this batch fail; the server goes on
            for _, _, done in pending:
                if not done.done():
                    done.set_exception(exc)
            return
        self.batches += 1
        probs = np.empty_like(sorted_probs)
        probs[order] = sorted_probs
        start = 0
        for request_text1, _, done in pending:
            if not done.done():  # its client may have gone
                done.set_result(probs[start:start + len(request_text1)])
            start += len(request_text1)

    def close(self):
        self.executor.shutdown(wait=False)


# --------------------------------------------------------------------------- the app


def model_kind(path):
    """"h5", "onnx" or "savedmodel", after checking that ``path`` is one (one-line error)."""
    from xtune_keras.export.folders import is_onnx_export, is_saved_model_export

    if os.path.isdir(path):
        if is_onnx_export(path):
            return "onnx"
        if is_saved_model_export(path):
            return "savedmodel"
        raise XtuneError("%s: not an xtune export (SavedModel or ONNX folder)" % path)
    from xtune_keras.model.modelfile import read_meta

    read_meta(path)
    return "h5"


def create_app(settings):
    """The FastAPI app over ``settings["model"]`` (loaded now, before the first request)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from xtune_keras.data.tables import LabelVocab
    from xtune_keras.inference import open_text_model

    settings = dict(DEFAULTS, **settings)
    kind = model_kind(settings["model"])
    meta, probabilities_of_texts = open_text_model(settings["model"], settings["precision"])
    labels = LabelVocab(meta["labels"])
    batcher = Batcher(probabilities_of_texts, settings["max_batch"], settings["max_wait_ms"])

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.close()

    app = FastAPI(title="xtune serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    def error(status, message):
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # 404, 405: the same one-line JSON as ours
        return error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/meta")
    async def model_meta():
        return {"model": os.path.basename(os.path.normpath(settings["model"])), "kind": kind,
                "labels": meta["labels"], "multi_label": meta["multi_label"], "threshold": meta["threshold"],
                "text1": meta["text1"], "text2": meta["text2"], "max_len": meta["max_len"],
                "truncation": meta["truncation"], "max_batch": settings["max_batch"],
                "max_wait_ms": settings["max_wait_ms"], "max_texts": settings["max_texts"],
                "max_body_bytes": settings["max_body_bytes"], "batches": batcher.batches}

    @app.post("/predict")
    async def predict(request: Request):
        try:
            text1, text2 = parse_request(await read_body(request, settings["max_body_bytes"]),
                                         settings["max_texts"])
        except RequestError as exc:
            return error(exc.status, exc.message)
        if not text1:
            return {"predictions": []}
        try:
            probs = await batcher.submit(text1, text2)
        except Exception as exc:
            return error(500, "prediction failed: %s" % (str(exc).splitlines() or [type(exc).__name__])[0])
        chosen = labels.decode(probs, meta["threshold"], meta["multi_label"])
        return {"predictions": [{"labels": names, "probabilities": dict(zip(labels.names, map(float, row)))}
                                for names, row in zip(chosen, probs)]}

    return app


def app_from_environment():
    """uvicorn's factory in each ``--workers`` process."""
    return create_app(json.loads(os.environ[SETTINGS_ENV]))


def check_settings(settings):
    for key, low in (("max_batch", 1), ("max_wait_ms", 0), ("max_texts", 1), ("max_body_bytes", 1), ("workers", 1)):
        if settings[key] < low:
            raise XtuneError("--%s: %s; at least %s" % (key.replace("_", "-"), settings[key], low))
    if not 0 <= settings["port"] <= 65535:
        raise XtuneError("--port: %s is not a port (0-65535)" % settings["port"])


def serve(settings):
    """Run the server until interrupted (uvicorn; ``workers`` processes, each with the model)."""
    import uvicorn

    settings = dict(DEFAULTS, **settings)
    check_settings(settings)
    model_kind(settings["model"])  # a bad path fails here, once, before any worker starts
    options = {"host": settings["host"], "port": settings["port"], "log_level": "warning"}
    print("xtune serve: %s on http://%s:%d (POST /predict, GET /health, GET /meta)"
          % (settings["model"], settings["host"], settings["port"]), flush=True)
    if settings["workers"] == 1:
        uvicorn.run(create_app(settings), **options)
    else:
        os.environ[SETTINGS_ENV] = json.dumps(settings)
        uvicorn.run("xtune_keras.export.serve:app_from_environment", factory=True,
                    workers=settings["workers"], **options)
