#!/usr/bin/env bash
# Issue 16, for users with a GPU (none here: the workplace's accelerator machine has no TensorFlow):
# xtune's training throughput and test quality on Reuters R8 with MiniLM under each precision,
# with and without XLA, through the peer benchmark's xtune side (bench/peers/run.py, its RESULTS.md
# per setting). Run from the repository root after `make demo`:
#   bash bench/gpu_precision.sh [extra bench/peers/run.py arguments, e.g. --epochs 1]
# Add the figures to bench/RESULTS.md with the GPU's name (printed first).
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
OUT=bench/out/gpu_precision
mkdir -p $OUT
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee $OUT/gpu.txt \
    || echo "no nvidia-smi: is there a GPU?" | tee $OUT/gpu.txt
$PYTHON -c "from xtune_keras import compat; import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))" \
    | tee -a $OUT/gpu.txt
for precision in float32 mixed_float16 mixed_bfloat16; do
    for jit in false true; do
        $PYTHON bench/peers/run.py --systems xtune --no-flops --out $OUT/$precision-xla-$jit \
            --xtune-override train.precision=$precision --xtune-override train.jit_compile=$jit "$@"
    done
done
for table in $OUT/*/RESULTS.md; do  # train ex/s is the second column
    echo "$(basename "$(dirname "$table")"): $(grep -m1 '^| xtune_keras' "$table")"
done
