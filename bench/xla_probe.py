"""Does XLA help a training step? The MiniLM classifier of bench/peers (CLS + mlp(256), CE, Adam)
on one fixed 32 x 128 batch, compiled with and without jit_compile; median of 5 steps after 2.
Run after make demo: `.venv/bin/python bench/xla_probe.py`.
One model after the other: on this VM, whose steps switch between two speeds, that comparison
misleads (bench/RESULTS.md); bench/peers/profile_step.py alternates the two models step by step."""
import statistics
import time

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
import numpy as np
import tensorflow as tf
from xtune_keras.model.classifier import build_classifier
from xtune_keras.train.optimizers import build_optimizer
from xtune_keras.model.losses import build_loss
enc="checkpoints/all-MiniLM-L6-v2"
heads=[{"type": "cls"}, {"type": "mlp", "units": [256], "dropout": 0.1}]
rng=np.random.default_rng(0)
tok = rng.integers(1000, 30000, size=(32, 128)).astype(np.int32)
tok[:, 0] = 101
tok[:, -1] = 102
x = {"Input-Token": tok, "Input-Segment": np.zeros_like(tok)}
y = np.eye(8, dtype=np.float32)[rng.integers(0, 8, 32)]
for jit in (False, True):
    tf.keras.utils.set_random_seed(0)
    m=build_classifier(enc+"/bert_config.json", enc+"/bert_model.ckpt", 8, heads)
    m.compile(optimizer=build_optimizer("adam",1e-4), loss=build_loss("ce"), jit_compile=jit)
    for _ in range(2):
        m.train_on_batch(x, y)
    t=[]
    for _ in range(5):
        s = time.perf_counter()
        m.train_on_batch(x, y)
        t.append(time.perf_counter() - s)
    print("jit_compile", jit, "median step %.3f s" % statistics.median(t), flush=True)
