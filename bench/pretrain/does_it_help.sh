#!/usr/bin/env bash
# Issue 13, "does it help": FiT against TAPT + FiT, 3 seeds each, on Reuters R8 with MiniLM and on
# inews with multilingual-e5-small. Run from the repository root after `make demo` (which installs
# the assets and writes data/reuters-r8 and checkpoints/all-MiniLM-L6-v2). Logs: bench/out/tapt/.
set -euo pipefail
XTUNE=${XTUNE:-.venv/bin/xtune}
OUT=bench/out/tapt
mkdir -p $OUT
lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*/&/' | cut -c1-400 > $OUT/cpu.txt
[ -f checkpoints/multilingual-e5-small/bert_config.json ] || $XTUNE convert-e5 checkpoints/multilingual-e5-small
[ -f data/inews-400/test.csv ] || $XTUNE prepare-data inews data/inews-400 --train 400 --valid 200 --test 200
{ time $XTUNE ablate bench/pretrain/ablation_tapt_r8.yaml ; } > $OUT/r8.log 2>&1
{ time $XTUNE ablate bench/pretrain/ablation_tapt_inews.yaml data.train=data/inews-400/train.csv \
    data.valid=data/inews-400/valid.csv data.test=data/inews-400/test.csv train.epochs=2 ; } > $OUT/inews.log 2>&1
tail -n 20 $OUT/r8.log $OUT/inews.log
