#!/usr/bin/env bash
# The Hugging Face side's own venv, bench/out/venv-hf (git-ignored, like all of bench/out).
# torch goes in first and alone, pinned, so that pip takes the CPU wheel (torch-2.13.0+cpu, from
# the machine's wheel folder) and no later step swaps it for a CUDA build; the rest must leave it.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=bench/out/venv-hf
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q "torch==2.13.0"
before=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
"$VENV/bin/pip" install -q transformers accelerate safetensors pandas scikit-learn
after=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
if [ "$before" != "$after" ]; then
    echo "setup_hf_venv: pip replaced torch $before with $after" >&2
    exit 1
fi
"$VENV/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"
