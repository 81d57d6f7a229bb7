"""Achieved FLOP/s of both pretraining sides against the CPU's matmul peak, from files on disk.

    .venv/bin/python bench/pretrain/efficiency.py OUT --encoder checkpoints/all-MiniLM-L6-v2 \
        [--batch 32] [--max-len 128] [--rate 0.15]

Reads ``OUT/summary_xtune.json`` and ``OUT/summary_hf.json`` (``bench/pretrain/run.sh``) and
``OUT/flops.json`` (``bench/peers/flops.py --json``, its float32 matmul peak). The analytic FLOPs
(``bench/peers/flopcount.py``) differ between the sides by the vocabulary projection: xtune computes
it at the masked slots only, the Trainer's ``BertForMaskedLM`` at every token. At equal kernel
efficiency the speed-up is therefore the ratio of the two step FLOPs; what lies beyond it is the
peer's lower efficiency per FLOP on that CPU.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))

import flopcount  # noqa: E402


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--encoder", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--rate", type=float, default=0.15)
    args = p.parse_args()
    config = read_json(os.path.join(args.encoder, "bert_config.json"))
    flops = read_json(os.path.join(args.out, "flops.json"))
    peak = flops["matmul"]["gflops_per_s"]
    slots = max(1, math.ceil(args.max_len * args.rate))  # xtune_keras.data.masking.max_predictions
    predicted = {"xtune": slots, "hf": args.max_len}
    print("%s, %d cores, float32 matmul peak %.1f GFLOP/s" % (flops["cpu"], flops["cores"], peak))
    print("\n| side | positions projected per block | GFLOP per step | tokens/s | GFLOP/s | of matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    step_flops = {}
    for side in ("xtune", "hf"):
        summary = read_json(os.path.join(args.out, "summary_%s.json" % side))
        step_flops[side] = flopcount.mlm_train_step_flops(args.batch, args.max_len, predicted[side],
                                                          config["vocab_size"], config) / 1e9
        seconds_per_step = args.batch * args.max_len / summary["steady_tokens_per_s"]
        achieved = step_flops[side] / seconds_per_step
        print("| %s | %d | %.1f | %.0f | %.1f | %.0f%% |" % (side, predicted[side], step_flops[side],
                                                          summary["steady_tokens_per_s"], achieved,
                                                          100 * achieved / peak))
    print("\nspeed-up at equal efficiency (FLOP ratio): %.2fx" % (step_flops["hf"] / step_flops["xtune"]))


if __name__ == "__main__":
    main()
