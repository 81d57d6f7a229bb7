#!/usr/bin/env bash
# Issue 3 benchmark: BCE vs focal vs multilabel CE, and layer-wise LR decay on vs off, on the real
# all-MiniLM-L6-v2 and a Reuters R8 subset. Run from the repository root after `make demo`
# (which installs the stack and converts MiniLM). Results: bench/out/<name>/.../result.json.
set -euo pipefail
XTUNE=${XTUNE:-.venv/bin/xtune}
DATA=data/reuters-r8-1000
[ -f $DATA/test.csv ] || $XTUNE prepare-data reuters-r8 $DATA --train 1000 --valid 400 --test 800
mkdir -p bench/out
COMMON=(data.train=$DATA/train.csv data.valid=$DATA/valid.csv data.test=$DATA/test.csv
        train.epochs=2 train.patience=2 output.runs_dir=bench/out output.tensorboard=false)
run() {  # name, overrides...
  local name=$1; shift
  $XTUNE train experiments/demo_reuters_r8_minilm.yaml name=$name output.h5=bench/out/$name.h5 \
    "${COMMON[@]}" "$@" > bench/out/$name.log
}
run r8_bce model.loss=bce
run r8_focal "model.loss={type: focal, alpha: 0.25, gamma: 2.0}"
run r8_multilabel_ce model.loss=multilabel_ce
run r8_bce_llrd train.layer_decay=0.95
python3 bench/summarize.py bench/out r8_bce r8_focal r8_multilabel_ce r8_bce_llrd
