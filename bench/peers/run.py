"""xtune_keras side by side with its peers, in one run: throughput, peak RSS, test quality.

    .venv/bin/python bench/peers/run.py [--train 1000 --valid 200 --test 800] [--epochs 2]
        [--max-len 128] [--batch-size 32] [--lr 1e-4] [--seed 0] [--threads N]
        [--systems xtune,bert4keras,hf] [--out bench/out/peers/NAME] [--no-flops]
        [--random-encoder DIR] [--hf-bf16] [--xtune-override train.precision=mixed_bfloat16]

From the repository root. Steps:

1. data: ``xtune prepare-data reuters-r8 DIR --train N --valid N --test N --seed S`` into
   bench/out/peers/data/r8-<train>-<valid>-<test>-seed<S> (reused if there);
2. the three systems, one after another, each in its own process on that data with the same
   encoder (all-MiniLM-L6-v2), head, loss, optimizer, batch size, max length, epochs and seed:
     xtune       side_xtune.py      ``xtune train experiments/demo_reuters_r8_minilm.yaml ...``
     bert4keras  side_bert4keras.py a plain bert4keras example-style loop
     hf          side_hf.py         transformers.Trainer on PyTorch CPU (bench/out/venv-hf)
   peak RSS = ``ru_maxrss`` of the child from ``os.wait4``; each writes summary.json (timings,
   batch shapes, token-id digests) and predictions.csv;
3. ``flops.py``: the analytic FLOP/s of an xtune training step at batch x max-len against a
   plain float32 matmul (skipped with --no-flops);
4. one scorer (score.py) on every predictions.csv; RESULTS.md and results.json in --out.

``--random-encoder DIR``: instead of MiniLM, a random-weight Google-format folder of another shape
(``xtune tiny-checkpoint DIR --hidden 768 --layers 12 --heads 12 --intermediate 3072 --max-position
512 --vocab checkpoints/all-MiniLM-L6-v2/vocab.txt`` = BERT-base): the TF sides and flops.py load it,
the HF side builds a randomly initialised ``BertModel`` of its bert_config.json; the vocabulary is
MiniLM's, so every side tokenizes as before. For speed only: the weights differ between sides.

See README.md beside this file for what is timed and for the fairness choices.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import flopcount  # noqa: E402
import score  # noqa: E402

MAIN_PYTHON = os.path.join(".venv", "bin", "python")
HF_PYTHON = os.path.join("bench", "out", "venv-hf", "bin", "python")
SYSTEMS = {
    "xtune": ("side_xtune.py", MAIN_PYTHON, "xtune_keras (xtune train)"),
    "bert4keras": ("side_bert4keras.py", MAIN_PYTHON, "plain bert4keras loop"),
    "hf": ("side_hf.py", HF_PYTHON, "HF Trainer (PyTorch CPU)"),
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--valid", type=int, default=200)
    p.add_argument("--test", type=int, default=800)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="intra-op threads for every system (default: all cores)")
    p.add_argument("--systems", default="xtune,bert4keras,hf")
    p.add_argument("--data", default=None, help="an existing folder with train/valid/test.csv")
    p.add_argument("--out", default=None, help="default: bench/out/peers/r8-<sizes>-e<epochs>-len<max-len>")
    p.add_argument("--hf-python", default=HF_PYTHON)
    p.add_argument("--hf-optim", default=None, help="TrainingArguments.optim (default: the Trainer's)")
    p.add_argument("--hf-group-by-length", action="store_true",
                   help="run the Trainer with its own length grouping (train_sampling_strategy="
                        "'group_by_length'; default: off, its default)")
    p.add_argument("--random-encoder", default=None, help="a random-weight Google-format folder (see above)")
    p.add_argument("--hf-bf16", action="store_true", help="TrainingArguments(bf16=True): torch's bfloat16 autocast")
    p.add_argument("--xtune-override", action="append", default=[], help="extra key=value for xtune train")
    p.add_argument("--no-flops", action="store_true", help="skip flops.py")
    p.add_argument("--flops-args", default="", help="extra arguments for flops.py, e.g. '--matmul 2048'")
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in args.systems:
        if s not in SYSTEMS:
            p.error("unknown system %r; valid: %s" % (s, ", ".join(SYSTEMS)))
    if "hf" in args.systems and not os.path.isfile(args.hf_python):
        p.error("%s not found: make the HF venv first (bash bench/peers/setup_hf_venv.sh) or pass "
                "--hf-python, or leave hf out of --systems" % args.hf_python)
    if not os.path.isfile(MAIN_PYTHON):
        p.error("%s not found: run from the repository root after make install" % MAIN_PYTHON)
    return args


def ensure_data(args):
    if args.data:
        return args.data
    folder = os.path.join("bench", "out", "peers", "data",
                          "r8-%d-%d-%d-seed%d" % (args.train, args.valid, args.test, args.seed))
    if not os.path.isfile(os.path.join(folder, "test.csv")):
        cmd = [os.path.join(".venv", "bin", "xtune"), "prepare-data", "reuters-r8", folder,
               "--train", str(args.train), "--valid", str(args.valid), "--test", str(args.test),
               "--seed", str(args.seed)]
        print("+ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return folder


def run_child(cmd, log_path):
    """Run ``cmd`` with its output in ``log_path``; its exit status, wall seconds, peak RSS."""
    print("+ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024.0, 1)}  # Linux: ru_maxrss in KiB


def side_command(system, args, data, out):
    script, python, _ = SYSTEMS[system]
    python = args.hf_python if system == "hf" else python
    cmd = [python, os.path.join(HERE, script), "--data", data, "--out", out,
           "--epochs", str(args.epochs), "--max-len", str(args.max_len),
           "--batch-size", str(args.batch_size), "--lr", repr(args.lr), "--seed", str(args.seed),
           "--threads", str(args.threads)]
    if system == "hf" and args.hf_optim:
        cmd += ["--optim", args.hf_optim]
    if system == "hf" and args.hf_group_by_length:
        cmd += ["--group-by-length"]
    if system == "hf" and args.hf_bf16:
        cmd += ["--bf16"]
    if args.random_encoder:
        cmd += (["--random-config", os.path.join(args.random_encoder, "bert_config.json")] if system == "hf"
                else ["--encoder", args.random_encoder])
    if system == "xtune":
        for item in args.xtune_override:
            cmd += ["--xtune-override", item]
    return cmd


def encoder_config(args):
    """The encoder's shape for flopcount.py (MiniLM's unless --random-encoder)."""
    if not args.random_encoder:
        return flopcount.MINILM
    with open(os.path.join(args.random_encoder, "bert_config.json"), encoding="utf-8") as f:
        return json.load(f)


def training_flops(summary, num_labels, config=None):
    """Analytic FLOPs of the trained batches; ``exact`` when one shape was logged per step."""
    shapes = [tuple(s) for s in summary.get("batch_shapes", [])]
    steps = summary.get("steps_run", 0)
    logged = summary.get("logged_steps", len(shapes))  # micro-batches log several shapes a step
    if not shapes or not steps or not logged:
        return None, False
    total = flopcount.run_flops(shapes, config, num_labels=num_labels)
    if logged == steps:
        return total, True
    return total / logged * steps, False


def collect(system, args, data, out, child, matmul_gflops):
    row = {"system": system, "label": SYSTEMS[system][2], **child}
    path = os.path.join(out, "summary.json")
    if child["returncode"] != 0 or not os.path.isfile(path):
        row["error"] = "exit status %s; see %s.log" % (child["returncode"], out)
        return row
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    row["summary"] = summary
    row["score"] = score.score_files(os.path.join(data, "test.csv"), os.path.join(out, "predictions.csv"))
    timing = summary["timing"]
    flops, exact = training_flops(summary, len(summary["labels"]), encoder_config(args))
    shapes = summary.get("batch_shapes", [])
    if flops is not None and timing["train_seconds"]:
        row["gflops_per_s"] = flops / timing["train_seconds"] / 1e9
        row["flops_exact"] = exact
        tokens = sum(b * n for b, n in shapes) * (summary["steps_run"] / summary.get("logged_steps", len(shapes)))
        row["padded_tokens_per_s"] = tokens / timing["train_seconds"]
        row["mean_padded_len"] = sum(b * n for b, n in shapes) / sum(b for b, _ in shapes)  # per example
        if matmul_gflops:
            row["fraction_of_matmul"] = row["gflops_per_s"] / matmul_gflops
    return row


def fmt(value, pattern="%.1f"):
    return "n/a" if value is None else pattern % value


def markdown(args, data, rows, flops_result):
    lines = [
        "# Peers: xtune_keras vs a plain bert4keras loop vs the HF Trainer",
        "",
        "Reuters R8 (%s: train %d, valid %d, test %d, seed %d), %s, [CLS] -> Dense 256 relu "
        "-> dropout 0.1 -> Dense 8, softmax cross-entropy, Adam lr %g (eps 1e-6, no decay, no warmup, "
        "no clipping), batch %d, max_len %d, %d epoch(s), final-epoch weights tested. "
        "%d intra-op threads each, on %d cores (%s). Precision: xtune %s, HF %s, bert4keras float32."
        % (data, args.train, args.valid, args.test, args.seed, encoder_label(args), args.lr, args.batch_size,
           args.max_len, args.epochs, args.threads, os.cpu_count(), cpu_label(),
           next((o.split("=", 1)[1] for o in args.xtune_override if o.startswith("train.precision=")), "float32"),
           "bfloat16 autocast" if args.hf_bf16 else "float32"),
        "",
        "| system | train ex/s | ex/s after warm-up | padded tok/s | GFLOP/s | of matmul peak "
        "| timed train s | peak RSS MiB | process s | test acc | test macro-F1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append("| %s | failed: %s | | | | | | %s | %s | | |"
                         % (r["label"], r["error"], r["peak_rss_mib"], r["wall_s"]))
            continue
        t, s = r["summary"]["timing"], r["score"]
        frac = r.get("fraction_of_matmul")
        lines.append("| %s | %s | %s | %s | %s%s | %s | %s | %s | %s | %.4f | %.4f |" % (
            r["label"], fmt(t["examples_per_s"], "%.2f"), fmt(t["steady_examples_per_s"], "%.2f"),
            fmt(r.get("padded_tokens_per_s"), "%.0f"), fmt(r.get("gflops_per_s")),
            "" if r.get("flops_exact", True) else "*", "n/a" if frac is None else "%.1f%%" % (100 * frac),
            fmt(t["train_seconds"], "%.2f"), fmt(r["peak_rss_mib"], "%.0f"), fmt(r["wall_s"], "%.1f"),
            s["accuracy"], s["macro_f1"]))
    lines += [
        "",
        "- train ex/s: training examples x epochs / the timed seconds; timed: each epoch from the "
        "framework's epoch-begin hook to its epoch-end hook, before validation (training steps and the "
        "feeding of their batches; not start-up, model building, tokenizing, validation or test).",
        "- after warm-up: the same without the first %d steps of epoch 1 (graph tracing, first "
        "allocations); n/a when epoch 1 has no more steps than that." % 3,
        "- padded tok/s and GFLOP/s: from the shape (batch x padded length) of every trained batch; "
        "GFLOP/s = analytic matmul FLOPs of those steps (flopcount.py: forward 2*B*n*(4d^2+2d*d_ff)*L + "
        "4*B*n^2*d*L + head, x3 for forward+backward) / timed seconds (warm-up included)%s." % (
            "; * = mean over the logged batches x steps run (not one shape a step)"
            if any(not r.get("flops_exact", True) for r in rows) else ""),
        "- peak RSS: ru_maxrss of the whole child process (start-up to test); process s: its wall time.",
        "- test acc / macro-F1: score.py on each system's predictions.csv (macro over the labels in the "
        "test truth or predictions).",
        "",
        "| system | batching | epoch seconds | mean padded len | valid per epoch | threads | versions "
        "| test ids digest |",
        "| --- | --- | --- | ---: | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "error" in r:
            continue
        sm = r["summary"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["label"], sm.get("batching", "per batch"), ", ".join("%.2f" % x for x in sm["timing"]["epoch_seconds"]),
            fmt(r.get("mean_padded_len")), valid_text(sm.get("valid_per_epoch", [])),
            ", ".join("%s %s" % kv for kv in sm["threads"].items()),
            ", ".join("%s %s" % kv for kv in sm["versions"].items()), sm["token_digests"]["test"]))
    digests = {json.dumps(r["summary"]["token_digests"], sort_keys=True) for r in rows if "error" not in r}
    lines += ["", "Token ids fed by the systems (train, valid, test digests): %s." % (
        "identical" if len(digests) == 1 else "DIFFERENT (see summary.json token_digests)")]
    xt = next((r for r in rows if r["system"] == "xtune" and "error" not in r), None)
    if xt and xt["summary"].get("own_test_metrics"):
        own = xt["summary"]["own_test_metrics"]
        lines.append("xtune's own test metrics (result.json): acc %.4f, macro-F1 %.4f (scorer: %.4f, %.4f)."
                     % (own["acc"], own["macro_f1"], xt["score"]["accuracy"], xt["score"]["macro_f1"]))
    if flops_result:
        lines += ["", "## FLOP/s (flops.py)", "", flops_markdown(flops_result)]
    lines.append("")
    return "\n".join(lines)


def encoder_label(args):
    if not args.random_encoder:
        return "all-MiniLM-L6-v2"
    c = encoder_config(args)
    return ("random weights of shape L%d d%d ff%d (%s; speed only, quality meaningless)"
            % (c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"], args.random_encoder))


def cpu_label():
    from xtune_keras.cpu import cpu_flags, cpu_name  # no TensorFlow in the harness

    return "%s, AMX bfloat16: %s" % (cpu_name(), "yes" if "amx_bf16" in cpu_flags() else "no")


def valid_text(log):
    parts = []
    for row in log:
        acc = row.get("val_acc")
        loss = row.get("val_loss", row.get("eval_loss"))
        bits = []
        if loss is not None:
            bits.append("loss %.3f" % loss)
        if acc is not None:
            bits.append("acc %.3f" % acc)
        parts.append("e%s %s" % (row.get("epoch"), " ".join(bits)))
    return "; ".join(parts) or "n/a"


def flops_markdown(result):
    sys.path.insert(0, HERE)
    import flops

    return flops.markdown(result)


def main(argv=None):
    args = parse(argv)
    data = ensure_data(args)
    out = args.out or os.path.join("bench", "out", "peers", "r8-%d-%d-%d-e%d-len%d" % (
        args.train, args.valid, args.test, args.epochs, args.max_len))
    os.makedirs(out, exist_ok=True)
    started = time.time()
    children = {}
    for system in args.systems:
        side_out = os.path.join(out, system)
        os.makedirs(side_out, exist_ok=True)
        children[system] = run_child(side_command(system, args, data, side_out), side_out + ".log")
        print("  %s: %s" % (system, json.dumps(children[system])), flush=True)

    flops_result = None
    if not args.no_flops:
        flops_json = os.path.join(out, "flops.json")
        cmd = [MAIN_PYTHON, os.path.join(HERE, "flops.py"), "--batch", str(args.batch_size),
               "--seq-len", str(args.max_len), "--threads", str(args.threads), "--json", flops_json]
        if args.random_encoder:
            cmd += ["--encoder", args.random_encoder]
        cmd += args.flops_args.split()
        child = run_child(cmd, os.path.join(out, "flops.log"))
        print("  flops: %s" % json.dumps(child), flush=True)
        if child["returncode"] == 0:
            with open(flops_json, encoding="utf-8") as f:
                flops_result = json.load(f)
    matmul = flops_result["matmul"]["gflops_per_s"] if flops_result else None

    rows = [collect(s, args, data, os.path.join(out, s), children[s], matmul) for s in args.systems]
    text = markdown(args, data, rows, flops_result)
    with open(os.path.join(out, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "data": data, "rows": rows, "flops": flops_result,
                   "total_wall_s": round(time.time() - started, 1)}, f, indent=2, default=str)
        f.write("\n")
    print(text)
    print("wrote %s (total %.0f s)" % (os.path.join(out, "RESULTS.md"), time.time() - started))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
