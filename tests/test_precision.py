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
}


def train_mixed(tiny_ckpt, tmp_path, name, **train):
    data = write_multilabel_csvs(str(tmp_path), n=40)  # texts of different lengths: padded batches
    path = write_experiment(str(tmp_path / (name + ".yaml")), data, tiny_ckpt["dir"], str(tmp_path), name=name,
                            train=dict({"epochs": 1, "precision": "mixed_bfloat16"}, **train),
                            model={"heads": [{"type": "cls"}, {"type": "mlp", "units": [16], "dropout": 0.1}]})
    return run_recipe(load_config(path), echo=False), data


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_mixed_bfloat16_trains_without_inf_or_nan(tiny_ckpt, tmp_path, option):
    result, _ = train_mixed(tiny_ckpt, tmp_path, "bf16_" + option, **OPTIONS[option])
    assert result["precision"] == "mixed_bfloat16"
    assert all(math.isfinite(v) for v in result["best"].values()), result["best"]
    assert math.isfinite(result["test"]["loss"])


def test_a_mixed_h5_reloads_in_float32_and_predicts_as_the_mixed_model(tiny_ckpt, tmp_path):
    result, _ = train_mixed(tiny_ckpt, tmp_path, "bf16_reload")
    model, meta, _ = load_model_file(result["h5"])
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    mixed = keras.models.load_model(result["h5"], custom_objects=custom_objects(), compile=False)
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in mixed.layers}
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


def test_a_multitask_run_trains_in_mixed_bfloat16_with_learned_weights(tiny_ckpt, tmp_path):
    from tests.test_multitask import dept_task, main_task, write_department_csvs, write_multitask

    main = write_multilabel_csvs(str(tmp_path), n=40)
    path = write_multitask(tmp_path, tiny_ckpt["dir"], [main_task(main), dept_task(write_department_csvs(
        main, str(tmp_path)))], multitask={"loss_weighting": "uncertainty"},
        train={"epochs": 1, "precision": "mixed_bfloat16"})
    result = run_recipe(load_config(path), echo=False)
    assert result["precision"] == "mixed_bfloat16" and math.isfinite(result["best"]["val_loss"])
    assert all(math.isfinite(task["loss_weight"]) for task in result["tasks"].values())
