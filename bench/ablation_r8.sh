#!/usr/bin/env bash
# Issue 4 benchmark: `xtune ablate` and `xtune combine` on real data and weights, and one plain
# `xtune train` of the row-0 configuration for the time per run. Run from the repository root
# after `make demo` (stack installed, MiniLM converted). Results: bench/out/ablation/.
set -euo pipefail
XTUNE=${XTUNE:-.venv/bin/xtune}
DATA=data/reuters-r8-400
[ -f $DATA/test.csv ] || $XTUNE prepare-data reuters-r8 $DATA --train 400 --valid 200 --test 400
OUT=bench/out/ablation
mkdir -p $OUT
COMMON=(data.train=$DATA/train.csv data.valid=$DATA/valid.csv data.test=$DATA/test.csv
        data.max_len=64 train.patience=2 output.runs_dir=$OUT/runs output.h5=$OUT/model.h5)
{ time $XTUNE train experiments/demo_reuters_r8_minilm.yaml name=single_train train.epochs=2 \
    "${COMMON[@]}" ; } > $OUT/single.log 2>&1
{ time $XTUNE ablate bench/ablation_r8_minilm.yaml "${COMMON[@]}" ; } > $OUT/ablate.log 2>&1
{ time $XTUNE combine bench/ablation_r8_minilm.yaml "${COMMON[@]}" ; } > $OUT/combine.log 2>&1
tail -n 4 $OUT/single.log; cat $OUT/ablate.log $OUT/combine.log
