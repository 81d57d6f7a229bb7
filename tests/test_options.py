"""Every modelling option of the write-up, reached from YAML and trained on the tiny checkpoint."""
import os

import numpy as np
import pytest

from tests.helpers import write_experiment, write_multilabel_csvs
from xtune_keras.convert.checkpoints import load_variables
from xtune_keras.schema import load_config
from xtune_keras.errors import XtuneError
from xtune_keras.inference import evaluate_file
from xtune_keras.model.modelfile import load_model_file
from xtune_keras.recipes.finetune import run_experiment


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("options_data")
    return write_multilabel_csvs(str(tmp))


def train(tiny_ckpt, data, tmp_path, overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    yaml_path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp_path))
    return run_experiment(load_config(yaml_path, overrides), echo=False)


OPTION_SETS = {
    "focal": ["model.loss={type: focal, alpha: 0.25, gamma: 2.0}"],
    "multilabel_ce": ["model.loss=multilabel_ce"],
    "bce_smoothing": ["model.loss={type: bce, label_smoothing: 0.1}"],
    "adamw_warmup_decay": ["train.optimizer=adamw", "train.warmup_steps=0.1", "train.lr_decay=true"],
    "head_vs_encoder_lr_llrd": ["train.lr=2e-4", "train.encoder_lr_ratio=0.25", "train.layer_decay=0.95"],
    "accum_ema": ["train.grad_accum_steps=2", "train.ema_momentum=0.9"],
    "fgm": ["train.adversarial={method: fgm, epsilon: 0.5}"],
    "pgd": ["train.adversarial={method: pgd, epsilon: 0.5, alpha: 0.2, steps: 2}"],
    "rdrop": ["train.rdrop_alpha=1.0", "encoder.dropout=0.1"],
    "layer_pool": ["encoder.output_layer=-1", "encoder.pool_layers=2", "encoder.pool_mode=mean"],
    "output_layer_0": ["encoder.output_layer=0"],
    "textcnn_stack": ["model.heads=[{type: mlp, units: [9, 7]}, {type: textcnn, kernel_sizes: [2, 3], filters: 4}]"],
    "avg_stack": ["model.heads=[{type: mlp, units: [9, 7]}, {type: avg}]"],
    "dropouts": ["encoder.dropout=0.2", "encoder.attention_dropout=0.05"],
    "rule_per_segment": ["data.truncation=head", "data.truncation2=tail", "data.max_len=12"],
    "group_by_length": ["train.group_by_length=true", "train.length_pool=2"],
    "micro_batches": ["train.micro_batches=3", "train.batch_size=7"],
    "micro_batches_fgm_rdrop": ["train.micro_batches=2", "train.adversarial={method: fgm}",
                                "train.rdrop_alpha=1.0"],
    "unfreeze_through_a_trainer": ["encoder.freeze=true", "encoder.unfreeze_epoch=1",
                                   "train.adversarial={method: fgm}", "train.micro_batches=2"],
}


@pytest.mark.parametrize("name", OPTION_SETS)
def test_option_trains_and_saves(tiny_ckpt, data, tmp_path, name):
    result = train(tiny_ckpt, data, tmp_path, OPTION_SETS[name] + ["train.epochs=2"])
    assert result["epochs_run"] == 2
    assert np.isfinite(result["best"]["val_loss"])
    model, meta, _ = load_model_file(result["h5"])
    assert model.name == "xtune_classifier"


def test_validation_metrics_of_length_sorted_prediction_match_the_saved_model(tiny_ckpt, data, tmp_path):
    """Validation predicts in length order (batches.py); the scores must be those of the texts in
    file order, as ``xtune evaluate`` computes them from the saved .h5."""
    result = train(tiny_ckpt, data, tmp_path, ["train.group_by_length=true", "train.epochs=2",
                                               "train.batch_size=7"])
    scores = evaluate_file(result["h5"], data["valid"])
    best = result["best"]
    for key in ("acc", "micro_f1", "macro_f1", "subset_acc"):
        assert scores[key] == pytest.approx(best["val_" + key], abs=1e-9), key


def encoder_weight(model):
    return model.get_layer("Transformer-0-FeedForward").get_weights()[0]


def test_frozen_encoder_keeps_checkpoint_weights(tiny_ckpt, data, tmp_path):
    result = train(tiny_ckpt, data, tmp_path, ["encoder.freeze=true", "train.epochs=2"])
    model, _, _ = load_model_file(result["h5"])
    stored = load_variables(tiny_ckpt["checkpoint"])
    assert np.array_equal(encoder_weight(model), stored["bert/encoder/layer_0/intermediate/dense/kernel"])


def test_freeze_pattern_and_unfreeze_schedule(tiny_ckpt, data, tmp_path):
    stored = load_variables(tiny_ckpt["checkpoint"])["bert/encoder/layer_0/intermediate/dense/kernel"]
    frozen = train(tiny_ckpt, data, tmp_path / "a", ["encoder.freeze_pattern=^Transformer-0-",
                                                      "train.epochs=2", "train.monitor=val_acc"])
    model, _, _ = load_model_file(frozen["h5"])
    assert np.array_equal(encoder_weight(model), stored)
    assert not np.array_equal(model.get_layer("Transformer-1-FeedForward").get_weights()[0],
                              load_variables(tiny_ckpt["checkpoint"])["bert/encoder/layer_1/intermediate/dense/kernel"])


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_unfreeze_schedule_trains_encoder_from_that_epoch(tiny_ckpt, micro_batches):
    """With micro-batches the trainer's traced per-part step must follow the recompile."""
    from bert4keras.backend import keras

    from xtune_keras.train.adversarial import build_trainer
    from xtune_keras.data.batches import PaddedBatches
    from xtune_keras.model.losses import build_loss
    from xtune_keras.model.classifier import build_classifier, freeze_layers
    from xtune_keras.train.optimizers import build_optimizer
    from xtune_keras.recipes.finetune import compile_model, fit_in_phases

    classifier = build_classifier(tiny_ckpt["config"], tiny_ckpt["checkpoint"], 2, [{"type": "cls"}])
    frozen = freeze_layers(classifier, freeze=True)
    model = build_trainer(classifier, micro_batches=micro_batches)
    optimizer, loss = build_optimizer("adam", 1e-2), build_loss("bce")
    compile_model(model, optimizer, loss)
    rng = np.random.default_rng(0)
    ids = [[2] + rng.integers(5, 60, int(k)).tolist() + [3] for k in rng.integers(2, 8, 16)]
    batches = PaddedBatches(ids, [[0] * len(x) for x in ids], rng.integers(0, 2, (16, 2)).astype(np.float32), 8,
                            micro_batches=micro_batches)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(encoder_weight(classifier)))
    before = encoder_weight(classifier)
    fit_in_phases(model, batches, [record], epochs=3, unfreeze_epoch=1, frozen=frozen,
                  recompile=lambda: compile_model(model, optimizer, loss))
    assert len(seen) == 3
    assert np.array_equal(seen[0], before)  # epoch 1: frozen
    assert not np.array_equal(seen[1], before) and not np.array_equal(seen[2], seen[1])


def test_tuned_thresholds_are_stored_and_used(tiny_ckpt, data, tmp_path):
    result = train(tiny_ckpt, data, tmp_path, ["model.threshold=tuned", "train.epochs=2"])
    assert len(result["thresholds"]) == 3 and "valid_tuned" in result
    _, meta, _ = load_model_file(result["h5"])
    assert meta["threshold"] == result["thresholds"]
    metrics = evaluate_file(result["h5"], data["test"])
    assert metrics["micro_f1"] == pytest.approx(result["test"]["micro_f1"])


def test_single_label_with_smoothing(tiny_ckpt, tmp_path):
    paths = write_multilabel_csvs(str(tmp_path), seed=4)
    for part in paths.values():
        with open(part, encoding="utf-8") as f:
            lines = [line.split("|")[0] for line in f.read().splitlines()]
        with open(part, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    result = train(tiny_ckpt, paths, tmp_path, ["data.multi_label=false", "train.epochs=1",
                                                "model.loss={type: ce, label_smoothing: 0.1}"])
    assert os.path.isfile(result["h5"])


@pytest.mark.parametrize("override, message", [
    ("train.optimizer=sgd", "train.optimizer: unknown optimizer 'sgd'; valid: adam, adamw"),
    ("train.adversarial={method: vat}", "train.adversarial.method: unknown choice 'vat'; valid: fgm, pgd"),
    ("train.adversarial={method: fgm, eps: 1}", "unknown key 'train.adversarial.eps'; valid keys: method"),
    ("encoder.pool_mode=sum", "encoder.pool_mode: unknown choice 'sum'; valid: concat, mean, max"),
    ("encoder.unfreeze_epoch=1", "encoder.unfreeze_epoch needs encoder.freeze"),
])
def test_unknown_choices_list_valid_ones(tiny_ckpt, data, tmp_path, override, message):
    yaml_path = write_experiment(str(tmp_path / "exp.yaml"), data, tiny_ckpt["dir"], str(tmp_path))
    with pytest.raises(XtuneError) as info:
        load_config(yaml_path, [override])
    assert message in str(info.value)
