"""train.precision: mixed_bfloat16 trains with every trainer option on padded batches, its .h5
reloads in float32 and predicts as the mixed model did; auto decides by the CPU's flags."""
import math
import os

import numpy as np
import pytest

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)
from bert4keras.backend import keras

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.model.modelfile import load_model_file
from xtune_keras.model.layers import custom_objects
from xtune_keras.recipes import run_recipe
from xtune_keras.schema import load_config
from xtune_keras.train.precision import cpu_flags, resolve_precision

OPTIONS = {
    "plain": {},
    "fgm": {"adversarial": {"method": "fgm", "epsilon": 0.5}},
    "pgd": {"adversarial": {"method": "pgd", "epsilon": 0.5, "alpha": 0.3, "steps": 2}},
    "rdrop": {"rdrop_alpha": 1.0},
    "micro_batches": {"micro_batches": 2},
    "ema": {"ema_momentum": 0.9},
    "grad_accum": {"grad_accum_steps": 2},
}


def train_mixed(tiny_ckpt, tmp_path, name, **train):  # mixed_bfloat16 unless train says otherwise
    data = write_multilabel_csvs(str(tmp_path), n=40)  # texts of different lengths: padded batches
    path = write_experiment(str(tmp_path / (name + ".yaml")), data, tiny_ckpt["dir"], str(tmp_path), name=name,
                            train=dict({"epochs": 1, "precision": "mixed_bfloat16"}, **train),
                            model={"heads": [{"type": "cls"}, {"type": "mlp", "units": [16], "dropout": 0.1}]})
    return run_recipe(load_config(path), echo=False), data


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_mixed_policy_trains_without_inf_or_nan(tiny_ckpt, tmp_path, option, policy):
    result, _ = train_mixed(tiny_ckpt, tmp_path, policy + "_" + option, precision=policy, **OPTIONS[option])
    assert result["precision"] == policy
    assert all(math.isfinite(v) for v in result["best"].values()), result["best"]
    assert math.isfinite(result["test"]["loss"])


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_h5_reloads_in_float32_and_predicts_as_the_mixed_model(tiny_ckpt, tmp_path, policy):
    result, _ = train_mixed(tiny_ckpt, tmp_path, policy + "_reload", precision=policy)
    model, meta, _ = load_model_file(result["h5"])
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    mixed = keras.models.load_model(result["h5"], custom_objects=custom_objects(), compile=False)
    assert policy in {layer.dtype_policy.name for layer in mixed.layers}
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 60, size=(6, 16))
    tokens[:, 0], tokens[:3, 10:] = 2, 0  # [CLS] first; half the rows padded
    inputs = [tokens, np.zeros_like(tokens)]
    full, half = model.predict(inputs, verbose=0), mixed.predict(inputs, verbose=0)
    assert full.dtype == half.dtype == np.float32
    np.testing.assert_allclose(1 / (1 + np.exp(-full)), 1 / (1 + np.exp(-half)), atol=0.03)
    for a, b in zip(model.get_weights(), mixed.get_weights()):
        assert a.dtype == np.float32 and np.array_equal(a, b)


@pytest.mark.parametrize("flags, picked", [
    ({"avx512f", "amx_tile", "amx_bf16", "amx_int8"}, "mixed_bfloat16"),
    ({"avx2", "avx512f", "avx512_bf16"}, "float32"),  # bfloat16 instructions without AMX: no faster here
    (set(), "float32"),
])
def test_auto_picks_by_the_cpu_flags(flags, picked):
    policy, why = resolve_precision("auto", flags)
    assert policy == picked and why.startswith("train.precision auto: " + picked)
    assert resolve_precision("mixed_bfloat16", set())[0] == "mixed_bfloat16"  # asked for: not second-guessed


def test_cpu_flags_reads_the_first_processor():
    text = "processor\t: 0\nflags\t\t: fpu sse2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert cpu_flags(text) == {"fpu", "sse2", "amx_bf16"}
    assert cpu_flags("") == set()
    assert isinstance(cpu_flags(), set) and (os.path.exists("/proc/cpuinfo") or cpu_flags() == set())


@pytest.mark.parametrize("train", [{"precision": "mixed_bfloat16"}, {"precision": "mixed_float16"},
                                   {"jit_compile": True}], ids=["bf16", "fp16", "xla"])
def test_a_multitask_run_trains_in_mixed_precision_or_xla_with_learned_weights(tiny_ckpt, tmp_path, train):
    from tests.test_multitask import dept_task, main_task, write_department_csvs, write_multitask

    main = write_multilabel_csvs(str(tmp_path), n=40)
    path = write_multitask(tmp_path, tiny_ckpt["dir"], [main_task(main), dept_task(write_department_csvs(
        main, str(tmp_path)))], multitask={"loss_weighting": "uncertainty"},
        train=dict({"epochs": 1}, **train))
    result = run_recipe(load_config(path), echo=False)
    assert result["precision"] == train.get("precision", "float32") and math.isfinite(result["best"]["val_loss"])
    assert all(math.isfinite(task["loss_weight"]) for task in result["tasks"].values())


# --- train.jit_compile (for GPU users; correctness checked here on the CPU) ---------------------

@pytest.mark.parametrize("options", [{}, {"method": "fgm", "epsilon": 0.5}, {"rdrop_alpha": 1.0}],
                         ids=["plain", "fgm", "rdrop"])
def test_the_xla_step_gives_the_loss_and_gradients_of_the_plain_step(tiny_ckpt, options):
    import tensorflow as tf

    from tests.test_adversarial import make_classifier, make_trainer, marker_task

    trainer = make_trainer(make_classifier(tiny_ckpt), **options)  # no dropout: both steps see one function
    x, y = marker_task(n=8)
    x[0][:4, 8:] = x[1][:4, 8:] = 0  # half the rows padded: the attention mask in use
    data = ([tf.constant(t) for t in x], tf.constant(y))

    def loss_and_gradients(data):
        grads, _, _, logs = trainer.compute_gradients(data)
        return logs["loss"], [tf.convert_to_tensor(g) for g in grads]

    plain_loss, plain_grads = tf.function(loss_and_gradients)(data)
    xla_loss, xla_grads = tf.function(loss_and_gradients, jit_compile=True)(data)
    np.testing.assert_allclose(xla_loss.numpy(), plain_loss.numpy(), rtol=1e-5)
    assert len(xla_grads) == len(plain_grads)
    for a, b in zip(xla_grads, plain_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_a_jit_compiled_run_trains_and_matches_the_plain_run(tiny_ckpt, tmp_path, micro_batches):
    train = {"precision": "float32", "micro_batches": micro_batches}
    (tmp_path / "plain").mkdir()
    (tmp_path / "xla").mkdir()
    plain, _ = train_mixed(tiny_ckpt, tmp_path / "plain", "plain", **train)
    xla, _ = train_mixed(tiny_ckpt, tmp_path / "xla", "xla", jit_compile=True, **train)
    assert all(math.isfinite(v) for v in xla["best"].values()), xla["best"]
    # Same data and initial weights; dropout draws other random numbers under XLA, so only close
    # (the exact comparison is the test above, without dropout).
    np.testing.assert_allclose(xla["best"]["loss"], plain["best"]["loss"], rtol=0.05)


# --- mixed_float16's dynamic loss scaling (train/loss_scale.py) ---------------------------------

def test_the_loss_scale_grows_after_finite_steps_and_halves_on_overflow():
    from xtune_keras.train.loss_scale import DynamicLossScale

    scale = DynamicLossScale(initial_scale=8.0, growth_interval=3)
    for finite, expected in [(True, 8), (True, 8), (True, 16), (False, 8), (True, 8), (False, 4)]:
        scale.update(finite)
        assert float(scale.scale) == expected
    for _ in range(10):
        scale.update(False)
    assert float(scale.scale) == 1.0  # never below 1


def scaled_trainer(tiny_ckpt, initial_scale):
    from tests.test_adversarial import make_classifier, make_trainer
    from xtune_keras.train.loss_scale import DynamicLossScale

    return make_trainer(make_classifier(tiny_ckpt), method=None,
                        loss_scale=DynamicLossScale(initial_scale=initial_scale))


def test_scaled_gradients_are_unscaled_to_the_plain_ones(tiny_ckpt):
    import tensorflow as tf

    from tests.test_adversarial import make_classifier, make_trainer, marker_task

    x, y = marker_task(n=8)
    data = ([tf.constant(t) for t in x], tf.constant(y))
    plain = make_trainer(make_classifier(tiny_ckpt), method=None).compute_gradients(data)[0]
    scaled = scaled_trainer(tiny_ckpt, 2.0 ** 15).compute_gradients(data)[0]
    for a, b in zip(scaled, plain):
        np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy(),
                                   rtol=1e-4, atol=1e-7)


def test_a_float16_step_that_overflows_is_skipped_and_halves_the_scale(tiny_ckpt):
    import tensorflow as tf

    from tests.test_adversarial import marker_task
    from xtune_keras.train.precision import precision_policy

    x, y = marker_task(n=8)
    data = ([tf.constant(t) for t in x], tf.constant(y))
    with precision_policy("mixed_float16"):
        trainer = scaled_trainer(tiny_ckpt, 2.0 ** 100)  # the float16 backward pass overflows at once
    before = [w.numpy().copy() for w in trainer.classifier.trainable_weights]
    trainer.train_step(data)
    assert float(trainer.loss_scale.scale) == 2.0 ** 99
    for a, w in zip(before, trainer.classifier.trainable_weights):
        np.testing.assert_array_equal(a, w.numpy())
    trainer.loss_scale.scale.assign(2.0 ** 10)  # in range: the step applies
    trainer.train_step(data)
    assert float(trainer.loss_scale.scale) == 2.0 ** 10 and int(trainer.loss_scale.good_steps) == 1
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, trainer.classifier.trainable_weights))


# --- the same option for prediction and evaluation ------------------------------------------------

@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_predict_and_evaluate_take_a_precision_and_agree_with_float32(tiny_ckpt, tmp_path, policy):
    import pandas as pd

    from xtune_keras.cli import main

    result, data = train_mixed(tiny_ckpt, tmp_path, "fp32_for_" + policy, precision="float32")
    model, _, _ = load_model_file(result["h5"], policy)
    layers = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert layers["logits"] == "float32" and layers["Transformer-0-FeedForward"] == policy
    assert model.get_layer("Input-Token").dtype == "float32"  # inputs keep their dtype
    outputs = {}
    for precision in ("float32", policy):
        out = str(tmp_path / ("%s.csv" % precision))
        assert main(["predict", result["h5"], data["test"], "-o", out, "--precision", precision, "-q"]) in (0, None)
        outputs[precision] = pd.read_csv(out)
    probs = [c for c in outputs["float32"].columns if c.startswith("prob_")]
    np.testing.assert_allclose(outputs[policy][probs].to_numpy(), outputs["float32"][probs].to_numpy(), atol=0.03)
    from xtune_keras.inference import evaluate_file

    metrics = evaluate_file(result["h5"], data["test"], precision=policy)
    assert metrics["examples"] == len(outputs["float32"]) and math.isfinite(metrics["micro_f1"])
