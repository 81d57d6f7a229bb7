"""Quality over seeds: one Markdown table from several bench/peers/run.py output folders.

    python3 bench/peers/seeds.py NAME=FOLDER[,FOLDER...] [NAME=...]

Each NAME is a column group (e.g. ``grouped=out/len256-grouped,out/len256-grouped-seed1``);
every folder's results.json gives, per system, test macro-F1, test accuracy and examples/s. The
seed of a folder is read from its results.json, so runs of one seed are paired across folders.
Printed: per system and seed the three figures, their means, and the paired differences of
macro-F1 against the plain loop and the Trainer with a paired t statistic (n - 1 degrees of
freedom; with 3 seeds |t| > 4.30 is p < 0.05).
"""
import json
import math
import os
import statistics
import sys


def read(folder):
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
        result = json.load(f)
    seed = result["args"]["seed"]
    rows = {}
    for row in result["rows"]:
        if "score" in row:
            rows[row["system"]] = {"macro_f1": row["score"]["macro_f1"], "acc": row["score"]["accuracy"],
                                   "ex_s": row["summary"]["timing"]["examples_per_s"]}
    return seed, rows


def collect(specs):
    """{(variant, system): {seed: figures}}; a variant's xtune rows are named by the variant."""
    table = {}
    for spec in specs:
        name, folders = spec.split("=", 1)
        for folder in folders.split(","):
            seed, rows = read(folder)
            for system, figures in rows.items():
                key = name if system == "xtune" else system
                table.setdefault(key, {})[seed] = figures
    return table


def paired_t(a, b):
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2:
        return statistics.mean(diffs), float("nan")
    sd = statistics.stdev(diffs)
    return statistics.mean(diffs), (statistics.mean(diffs) / (sd / math.sqrt(len(diffs))) if sd else float("inf"))


def main(specs):
    table = collect(specs)
    seeds = sorted({s for runs in table.values() for s in runs})
    print("| system | " + " | ".join("seed %d macro-F1 / acc / ex/s" % s for s in seeds)
          + " | mean macro-F1 | mean acc | vs plain loop: mean diff (t) | vs Trainer: mean diff (t) |")
    print("| --- |" + " ---: |" * (len(seeds) + 4))
    for key, runs in table.items():
        cells = ["%.4f / %.4f / %.2f" % (runs[s]["macro_f1"], runs[s]["acc"], runs[s]["ex_s"]) if s in runs else "n/a"
                 for s in seeds]
        shared = [s for s in seeds if s in runs]
        f1 = [runs[s]["macro_f1"] for s in shared]
        compare = []
        for peer in ("bert4keras", "hf"):
            both = [s for s in shared if s in table.get(peer, {})]
            if key == peer or not both:
                compare.append("")
                continue
            diff, t = paired_t([runs[s]["macro_f1"] for s in both], [table[peer][s]["macro_f1"] for s in both])
            compare.append("%+.4f (%.2f)" % (diff, t))
        print("| %s | %s | %.4f | %.4f | %s |" % (key, " | ".join(cells), statistics.mean(f1),
                                                 statistics.mean(runs[s]["acc"] for s in shared),
                                                 " | ".join(compare)))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
