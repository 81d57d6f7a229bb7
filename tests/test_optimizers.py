"""Optimisation options: each extension's effect measured on the weights, and .h5 round trips."""
import json
import re
import subprocess
import sys

from xtune_keras import compat  # noqa: F401  (first: TensorFlow with the bert4keras repairs)

import numpy as np
import pytest
import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.model.encoders import build_transformer
from xtune_keras.errors import XtuneError
from xtune_keras.model.classifier import build_classifier
from xtune_keras.train.optimizers import (
    ADAM_KERNELS, TAGS, EMAWeights, XtuneAdam, apply_ema, build_optimizer, check_lr_multipliers,
    layer_lr_multipliers, restore_weights,
)

TOKENS = np.array([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0], [2, 5, 6, 8, 3], [2, 4, 3, 0, 0]], np.int32)
INPUTS = [TOKENS, np.zeros_like(TOKENS)]
TARGETS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)


# ------------------------------------------------------------------------------------- helpers

def bert_like_stack(num_layers, width=3):
    """Dense/LayerNorm layers named like our classifiers' (bert4keras encoder, then heads)."""
    inputs = keras.layers.Input((width,))
    x = keras.layers.Dense(width, name="Embedding-Token")(inputs)
    x = keras.layers.LayerNormalization(name="Embedding-Norm")(x)
    for i in range(num_layers):
        for part in ("MultiHeadSelfAttention", "FeedForward"):
            x = keras.layers.Dense(width, name="Transformer-%d-%s" % (i, part))(x)
            x = keras.layers.LayerNormalization(name="Transformer-%d-%s-Norm" % (i, part))(x)
    x = keras.layers.Dense(width, name="head-0-mlp-dense-0")(x)
    x = keras.layers.LayerNormalization(name="head-0-mlp-norm")(x)
    return keras.models.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def embedding_model():
    """Token ids -> Embedding-Token (sparse gradients) -> logits."""
    inputs = keras.layers.Input((3,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(10, 4, name="Embedding-Token")(inputs))
    return keras.models.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def tiny_classifier(tiny_ckpt):
    return build_classifier(tiny_ckpt["config"], tiny_ckpt["checkpoint"], 3, [{"type": "cls"}])


def stepper(optimizer, variables):
    """One compiled ``apply_gradients`` on ``variables``, as Keras's train step makes it."""
    @tf.function
    def step(grads):
        optimizer.apply_gradients(zip(grads, variables))
    return lambda grads: step([tf.constant(g, tf.float32) for g in grads])


def values(variables):
    return [v.numpy().copy() for v in variables]


def numpy_ema(trajectory, momentum):
    """Bias-corrected EMA (started at 0) of a list of weight lists, one list per update."""
    average = [np.zeros_like(w, np.float64) for w in trajectory[0]]
    for weights in trajectory:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    return [a / (1 - momentum ** len(trajectory)) for a in average]


def assert_weights_close(actual, expected, atol=1e-6):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=atol)


# ------------------------------------------------------------------------------ class and errors

def test_plain_call_still_builds_bert4keras_adam():
    optimizer = build_optimizer("adam", 1e-3)
    assert type(optimizer) is XtuneAdam
    assert optimizer.get_config()["epsilon"] == 1e-6 and optimizer.global_clipnorm is None


def test_class_names_list_the_extensions_in_use():
    assert type(build_optimizer("adamw", 1e-3)).__name__ == "XtuneAdam_WD"
    assert type(build_optimizer("adamw", 1e-3, weight_decay=0)).__name__ == "XtuneAdam"
    everything = build_optimizer("adamw", 1e-3, warmup_steps=2, total_steps=9, lr_multipliers={"x": 2},
                                 grad_accum_steps=2, ema_momentum=0.9)
    assert type(everything).__name__ == "XtuneAdam_" + "_".join(TAGS)
    assert keras.utils.get_custom_objects()[type(everything).__name__] is type(everything)


@pytest.mark.parametrize("kwargs, key", [
    ({"name": "sgd"}, "train.optimizer: unknown optimizer 'sgd'; valid: adam, adamw"),
    ({"learning_rate": 0}, "train.lr:"),
    ({"weight_decay": -0.1}, "train.weight_decay:"),
    ({"clip_norm": "big"}, "train.clip_norm:"),
    ({"warmup_steps": 1.5}, "train.warmup_steps:"),
    ({"warmup_steps": 10, "total_steps": 10}, "train.total_steps:"),
    ({"lr_multipliers": {"Embedding-": -1}}, "train.lr_multipliers['Embedding-']:"),
    ({"lr_multipliers": [0.5]}, "train.lr_multipliers:"),
    ({"grad_accum_steps": 0}, "train.grad_accum_steps:"),
    ({"ema_momentum": 1.0}, "train.ema_momentum:"),
    ({"embedding_update": "sparse"}, "train.embedding_update: must be dense or lazy"),
    ({"embedding_update": "lazy", "grad_accum_steps": 2}, "train.embedding_update: must be dense with"),
])
def test_bad_values_name_their_yaml_key_on_one_line(kwargs, key):
    arguments = {"name": "adam", "learning_rate": 1e-3, **kwargs}
    with pytest.raises(XtuneError) as error:
        build_optimizer(**arguments)
    assert str(error.value).startswith(key) and "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, key", [
    ({"layer_decay": 1.5}, "train.layer_decay:"),
    ({"layer_decay": 0}, "train.layer_decay:"),
    ({"encoder_lr_ratio": -1}, "train.encoder_lr_ratio:"),
])
def test_bad_layer_decay_names_its_key(kwargs, key):
    with pytest.raises(XtuneError, match="^" + re.escape(key)):
        layer_lr_multipliers(12, **kwargs)


def test_a_multiplier_that_matches_no_variable_is_an_error():
    model = bert_like_stack(2)
    check_lr_multipliers(model, {"Transformer-1-": 0.5, "logits": 2})
    with pytest.raises(XtuneError, match="^train.lr_multipliers: 'Transformer-2-' matches no"):
        check_lr_multipliers(model, {"Transformer-2-": 0.5})


# ----------------------------------------------------------------------------- layer-wise LR

def expected_multiplier(variable_name, num_layers, xi, ratio):
    """Sun et al. 2019: layers 1..L, embeddings layer 0, layer l at ratio * xi**(L - l); heads 1."""
    if variable_name.startswith("Embedding-"):
        return ratio * xi ** num_layers
    layer = re.match(r"Transformer-(\d+)-", variable_name)
    return ratio * xi ** (num_layers - 1 - int(layer.group(1))) if layer else 1.0


def test_layer_wise_decay_gives_each_of_12_layers_its_own_lr():
    num_layers, xi, ratio, lr = 12, 0.9, 0.5, 0.01
    model = bert_like_stack(num_layers)
    variables = model.trainable_variables
    for variable in variables:
        variable.assign(tf.zeros_like(variable))
    optimizer = build_optimizer("adam", lr, lr_multipliers=layer_lr_multipliers(num_layers, xi, ratio))
    stepper(optimizer, variables)([np.ones(v.shape) for v in variables])
    measured = {}
    for variable in variables:
        # From 0 with gradient +1, Adam's first step is -lr * g / (|g| + 1e-6) * multiplier.
        per_element = -variable.numpy() / lr
        np.testing.assert_allclose(per_element, per_element.flat[0])
        measured[variable.name] = per_element.flat[0]
        expected = expected_multiplier(variable.name, num_layers, xi, ratio)
        np.testing.assert_allclose(measured[variable.name], expected, rtol=1e-4, err_msg=variable.name)
    # Transformer-1- must not also match Transformer-10- and Transformer-11-.
    one, ten = measured["Transformer-1-FeedForward/kernel:0"], measured["Transformer-10-FeedForward/kernel:0"]
    np.testing.assert_allclose([one, ten], [ratio * xi ** 10, ratio * xi], rtol=1e-4)
    np.testing.assert_allclose(measured["logits/kernel:0"], 1.0, rtol=1e-4)


def test_higher_lr_for_the_head_than_for_bert():
    multipliers = layer_lr_multipliers(12, encoder_lr_ratio=5e-5 / 2e-4)
    encoder = ("Embedding-", "Transformer-0-", "Transformer-11-")
    assert [multipliers[key] for key in encoder] == [0.25] * 3


def test_albert_shared_layer_gets_the_encoder_ratio(tiny_albert):
    transformer = build_transformer(tiny_albert["config"], tiny_albert["checkpoint"], model="albert")
    multipliers = layer_lr_multipliers(transformer.num_hidden_layers, 0.9, 0.5)
    for variable in transformer.model.trainable_variables:
        factor = np.prod([f for key, f in multipliers.items() if key in variable.name])
        expected = expected_multiplier(variable.name, transformer.num_hidden_layers, 0.9, 0.5)
        np.testing.assert_allclose(factor, 0.5 if expected == 1.0 else expected, err_msg=variable.name)


def test_zero_multiplier_freezes_what_it_names(tiny_ckpt):
    model = tiny_classifier(tiny_ckpt)
    frozen = ("Embedding-", "Transformer-0-")
    model.compile(build_optimizer("adamw", 1e-2, lr_multipliers={name: 0 for name in frozen}), "mse")
    before = {v.name: v.numpy().copy() for v in model.trainable_variables}
    for _ in range(3):
        model.train_on_batch(INPUTS, TARGETS)
    for variable in model.trainable_variables:
        unchanged = np.array_equal(variable.numpy(), before[variable.name])
        if variable.name.startswith(frozen):
            assert unchanged, variable.name  # bit-identical: no Adam step, no decay
        elif variable.name.endswith(("kernel:0", "gamma:0")):
            assert not unchanged, variable.name


# ---------------------------------------------------------------------------------------- AdamW

def test_adamw_decays_kernels_but_not_norms_or_biases():
    lr, decay = 0.1, 0.01
    model = bert_like_stack(1)
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    for variable in variables:
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    before = values(variables)
    optimizer = build_optimizer("adamw", lr)
    assert optimizer.weight_decay_rate == decay and not optimizer.bias_correction
    stepper(optimizer, variables)([np.zeros(v.shape) for v in variables])  # zero gradient: decay only
    for variable, w in zip(variables, before):
        if re.search("Norm|norm|bias", variable.name):
            assert np.array_equal(variable.numpy(), w), variable.name
        else:
            np.testing.assert_allclose(variable.numpy(), w - lr * decay * w, rtol=1e-6, err_msg=variable.name)


def test_adamw_clips_the_global_gradient_norm_to_one():
    assert build_optimizer("adamw", 0.1).global_clipnorm == 1.0
    assert build_optimizer("adam", 0.1).global_clipnorm is None
    variables = [tf.Variable(tf.zeros(3)), tf.Variable(tf.zeros(4))]
    huge = [np.full(3, 300.0), np.full(4, -400.0)]
    norm = np.sqrt(sum(np.sum(g ** 2) for g in huge))
    for clip_norm, expected_scale in ((None, 1.0 / norm), (0, 1.0)):  # None: adamw's 1.0; 0: off
        optimizer = build_optimizer("adamw", 0.1, clip_norm=clip_norm)
        stepper(optimizer, variables)(huge)
        for variable, g in zip(variables, huge):  # Adam's first moment holds (1 - beta_1) * gradient
            np.testing.assert_allclose(optimizer.get_slot(variable, "m").numpy(), 0.1 * g * expected_scale,
                                       rtol=1e-5)


# ------------------------------------------------------------------------------------- schedule

def google_bert_schedule(step, warmup, total):
    """0 -> 1 over ``warmup`` steps, then linearly to 0 at ``total`` (1 after warmup without it)."""
    if warmup and step < warmup:
        return step / warmup
    if total is None:
        return 1.0
    return max(0.0, (total - step) / (total - warmup))


@pytest.mark.parametrize("warmup, total", [(10, 30), (10, None), (0, 20)])
def test_lr_follows_warmup_then_linear_decay(warmup, total):
    lr = 0.01
    optimizer = build_optimizer("adam", lr, warmup_steps=warmup, total_steps=total)
    for step in (0, warmup // 2, warmup, 15, 20, 30, 35):
        optimizer.iterations.assign(step)
        np.testing.assert_allclose(float(optimizer._decayed_lr(tf.float32)),
                                   lr * google_bert_schedule(step, warmup, total), rtol=1e-6, atol=1e-12)


def test_measured_updates_follow_the_schedule():
    lr, warmup, total = 0.01, 10, 30
    variable = tf.Variable(tf.zeros(2))
    optimizer = build_optimizer("adam", lr, warmup_steps=warmup, total_steps=total)
    step = stepper(optimizer, [variable])
    for t in range(total + 3):
        variable.assign(tf.zeros(2))
        step([np.ones(2)])  # constant gradient: Adam's bias-corrected step is lr * multiplier
        np.testing.assert_allclose(-variable.numpy() / lr, google_bert_schedule(t, warmup, total),
                                   rtol=1e-4, atol=1e-6, err_msg="step %d" % t)


# ------------------------------------------------------------------------- gradient accumulation

@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_k_accumulated_batches_equal_one_step_on_their_mean(name):
    k, cycles, momentum = 3, 2, 0.9
    rng = np.random.default_rng(1)
    models = [bert_like_stack(1), bert_like_stack(1)]
    models[1].set_weights(models[0].get_weights())
    shapes = [v.shape for v in models[0].trainable_variables]
    batches = [[rng.normal(size=s) for s in shapes] for _ in range(k * cycles)]
    options = {"weight_decay": 0.01, "clip_norm": 0, "ema_momentum": momentum}  # clip: per batch
    accumulating = build_optimizer(name, 0.01, grad_accum_steps=k, **options)
    reference = build_optimizer(name, 0.01, **options)
    for model, optimizer in zip(models, (accumulating, reference)):
        model.compile(optimizer, "mse")
    step_accumulating = stepper(accumulating, models[0].trainable_variables)
    step_reference = stepper(reference, models[1].trainable_variables)
    for i, grads in enumerate(batches):
        before = models[0].get_weights()
        step_accumulating(grads)
        if (i + 1) % k:  # accumulating only: not a bit of any weight moves
            assert all(np.array_equal(a, b) for a, b in zip(models[0].get_weights(), before))
        else:
            step_reference([np.mean(g, axis=0) for g in zip(*batches[i + 1 - k:i + 1])])
            assert_weights_close(models[0].get_weights(), models[1].get_weights())
    assert apply_ema(models[0]) and apply_ema(models[1])  # averaged over updates, not batches
    assert_weights_close(models[0].get_weights(), models[1].get_weights())


# ------------------------------------------------------------------------------------------ EMA

def test_ema_weights_are_the_average_of_the_trajectory():
    momentum = 0.8
    model = embedding_model()  # Embedding-Token gets sparse gradients
    model.compile(build_optimizer("adam", 0.05, ema_momentum=momentum), "mse")
    x, y = np.array([[1, 2, 3], [4, 5, 1]]), np.array([[1.0, -1.0], [0.5, 2.0]])
    trajectory = []
    for _ in range(5):
        model.train_on_batch(x, y)
        trajectory.append(model.get_weights())
    assert apply_ema(model) and not apply_ema(model)  # a second apply must not back up the averages
    assert_weights_close(model.get_weights(), numpy_ema(trajectory, momentum))
    assert restore_weights(model) and not restore_weights(model)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trajectory[-1]))


def test_ema_callback_validates_on_averages_and_trains_on_trained_weights():
    momentum = 0.8

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.trained, self.at_batch_begin, self.at_epoch_end = [], [], []

        def on_train_batch_begin(self, batch, logs=None):
            self.at_batch_begin.append(self.model.get_weights())

        def on_train_batch_end(self, batch, logs=None):
            self.trained.append(self.model.get_weights())

        def on_epoch_end(self, epoch, logs=None):
            self.at_epoch_end.append(self.model.get_weights())

    model = embedding_model()
    model.compile(build_optimizer("adam", 0.05, ema_momentum=momentum), "mse")
    probe = Probe()
    x, y = np.array([[1, 2, 3], [4, 5, 1], [7, 8, 9], [3, 2, 1]]), np.ones((4, 2))
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=[EMAWeights(), probe])
    assert_weights_close(probe.at_epoch_end[0], numpy_ema(probe.trained[:2], momentum))
    assert all(np.array_equal(a, b) for a, b in zip(probe.at_batch_begin[2], probe.trained[1]))
    assert_weights_close(model.get_weights(), numpy_ema(probe.trained, momentum))


def test_ema_of_a_layer_unfrozen_later_counts_it_constant_before():
    momentum = 0.8
    inputs = keras.layers.Input((3,))
    hidden = keras.layers.Dense(3, name="Transformer-0-FeedForward")
    model = keras.models.Model(inputs, keras.layers.Dense(2, name="logits")(hidden(inputs)))
    optimizer = build_optimizer("adam", 0.05, ema_momentum=momentum)
    x, y = np.eye(3)[:2], np.array([[1.0, -1.0], [0.5, 2.0]])
    trajectory = []
    for trainable in (False, True):  # gradual unfreezing, as recipes.finetune.fit_in_phases does it
        hidden.trainable = trainable
        model.compile(optimizer, "mse")
        for _ in range(3):
            model.train_on_batch(x, y)
            trajectory.append(model.get_weights())
    assert apply_ema(model)
    assert_weights_close(model.get_weights(), numpy_ema(trajectory, momentum))


def test_apply_ema_without_ema_or_updates_is_a_no_op():
    model = embedding_model()
    model.compile(build_optimizer("adam", 0.05), "mse")
    assert not apply_ema(model) and not restore_weights(model)
    model.compile(build_optimizer("adam", 0.05, ema_momentum=0.9), "mse")
    assert not apply_ema(model)  # no update yet: no average to apply


# ------------------------------------------------------------------------------ lazy embeddings

def sparse_stepper(optimizer, variable):
    """One compiled ``apply_gradients`` of an embedding lookup's gradient (``IndexedSlices``)."""
    @tf.function(reduce_retracing=True)
    def step(rows, values):
        optimizer.apply_gradients([(tf.IndexedSlices(values, rows, tf.shape(variable)), variable)])
    return lambda rows, values: step(tf.constant(rows, tf.int32), tf.constant(values, tf.float32))


def embedding_variable(seed=0):
    weights = np.random.default_rng(seed).normal(size=(6, 4)).astype(np.float32)
    return tf.Variable(weights, name="Embedding-Token/embeddings")


LAZY_OPTIONS = {
    "adam": {"name": "adam"},
    "adamw_schedule_multipliers_ema": {"name": "adamw", "warmup_steps": 2, "total_steps": 9,
                                       "lr_multipliers": {"Embedding-": 0.5, "Token": 3.0}, "ema_momentum": 0.8},
}


@pytest.mark.parametrize("options", LAZY_OPTIONS.values(), ids=list(LAZY_OPTIONS))
def test_lazy_rows_equal_dense_adam_when_a_batch_uses_every_row(options):
    """Rows repeated within a batch (a token twice) sum; with every row used, lazy is dense Adam,
    decay, schedule, multipliers and the average included."""
    variables = [embedding_variable(), embedding_variable()]
    optimizers = [build_optimizer(learning_rate=0.1, **options),
                  build_optimizer(learning_rate=0.1, embedding_update="lazy", **options)]
    steps = [sparse_stepper(o, v) for o, v in zip(optimizers, variables)]
    rng = np.random.default_rng(1)
    for _ in range(4):
        rows = np.concatenate([rng.permutation(6), [2, 5]])
        grads = rng.normal(size=(8, 4))
        for step in steps:
            step(rows, grads)
        np.testing.assert_allclose(variables[1].numpy(), variables[0].numpy(), rtol=1e-5, atol=1e-7)
    for slot in ("m", "v") + (("ema",) if "ema_momentum" in options else ()):
        np.testing.assert_allclose(*(o.get_slot(v, slot).numpy() for o, v in zip(optimizers, variables)),
                                   rtol=1e-5, atol=1e-7, err_msg=slot)


def test_lazy_rows_leave_unused_rows_and_their_moments_alone():
    variables = [embedding_variable(), embedding_variable()]
    dense, lazy = build_optimizer("adam", 0.1), build_optimizer("adam", 0.1, embedding_update="lazy")
    steps = [sparse_stepper(o, v) for o, v in zip((dense, lazy), variables)]
    for step in steps:
        step([0, 1, 1], np.ones((3, 4)))
    before = [values([v, o.get_slot(v, "m"), o.get_slot(v, "v")]) for o, v in zip((dense, lazy), variables)]
    for step in steps:
        step([2], np.ones((1, 4)))
    after = [values([v, o.get_slot(v, "m"), o.get_slot(v, "v")]) for o, v in zip((dense, lazy), variables)]
    for was, now in zip(before[1], after[1]):  # lazy: rows 0, 1, 3-5 keep weights and moments
        np.testing.assert_array_equal(now[[0, 1, 3, 4, 5]], was[[0, 1, 3, 4, 5]])
        assert not np.array_equal(now[2], was[2])
    # Dense Adam moves rows 0 and 1 again on their momentum (rows never used have none).
    assert np.all(after[0][0][[0, 1]] != before[0][0][[0, 1]])
    np.testing.assert_array_equal(after[0][0][3:], before[0][0][3:])
    np.testing.assert_allclose(after[0][0][2], after[1][0][2], rtol=1e-6)  # the used row: the same step


def test_lazy_rows_through_a_model_fit():
    """Keras's own train step hands the optimizer the lookup's IndexedSlices."""
    model = embedding_model()
    model.compile(build_optimizer("adam", 0.05, embedding_update="lazy"), "mse")
    table = model.get_layer("Embedding-Token").embeddings
    before = table.numpy().copy()
    model.fit(np.array([[1, 2, 3], [3, 2, 1]]), np.ones((2, 2)), verbose=0, epochs=2)
    moved = np.any(table.numpy() != before, axis=1)
    assert moved.tolist() == [False, True, True, True] + [False] * 6


# ------------------------------------------------------------------------------------ fused kernel

FUSED_OPTIONS = {
    "adam": {"name": "adam"},
    "adamw": {"name": "adamw"},  # no bias correction; decay on kernels, not on norms or biases
    "adamw_schedule_multipliers_ema": {"name": "adamw", "warmup_steps": 2, "total_steps": 9,
                                       "lr_multipliers": {"Transformer-0": 0.5, "kernel": 3.0, "logits": 0.0},
                                       "ema_momentum": 0.8},
}


@pytest.mark.parametrize("options", FUSED_OPTIONS.values(), ids=list(FUSED_OPTIONS))
def test_fused_kernel_equals_the_op_chain(options):
    """ResourceApplyAdam with its epsilon scaled is bert4keras's update: weights, moments and
    averages agree after several steps, decay, schedule, multipliers (0 freezes) and EMA included."""
    models = [bert_like_stack(2), bert_like_stack(2)]
    models[1].set_weights(models[0].get_weights())
    initial = values(models[1].trainable_variables)
    optimizers = [build_optimizer(learning_rate=0.1, **options),
                  build_optimizer(learning_rate=0.1, adam_kernel="fused", **options)]
    steps = [stepper(o, m.trainable_variables) for o, m in zip(optimizers, models)]
    rng = np.random.default_rng(2)
    for _ in range(5):
        grads = [rng.normal(size=v.shape) for v in models[0].trainable_variables]
        for step in steps:
            step(grads)
        assert_weights_close(values(models[1].trainable_variables), values(models[0].trainable_variables))
    slots = ("m", "v") + (("ema",) if "ema_momentum" in options else ())
    for variables in zip(*(m.trainable_variables for m in models)):
        for slot in slots:
            np.testing.assert_allclose(*(o.get_slot(v, slot).numpy() for o, v in zip(optimizers, variables)),
                                       rtol=1e-5, atol=1e-6, err_msg="%s %s" % (variables[0].name, slot))
    if "lr_multipliers" in options:  # the frozen head did not move
        for variable, was in zip(models[1].trainable_variables, initial):
            if "logits" in variable.name:
                np.testing.assert_array_equal(variable.numpy(), was)


def test_fused_kernel_trains_a_classifier_as_the_op_chain_does(tiny_ckpt):
    """Through Keras's train step on the tiny BERT (an embedding lookup's gradient densified)."""
    predictions = []
    for kernel in ADAM_KERNELS:
        tf.keras.utils.set_random_seed(0)
        model = tiny_classifier(tiny_ckpt)
        model.compile(build_optimizer("adamw", 1e-2, adam_kernel=kernel), "mse")
        model.fit(INPUTS, TARGETS, batch_size=2, epochs=2, verbose=0, shuffle=False)
        predictions.append(model.predict(INPUTS, verbose=0))
    np.testing.assert_allclose(predictions[1], predictions[0], rtol=1e-4, atol=1e-5)


def test_fused_kernel_refuses_accumulation_and_unknown_names():
    with pytest.raises(XtuneError, match="^train.adam_kernel: must be ops with train.grad_accum_steps > 1"):
        build_optimizer("adam", 1e-3, adam_kernel="fused", grad_accum_steps=2)
    with pytest.raises(XtuneError, match="^train.adam_kernel: must be ops or fused"):
        build_optimizer("adam", 1e-3, adam_kernel="eigen")

# ------------------------------------------------------------------------------------ .h5 files

COMBINATIONS = {
    "adam": {"name": "adam"},
    "adamw": {"name": "adamw"},
    "adam_ema": {"name": "adam", "ema_momentum": 0.9},
    "adamw_lazy": {"name": "adamw", "embedding_update": "lazy", "lr_multipliers": {"Embedding-": 0.5},
                   "ema_momentum": 0.9},
    "adamw_fused": {"name": "adamw", "adam_kernel": "fused", "lr_multipliers": {"Embedding-": 0.5},
                    "ema_momentum": 0.9},
    "adamw_everything": {"name": "adamw", "warmup_steps": 2, "total_steps": 20, "grad_accum_steps": 2,
                         "lr_multipliers": layer_lr_multipliers(2, 0.9, 0.5), "ema_momentum": 0.9},
}

RELOAD = """
import itertools, json, sys
import xtune_keras.train  # registers the custom layers, losses and optimizers
import numpy as np
from bert4keras.backend import keras
from xtune_keras.train.optimizers import apply_ema, restore_weights, optimizer_class, TAGS
names = [optimizer_class(t).__name__ for n in range(len(TAGS) + 1) for t in itertools.combinations(TAGS, n)]
assert len(set(names)) == 32 and all(n in keras.utils.get_custom_objects() for n in names[1:])
saved = json.load(open(sys.argv[1]))
inputs = [np.array(x, np.int32) for x in saved["inputs"]]
for path, expected in saved["files"].items():
    model = keras.models.load_model(path)
    assert type(model.optimizer).__name__ == expected["class"], (path, type(model.optimizer))
    assert int(model.optimizer.iterations.numpy()) == expected["iterations"], path
    assert model.optimizer.lazy_embeddings == expected["lazy"], path
    assert model.optimizer.fused == expected["fused"], path
    predictions = np.array(expected["predictions"], np.float32)
    assert np.array_equal(model.predict(inputs, verbose=0), predictions), path
    if "ema_momentum" in model.optimizer.get_config():
        trained = model.get_weights()
        assert apply_ema(model) and restore_weights(model)
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trained))
    model.fit(inputs, np.array(saved["targets"], np.float32), batch_size=2, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == expected["iterations"] + 2, path
print("reloaded", len(saved["files"]))
"""


def test_every_combination_reloads_from_h5_in_a_fresh_process(tiny_ckpt, tmp_path):
    files = {}
    for label, options in COMBINATIONS.items():
        model = tiny_classifier(tiny_ckpt)
        model.compile(build_optimizer(learning_rate=1e-2, **options), "mse")
        model.fit(INPUTS, TARGETS, batch_size=2, epochs=2, verbose=0)
        path = str(tmp_path / ("%s.h5" % label))
        model.save(path, include_optimizer=True, save_format="h5")
        files[path] = {"class": type(model.optimizer).__name__,
                       "iterations": int(model.optimizer.iterations.numpy()),
                       "lazy": model.optimizer.lazy_embeddings,
                       "fused": model.optimizer.fused,
                       "predictions": model.predict(INPUTS, verbose=0).tolist()}
    assert files[str(tmp_path / "adamw_everything.h5")]["class"] == "XtuneAdam_WD_LR_PW_EMA_GA"
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"inputs": [x.tolist() for x in INPUTS], "targets": TARGETS.tolist(),
                                 "files": files}))
    done = subprocess.run([sys.executable, "-c", RELOAD, str(saved)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reloaded %d" % len(COMBINATIONS) in done.stdout
