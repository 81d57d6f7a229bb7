"""Fine-tuning: the recipe of the write-up's experiments, and the builders it calls.

Phases: ``setup_data`` (tables, labels, token ids, batches; a resumed run replays the data order
of its finished epochs), ``setup_model`` (classifier, freezing, loss, optimizer, trainer, compiled
under the distribution strategy; a resumed run restores weights and optimizer state),
``setup_callbacks``, ``fit`` (gradual unfreezing in two phases) and ``evaluate`` (restored best
weights, tuned thresholds, test split). See ``recipes/base.py`` for hooks and the run folder.
"""
import os

import numpy as np
import tensorflow as tf
from bert4keras.backend import keras

import xtune_keras
from xtune_keras.data.batches import PaddedBatches
from xtune_keras.data.prepare import prepare_data
from xtune_keras.data.tables import DEFAULT_THRESHOLD
from xtune_keras.model.classifier import build_classifier, freeze_layers, unfreeze_layers
from xtune_keras.model.encoders import read_config
from xtune_keras.model.losses import ACTIVATIONS, build_loss, loss_type
from xtune_keras.model.modelfile import update_meta
from xtune_keras.recipes import RECIPES, run_recipe
from xtune_keras.recipes.base import Recipe
from xtune_keras.schema import config_hash, h5_path, load_config
from xtune_keras.train import callbacks as cb
from xtune_keras.train.loss_scale import DynamicLossScale
from xtune_keras.train.precision import precision_policy, resolve_precision
from xtune_keras.train import resume
from xtune_keras.train.adversarial import build_trainer, saveable_model
from xtune_keras.train.distribute import build_strategy
from xtune_keras.train.metrics import ACTIVATIONS as NUMPY_ACTIVATIONS
from xtune_keras.train.metrics import tune_thresholds
from xtune_keras.train.optimizers import EMAWeights, build_optimizer, check_lr_multipliers, layer_lr_multipliers


def set_seed(seed, deterministic):
    """Same seed, same metrics: seeds Python/NumPy/TF and asks TF for deterministic kernels."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def model_meta(config, labels, activation):
    """What a saved .h5 must carry so that evaluate/predict can prepare raw text like training."""
    data, model = config["data"], config["model"]
    keys = ("text1", "text2", "label", "multi_label", "label_sep", "clean_patterns", "max_len",
            "truncation", "truncation2", "head_ratio", "lowercase")
    meta = {k: data[k] for k in keys}
    threshold = model["threshold"]
    meta.update(
        name=config["name"], labels=list(labels.names), loss=model["loss"], activation=activation,
        # "tuned" thresholds are found after training; until then 0.5 decides
        threshold=DEFAULT_THRESHOLD if threshold == "tuned" else threshold,
        xtune_version=xtune_keras.__version__,
    )
    return meta


def split_batches(prepared, train, seed):
    """``{split: PaddedBatches}``: training batches shuffled (and grouped or cut as ``train.*`` says),
    the others in order."""
    return {name: PaddedBatches(*prepared["encoded"][name], prepared["targets"][name],
                                batch_size=train["batch_size"], shuffle=(name == "train"), seed=seed,
                                group_by_length=train["group_by_length"] and name == "train",
                                pool_batches=train["length_pool"],
                                micro_batches=train["micro_batches"] if name == "train" else 1)
            for name in prepared["encoded"]}


def make_optimizer(train, classifier, num_layers, steps_per_epoch):
    """The optimizer of ``train.*``: Adam/AdamW, warmup and linear decay, head vs encoder LR,
    layer-wise decay, extra multipliers, gradient accumulation, EMA, lazy embedding rows
    (see optimizers.py)."""
    multipliers = {}
    if train["layer_decay"] is not None or train["encoder_lr_ratio"] != 1:
        multipliers = layer_lr_multipliers(num_layers, train["layer_decay"], train["encoder_lr_ratio"])
    if train["lr_multipliers"]:
        check_lr_multipliers(classifier, train["lr_multipliers"])
        for key, factor in train["lr_multipliers"].items():
            multipliers[key] = multipliers.get(key, 1.0) * factor
    total_steps = train["epochs"] * steps_per_epoch
    warmup = train["warmup_steps"]
    if isinstance(warmup, float) and 0 < warmup < 1:  # a fraction of all steps (BERT used 0.1)
        warmup = int(round(warmup * total_steps))
    return build_optimizer(
        train["optimizer"], train["lr"], weight_decay=train["weight_decay"], clip_norm=train["clip_norm"],
        warmup_steps=warmup, total_steps=total_steps if train["lr_decay"] else None,
        lr_multipliers=multipliers or None, grad_accum_steps=train["grad_accum_steps"],
        ema_momentum=train["ema_momentum"], embedding_update=train["embedding_update"],
        adam_kernel=train["adam_kernel"],
    )


def make_trainer(classifier, train, activation):
    return build_trainer(classifier, micro_batches=train["micro_batches"], **trainer_options(train, activation))


def trainer_options(train, activation):
    """The trainer's keyword arguments of ``train.adversarial``, ``train.rdrop_alpha`` and of
    ``train.precision`` (mixed_float16: dynamic loss scaling)."""
    adversarial = train["adversarial"] or {}
    loss_scale = DynamicLossScale() if train["precision"] == "mixed_float16" else None
    return dict(method=adversarial.get("method"), epsilon=adversarial.get("epsilon", 1.0),
                alpha=adversarial.get("alpha", 0.3), steps=adversarial.get("steps", 3),
                rdrop_alpha=train["rdrop_alpha"], activation=activation, loss_scale=loss_scale)


@RECIPES.register("finetune")
class FineTuneRecipe(Recipe):
    """One experiment, one seed: the classifier of ``model.heads`` on the encoder, trained."""

    PHASES = ("setup_data", "setup_model", "setup_callbacks", "fit", "evaluate")

    def setup_data(self):
        config, train = self.config, self.config["train"]
        set_seed(config["seed"], train["deterministic"])
        self.prepared = prepare_data(self.pretrained(config))
        self.labels, self.targets = self.prepared["labels"], self.prepared["targets"]
        self.batches = split_batches(self.prepared, train, config["seed"])
        self.open_run_dir(self.labels)
        for _ in range(self.initial_epoch):  # the orders the finished epochs drew, drawn again
            self.batches["train"].on_epoch_end()
        if self.resumed:
            self.say("resuming %s at epoch %d of %d" % (self.run_dir.path, self.initial_epoch + 1, train["epochs"]))

    def pretrained(self, config):
        """The config whose encoder is read: with ``encoder.pretrain``, the checkpoint folder of that
        pretraining, run now unless it finished before (its run folder is keyed on its config)."""
        if not config["encoder"]["pretrain"]:
            return config
        pretrain = load_config(config["encoder"]["pretrain"], recipe="pretrain")
        self.say("encoder.pretrain: %s" % config["encoder"]["pretrain"])
        done = run_recipe(pretrain, echo=self.echo)
        if not os.path.isdir(done["output_dir"]):  # finished, but its folder was removed since
            done = run_recipe(pretrain, force=True, echo=self.echo)
        encoder = dict(config["encoder"], dir=done["output_dir"], config=None, checkpoint=None, vocab=None)
        return dict(config, encoder=encoder)

    def setup_model(self):
        config, train, enc = self.config, self.config["train"], self.config["encoder"]
        # train.strategy: mirrored builds every variable (model, optimizer, metrics) on each device;
        # train.batch_size stays the global batch, split across the replicas. No strategy: a no-op.
        strategy = build_strategy(train["strategy"], train["devices"], train["batch_size"], self.echo)
        with strategy.scope(), precision_policy(self.precision()):
            self.classifier = build_model(config, self.prepared["paths"], len(self.labels))
            self.frozen = freeze_layers(self.classifier, enc["freeze"], enc["freeze_pattern"])
            self.loss = build_loss(config["model"]["loss"])
            self.activation = ACTIVATIONS[loss_type(config["model"]["loss"])]
            num_layers = read_config(self.prepared["paths"]["config"])["num_hidden_layers"]
            self.optimizer = make_optimizer(train, self.classifier, num_layers, len(self.batches["train"]))
            self.model = make_trainer(self.classifier, train, self.activation)
            self.compile()
        if self.resumed:
            resume.restore_training(self.run_dir.resume_dir, self.resumed, self.model, self.optimizer)

    def compile(self):
        compile_model(self.model, self.optimizer, self.loss, self.config["train"]["jit_compile"])

    def precision(self):
        """The policy the model is built under (``train.precision``; ``auto`` says what it picked)."""
        self.policy, why = resolve_precision(self.config["train"]["precision"])
        if self.config["train"]["precision"] == "auto":
            self.say(why)
        return self.policy

    def setup_callbacks(self):
        config, train, data = self.config, self.config["train"], self.config["data"]
        self.h5_path = h5_path(config)
        self.meta = model_meta(config, self.labels, self.activation)
        self.checkpoint = cb.NamedH5Checkpoint(self.h5_path, train["monitor"], self.meta,
                                               self.prepared["tokenizer"]._token_dict, train["save_optimizer"])
        stopping = cb.early_stopping(train["monitor"], train["patience"], restore_best=False)
        self.callbacks = self.hook_callbacks() + [
            EMAWeights(),  # first of ours: everything after it sees the averaged weights (no-op without EMA)
            cb.ValidationMetrics(_inputs_only(self.batches["valid"]), self.targets["valid"], self.loss,
                                 self.activation, data["multi_label"], self.meta["threshold"]),
            self.checkpoint,
            stopping,
            cb.MetricsLogger(self.run_dir.metrics_path, echo=self.echo),
        ]
        if config["output"]["tensorboard"]:
            log_dir = self.run_dir.tensorboard_dir
            self.callbacks.append(cb.tensorboard(log_dir))
            self.callbacks.append(cb.hparams_callback(
                log_dir, config, trial_id="%s/%s" % (config["name"], os.path.basename(self.run_dir.path))))
        stateful = {"early_stopping": (stopping, resume.EARLY_STOPPING_STATE),
                    "h5_checkpoint": (self.checkpoint, resume.H5_CHECKPOINT_STATE)}
        self.callbacks.append(resume.ResumeState(self.run_dir.resume_dir, self.optimizer, stateful, self.resumed))

    def fit(self):
        train, enc = self.config["train"], self.config["encoder"]
        self.epoch_logs = [{k: v for k, v in row.items() if k not in ("epoch", "seconds")}
                           for row in self.run_dir.epochs()]
        if not (self.resumed and self.resumed["stop_training"]):
            history = fit_in_phases(self.model, self.batches["train"], self.callbacks, train["epochs"],
                                    enc["unfreeze_epoch"], self.frozen, self.compile,
                                    initial_epoch=self.initial_epoch, verbose=self.verbose)
            self.epoch_logs = self.epoch_logs[:self.initial_epoch] + [
                {k: float(v[i]) for k, v in history.history.items()} for i in range(len(history.epoch))]
        elif self.resumed["callbacks"]["h5_checkpoint"]["best_epoch"] is not None:
            self.checkpoint.best_epoch = self.resumed["callbacks"]["h5_checkpoint"]["best_epoch"]
        if train["restore_best"] and self.checkpoint.best_epoch is not None:
            self.restore_best()

    def restore_best(self):
        self.classifier.load_weights(self.h5_path)

    def result_header(self):
        """The fields every run's result.json starts with (what sweeps, combine and report read)."""
        config, best_epoch = self.config, self.checkpoint.best_epoch
        return {"name": config["name"], "seed": config["seed"], "config_hash": config_hash(config),
                "run_dir": self.run_dir.path, "monitor": config["train"]["monitor"],
                "best_epoch": best_epoch, "epochs_run": len(self.epoch_logs),
                "best": self.epoch_logs[best_epoch - 1] if best_epoch else {}, "precision": self.policy}

    def evaluate(self):
        self.result = self.result_header()
        scores, self.logits = score_classifier(self.config, self.classifier, self.batches, self.targets, self.loss,
                                               self.activation, self.meta["threshold"], self.h5_path,
                                               self.checkpoint.best_epoch, self.verbose)
        self.result.update(scores, num_labels=len(self.labels),
                           examples={name: len(ex) for name, ex in self.prepared["splits"].items()})


def score_classifier(config, classifier, batches, targets, loss, activation, threshold, h5_path, best_epoch,
                     verbose=0):
    """``(scores, logits)`` of a trained classifier: with ``model.threshold: tuned``, per-label
    thresholds tuned on validation (and written into the ``.h5``), then the test split scored."""
    multi_label = config["data"]["multi_label"]
    scores, logits = {"h5": h5_path}, {}

    def predict(split):
        inputs = _inputs_only(batches[split])
        return inputs.in_input_order(classifier.predict(inputs, verbose=verbose))

    if config["model"]["threshold"] == "tuned" and best_epoch is not None:
        logits["valid"] = predict("valid")  # one pass serves tuning and its report
        threshold = tune_and_store_thresholds(logits["valid"], targets["valid"], activation, h5_path)
        scores["thresholds"] = threshold
        scores["valid_tuned"] = cb.evaluate_logits(logits["valid"], targets["valid"], loss, activation, multi_label,
                                                   threshold)
    if "test" in batches:
        logits["test"] = predict("test")
        scores["test"] = cb.evaluate_logits(logits["test"], targets["test"], loss, activation, multi_label, threshold)
    return scores, logits


def run_experiment(config, force=False, echo=True, hooks=()):
    """Train one experiment with one seed (resuming a killed attempt); its result dict."""
    return FineTuneRecipe(config, echo=echo, hooks=hooks).run(force=force)


def tune_and_store_thresholds(logits, y_true, activation, h5_path):
    """Per-label thresholds that maximise each label's F1 on validation, written into the .h5."""
    thresholds = tune_thresholds(y_true, NUMPY_ACTIVATIONS[activation](np.asarray(logits, np.float64)))
    update_meta(h5_path, threshold=[float(t) for t in thresholds])
    return [float(t) for t in thresholds]


def build_model(config, paths, num_labels):
    enc = config["encoder"]
    return build_classifier(
        paths["config"], paths["checkpoint"], num_labels, config["model"]["heads"], enc["model"],
        output_layer=enc["output_layer"], pool_layers=enc["pool_layers"], pool_mode=enc["pool_mode"],
        dropout=enc["dropout"], attention_dropout=enc["attention_dropout"],
    )


def compile_model(model, optimizer, loss_fn, jit_compile=False):
    """``jit_compile`` (``train.jit_compile``): Keras traces the training step with XLA."""
    model.compile(optimizer=optimizer, loss=loss_fn, metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
                  jit_compile=jit_compile)


def fit_in_phases(model, train_batches, callbacks, epochs, unfreeze_epoch, frozen, recompile, initial_epoch=0,
                  verbose=0):
    """``fit`` from ``initial_epoch`` to ``epochs``; with ``unfreeze_epoch`` the frozen layers join
    training after that many epochs (gradual unfreezing, Howard & Ruder 2018). Keras needs a
    recompile to see a change of ``trainable``; the optimizer object (and its slots) is kept. The
    History of both phases is merged. EarlyStopping restarts its patience in the second phase."""
    shuffle = getattr(train_batches, "shuffle", True)  # Keras orders the batches (not round-robin tasks)
    if not unfreeze_epoch or unfreeze_epoch >= epochs:
        return model.fit(train_batches, initial_epoch=initial_epoch, epochs=epochs, callbacks=callbacks,
                         verbose=verbose, shuffle=shuffle)
    first = None
    if initial_epoch < unfreeze_epoch:
        first = model.fit(train_batches, initial_epoch=initial_epoch, epochs=unfreeze_epoch, callbacks=callbacks,
                          verbose=verbose, shuffle=shuffle)
        if model.stop_training:
            return first
    # the classifier's layers, also inside a trainer; every task's classifier of a multi-task model
    for classifier in getattr(model, "classifiers", [saveable_model(model)]):
        unfreeze_layers(classifier, frozen)
    recompile()
    second = model.fit(train_batches, initial_epoch=max(initial_epoch, unfreeze_epoch), epochs=epochs,
                       callbacks=callbacks, verbose=verbose, shuffle=shuffle)
    if first is not None:
        second.epoch = first.epoch + second.epoch
        second.history = {k: first.history.get(k, []) + v for k, v in second.history.items()}
    return second


def _inputs_only(batches):
    """Prediction batches of the same texts, in length order (less padding; see batches.py)."""
    return PaddedBatches(batches.token_ids, batches.segment_ids, None, batches.batch_size, by_length=True)
