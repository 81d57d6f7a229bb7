#!/usr/bin/env bash
# Issue 13, "does it help": FiT against TAPT + FiT, 3 seeds each, on Reuters R8 with MiniLM and on
# inews with multilingual-e5-small, both with 400 labelled training texts and 2 epochs (a low-resource
# setting, sized for 2 CPU cores); TAPT on those same 400 texts. Run from the repository root after
# `make demo` (assets installed, MiniLM converted). Logs: bench/out/tapt/. Arguments pick the tasks
# (default r8 and inews; inews_fixed_embedding: TAPT with the token embedding held fixed):
# bash bench/pretrain/does_it_help.sh inews
set -euo pipefail
XTUNE=${XTUNE:-.venv/bin/xtune}
OUT=bench/out/tapt
mkdir -p $OUT
grep -m1 "model name" /proc/cpuinfo | tee $OUT/cpu.txt; grep -m1 -o -w "amx_tile\|avx512f" /proc/cpuinfo | sort -u | tee -a $OUT/cpu.txt || true
[ -f checkpoints/multilingual-e5-small/bert_config.json ] || $XTUNE convert-e5 checkpoints/multilingual-e5-small
[ -f data/inews-400/test.csv ] || $XTUNE prepare-data inews data/inews-400 --train 400 --valid 200 --test 200
[ -f data/reuters-r8-400/test.csv ] || $XTUNE prepare-data reuters-r8 data/reuters-r8-400 --train 400 --valid 400 --test 800
TASKS=${*:-r8 inews}
[[ " $TASKS " != *" r8 "* ]] || { time $XTUNE ablate bench/pretrain/ablation_tapt_r8.yaml data.train=data/reuters-r8-400/train.csv \
    data.valid=data/reuters-r8-400/valid.csv data.test=data/reuters-r8-400/test.csv train.epochs=2 ; } > $OUT/r8.log 2>&1
[[ " $TASKS " != *" inews "* ]] || { time $XTUNE ablate bench/pretrain/ablation_tapt_inews.yaml data.train=data/inews-400/train.csv \
    data.valid=data/inews-400/valid.csv data.test=data/inews-400/test.csv train.epochs=2 ; } > $OUT/inews.log 2>&1
[[ " $TASKS " != *" inews_fixed_embedding "* ]] || { time $XTUNE ablate bench/pretrain/ablation_tapt_inews_fixed_embedding.yaml \
    data.train=data/inews-400/train.csv data.valid=data/inews-400/valid.csv data.test=data/inews-400/test.csv \
    train.epochs=2 ; } > $OUT/inews_fixed_embedding.log 2>&1
for task in $TASKS; do tail -n 20 $OUT/$task.log; done
