"""Bounded load test of ``xtune serve`` on localhost (issue 17): N concurrent clients for T seconds.

    .venv/bin/python bench/serve_load.py [MODEL] [--data data/reuters-r8/test.csv] [--clients 16]
        [--seconds 60] [--texts-per-request 1] [--port 8765] [--max-batch 32] [--max-wait-ms 5]
        [--sample-seconds 10]

Starts ``xtune serve MODEL`` as a subprocess (the same command a user types), waits for
``/health``, sends one warm-up request, reads the server's RSS, then runs ``--clients`` threads,
each with its own keep-alive connection, posting ``{"texts": [...]}`` drawn in turn from the
test table for ``--seconds``. Prints the CPU, requests/s, texts/s, p50/p90/p99 latency, errors
(non-200 answers or broken connections) and the server's RSS (VmRSS from /proc/PID/status)
before and after, VmHWM (its peak), and VmRSS every ``--sample-seconds`` during the run (does it
level off, or keep growing?). The clients share the 2 cores with the server, so the
figures are a lower bound of the server alone.
"""
import argparse
import http.client
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd

from xtune_keras.cpu import machine_description


def memory_kib(pid):
    """VmRSS and VmHWM of a process, in KiB (of the whole process tree's main process)."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def request(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    return answer.status, answer.read()


def wait_healthy(port, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit("xtune serve exited with %s" % process.returncode)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            if request(conn, "GET", "/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.5)
    sys.exit("xtune serve did not answer /health within %d s" % timeout)


def client(port, bodies, offset, stop_at, latencies, errors):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = offset
    while time.perf_counter() < stop_at:
        body = bodies[i % len(bodies)]
        i += 1
        start = time.perf_counter()
        try:
            status, _ = request(conn, "POST", "/predict", body)
        except (OSError, http.client.HTTPException):
            errors.append("connection")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        latencies.append(time.perf_counter() - start)
        if status != 200:
            errors.append(status)


def sample_memory(pid, every, stop, samples):
    """Append ``(seconds since start, VmRSS KiB)`` every ``every`` seconds until ``stop`` is set."""
    start = time.perf_counter()
    while not stop.wait(every):
        samples.append((time.perf_counter() - start, memory_kib(pid)["VmRSS"]))


def request_bodies(data_path, text_column, per_request):
    texts = pd.read_csv(data_path)[text_column].fillna("").astype(str).tolist()
    return [json.dumps({"texts": texts[i:i + per_request]}).encode("utf-8")
            for i in range(0, len(texts) - per_request + 1, per_request)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="checkpoints/demo_reuters_r8_minilm.h5")
    parser.add_argument("--data", default="data/reuters-r8/test.csv")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampled this often during the run")
    args = parser.parse_args(argv)

    bodies = request_bodies(args.data, args.text_column, args.texts_per_request)
    command = [sys.executable, "-m", "xtune_keras.cli", "serve", args.model, "--port", str(args.port),
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(args.port, server)
        warm = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
        assert request(warm, "POST", "/predict", bodies[0])[0] == 200, "the warm-up request failed"
        before = memory_kib(server.pid)
        latencies, errors = [], []
        stop_at = time.perf_counter() + args.seconds
        threads = [threading.Thread(target=client, args=(args.port, bodies, k * 37, stop_at, latencies, errors))
                   for k in range(args.clients)]
        samples, stop = [], threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(server.pid, args.sample_seconds, stop, samples))
        start = time.perf_counter()
        sampler.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        stop.set()
        sampler.join()
        after = memory_kib(server.pid)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=60)

    ms = np.asarray(latencies) * 1000.0
    print("%s; `%s`" % (machine_description(), " ".join(command[2:])))
    print("%d clients for %.1f s, %d text(s) per request, from %s" %
          (args.clients, elapsed, args.texts_per_request, args.data))
    print()
    columns = ["requests", "requests/s", "texts/s", "p50 ms", "p90 ms", "p99 ms", "errors",
               "RSS before MiB", "RSS after MiB", "peak RSS MiB"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " ---: |" * len(columns))
    print("| %d | %.1f | %.1f | %.0f | %.0f | %.0f | %d | %.0f | %.0f | %.0f |" % (
        len(latencies), len(latencies) / elapsed, len(latencies) * args.texts_per_request / elapsed,
        np.percentile(ms, 50), np.percentile(ms, 90), np.percentile(ms, 99), len(errors),
        before["VmRSS"] / 1024, after["VmRSS"] / 1024, after["VmHWM"] / 1024))
    print()
    print("RSS during the run (s: MiB): " + ", ".join("%.0f: %.0f" % (t, kib / 1024) for t, kib in samples))
    if len(samples) >= 4:
        half = len(samples) // 2
        print("RSS growth over the second half of the run: %+.1f MiB" % ((samples[-1][1] - samples[half][1]) / 1024))
    print("server still running at the end: %s; error kinds: %s" % (alive, sorted(set(map(str, errors))) or "none"))


if __name__ == "__main__":
    main()
