"""Markdown table of result.json files: python3 bench/summarize.py RUNS_DIR NAME [NAME ...]."""
import glob
import json
import os
import sys


def main(runs_dir, names):
    print("| run | best epoch | val acc | val micro-F1 | val macro-F1 "
          "| test acc | test micro-F1 | test macro-F1 | seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        for path in sorted(glob.glob(os.path.join(runs_dir, name, "*", "result.json"))):
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
            b, t = r["best"], r.get("test", {})
            print("| %s | %s | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.0f |" % (
                name, r["best_epoch"], b["val_acc"], b["val_micro_f1"], b["val_macro_f1"],
                t.get("acc", float("nan")), t.get("micro_f1", float("nan")),
                t.get("macro_f1", float("nan")), r["seconds"]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
