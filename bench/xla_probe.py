"""Does XLA help a training step? The MiniLM classifier of bench/peers (CLS + mlp(256), CE, Adam)
on one fixed 32 x 128 batch, its ``train_step`` traced with and without ``jit_compile``; median of 5
steps after 2. Run after make demo: `.venv/bin/python bench/xla_probe.py`.
One model after the other; bench/peers/profile_step.py alternates the two models step by step."""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from xtune_keras import compat  # noqa: E402,F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from profile_step import stepper  # noqa: E402

from xtune_keras.model.classifier import build_classifier  # noqa: E402
from xtune_keras.model.losses import build_loss  # noqa: E402
from xtune_keras.train.optimizers import build_optimizer  # noqa: E402

enc = "checkpoints/all-MiniLM-L6-v2"
heads = [{"type": "cls"}, {"type": "mlp", "units": [256], "dropout": 0.1}]
rng = np.random.default_rng(0)
tok = rng.integers(1000, 30000, size=(32, 128)).astype(np.int32)
tok[:, 0] = 101
tok[:, -1] = 102
x = {"Input-Token": tok, "Input-Segment": np.zeros_like(tok)}
y = np.eye(8, dtype=np.float32)[rng.integers(0, 8, 32)]
for jit in (False, True):
    tf.keras.utils.set_random_seed(0)
    m = build_classifier(enc + "/bert_config.json", enc + "/bert_model.ckpt", 8, heads)
    m.compile(optimizer=build_optimizer("adam", 1e-4), loss=build_loss("ce"))
    step = stepper(m, jit_compile=jit)
    for _ in range(2):
        step(x, y)
    t = []
    for _ in range(5):
        s = time.perf_counter()
        step(x, y)
        t.append(time.perf_counter() - s)
    print("jit_compile", jit, "median step %.3f s" % statistics.median(t), flush=True)
