#!/usr/bin/env bash
# Issue 16 on the CPU, one run each (figures: bench/RESULTS.md section 9). Run from the repository
# root after `make demo` and bench/peers/setup_hf_venv.sh, on a quiet machine:
#   1. the peers on a BERT-base-shaped encoder with random weights (speed only), max_len 64 and 128:
#      xtune in its best setting on this CPU (mixed_bfloat16 where the CPU has AMX, else float32;
#      micro-batches as the demo), the plain bert4keras loop (float32: it has no precision option),
#      the HF Trainer (bfloat16 autocast where AMX, else float32);
#   2. the same three on all-MiniLM-L6-v2 with real data (Reuters R8, 1000 training texts, 1 epoch);
#   3. flops.py: a training step's achieved GFLOP/s against the matmul peak of the same precision,
#      float32 and bfloat16, at BERT-base 32 x 128.
# Extra arguments go to every bench/peers/run.py call.
set -euo pipefail
OUT=${OUT:-bench/out/precision}
mkdir -p "$OUT"
grep -m1 "model name" /proc/cpuinfo | tee "$OUT/cpu.txt"
grep -m1 -o -w "amx_bf16\|avx512_bf16\|avx512f" /proc/cpuinfo | sort -u | tee -a "$OUT/cpu.txt" || true
if grep -q -w amx_bf16 /proc/cpuinfo; then XT=mixed_bfloat16; HF=--hf-bf16; else XT=float32; HF=; fi
BASE=checkpoints/random-bert-base
[ -f $BASE/bert_config.json ] || .venv/bin/xtune tiny-checkpoint $BASE --hidden 768 --layers 12 --heads 12 \
    --intermediate 3072 --max-position 512 --vocab checkpoints/all-MiniLM-L6-v2/vocab.txt
for LEN in 64 128; do
    .venv/bin/python bench/peers/run.py --random-encoder $BASE --train 256 --valid 32 --test 32 --epochs 1 \
        --max-len $LEN --xtune-override train.precision=$XT $HF --out "$OUT/base-len$LEN" \
        --flops-args "--precision $XT --steps 3 --warmup 1" "$@"
done
.venv/bin/python bench/peers/run.py --train 1000 --valid 200 --test 800 --epochs 1 --max-len 128 \
    --xtune-override train.precision=$XT $HF --out "$OUT/minilm-r8-len128" --flops-args "--precision $XT" "$@"
for P in float32 mixed_bfloat16; do
    .venv/bin/python bench/peers/flops.py --encoder $BASE --precision $P --steps 3 --warmup 1 --json "$OUT/flops-base-$P.json"
done
for table in "$OUT"/*/RESULTS.md; do echo "== $table"; grep '^| ' "$table" | head -5; done
