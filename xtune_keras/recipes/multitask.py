"""Multi-task fine-tuning (``recipe: multitask``, or any experiment with ``tasks:``): one shared
encoder, a main task and auxiliary tasks, each with its own data, heads, loss and threshold
(Liu et al. 2019, MT-DNN; Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?",
multi-task fine-tuning section).

Phases as in fine-tuning: ``setup_data`` (every task's tables and batches; a plan of which task
each step trains, ``data/task_batches.py``), ``setup_model`` (the encoder once, a classifier per
task on it, a trainer per task, one optimizer; ``train/multitask.py``), ``setup_callbacks`` (each
task validated every epoch; early stopping and the best epoch follow the main task's monitor),
``fit`` and ``evaluate`` (each task's ``.h5`` reloaded and scored). Every task's ``.h5`` is a
standalone classifier with its own labels and meta: ``evaluate``, ``predict`` and ``export`` take it
as they take a single-task model. The main task's result fields are the run's own (so sweeps and
reports read a multi-task row like any other); ``result["tasks"]`` has every task's.
"""
import os

from xtune_keras.data.prepare import prepare_data
from xtune_keras.data.task_batches import TaskBatches
from xtune_keras.errors import XtuneError
from xtune_keras.model.classifier import build_encoder, classifier_on, freeze_layers
from xtune_keras.model.encoders import read_config
from xtune_keras.model.losses import ACTIVATIONS, build_loss, loss_type
from xtune_keras.recipes import RECIPES
from xtune_keras.recipes.finetune import (FineTuneRecipe, _inputs_only, make_optimizer, model_meta, score_classifier,
                                          set_seed, split_batches, trainer_options)
from xtune_keras.schema import active_tasks, task_config
from xtune_keras.train import callbacks as cb
from xtune_keras.train import resume
from xtune_keras.train.precision import precision_policy
from xtune_keras.train.multitask import MultiTaskModel, TaskTrainer
from xtune_keras.train.optimizers import EMAWeights
from bert4keras.backend import keras


class Task:
    """One task of the run: its fine-tuning view of the config, data, classifier and files."""

    def __init__(self, spec, config):
        self.name, self.main, self.weight = spec["name"], spec["main"], spec["weight"]
        self.config = task_config(config, spec)
        self.data = self.config["data"]
        self.h5_path = self.config["output"]["h5"]

    def prefixes(self):
        return ("val_", self.name + "_val_") if self.main else (self.name + "_val_",)


@RECIPES.register("multitask")
class MultiTaskRecipe(FineTuneRecipe):
    """One experiment with several tasks, one seed: a classifier per task on one encoder."""

    def setup_data(self):
        config, train = self.config, self.config["train"]
        set_seed(config["seed"], train["deterministic"])
        shared = self.pretrained(config)
        self.tasks = [Task(spec, shared) for spec in active_tasks(config)]
        for task in self.tasks:
            task.prepared = prepare_task(task)
            task.labels, task.targets = task.prepared["labels"], task.prepared["targets"]
            task.batches = split_batches(task.prepared, train, config["seed"])
        self.main = self.tasks[0]
        self.prepared, self.labels, self.targets = self.main.prepared, self.main.labels, self.main.targets
        self.batches = {"train": TaskBatches([task.batches["train"] for task in self.tasks], 0,
                                             config["multitask"]["sampling"], config["multitask"])}
        self.open_run_dir(self.labels)
        for _ in range(self.initial_epoch):  # the plans the finished epochs drew, drawn again
            self.batches["train"].on_epoch_end()
        if self.resumed:
            self.say("resuming %s at epoch %d of %d" % (self.run_dir.path, self.initial_epoch + 1, train["epochs"]))

    def setup_model(self):
        train, paths = self.config["train"], self.main.prepared["paths"]
        with precision_policy(self.precision()):
            self.build_tasks(paths)
        num_layers = read_config(paths["config"])["num_hidden_layers"]
        self.optimizer = make_optimizer(train, self.classifier, num_layers, len(self.batches["train"]))
        self.model = MultiTaskModel([task.trainer for task in self.tasks])
        self.compile()
        if self.resumed:
            resume.restore_training(self.run_dir.resume_dir, self.resumed, self.model, self.optimizer)

    def build_tasks(self, paths):
        """The shared encoder, then each task's classifier and trainer on it."""
        config, train, enc = self.config, self.config["train"], self.config["encoder"]
        encoder = build_encoder(paths["config"], paths["checkpoint"], enc["model"], enc["output_layer"],
                                enc["pool_layers"], enc["pool_mode"], enc["dropout"], enc["attention_dropout"])
        learned = config["multitask"]["loss_weighting"] == "uncertainty"
        self.frozen = []
        for task in self.tasks:
            task.classifier = classifier_on(encoder, len(task.labels), task.config["model"]["heads"],
                                            paths["checkpoint"])
            self.frozen = sorted(set(self.frozen) | set(freeze_layers(task.classifier, enc["freeze"],
                                                                       enc["freeze_pattern"])))
            task.loss = build_loss(task.config["model"]["loss"])
            task.activation = ACTIVATIONS[loss_type(task.config["model"]["loss"])]
            task.trainer = TaskTrainer(task.classifier, task.name, task.weight, learned,
                                       **trainer_options(train, task.activation))
        self.classifier, self.loss, self.activation = self.main.classifier, self.main.loss, self.main.activation

    def compile(self):
        def accuracy():
            return [keras.metrics.CategoricalAccuracy(name="acc")]

        self.model.compile_tasks(self.optimizer, [task.loss for task in self.tasks], [accuracy] * len(self.tasks),
                                 self.config["train"]["jit_compile"])

    def setup_callbacks(self):
        config, train = self.config, self.config["train"]
        token_dict = self.main.prepared["tokenizer"]._token_dict
        validations, checkpoints = [], []
        for task in self.tasks:
            task.meta = model_meta(task.config, task.labels, task.activation)
            validations.append(cb.ValidationMetrics(
                _inputs_only(task.batches["valid"]), task.targets["valid"], task.loss, task.activation,
                task.data["multi_label"], task.meta["threshold"], predictor=task.classifier,
                prefixes=task.prefixes()))
            task.checkpoint = cb.NamedH5Checkpoint(task.h5_path, train["monitor"], task.meta, token_dict,
                                                   train["save_optimizer"], target=task.classifier)
            checkpoints.append(task.checkpoint)
        self.meta, self.checkpoint, self.h5_path = self.main.meta, self.main.checkpoint, self.main.h5_path
        stopping = cb.early_stopping(train["monitor"], train["patience"], restore_best=False)
        self.callbacks = self.hook_callbacks() + [EMAWeights()] + validations + checkpoints + [
            stopping, cb.MetricsLogger(self.run_dir.metrics_path, echo=self.echo)]
        if config["output"]["tensorboard"]:
            log_dir = self.run_dir.tensorboard_dir
            self.callbacks.append(cb.tensorboard(log_dir))
            self.callbacks.append(cb.hparams_callback(
                log_dir, self.main.config, trial_id="%s/%s" % (config["name"], os.path.basename(self.run_dir.path))))
        stateful = {"early_stopping": (stopping, resume.EARLY_STOPPING_STATE),
                    "h5_checkpoint": (self.checkpoint, resume.H5_CHECKPOINT_STATE)}
        stateful.update(("h5_checkpoint_" + task.name, (task.checkpoint, resume.H5_CHECKPOINT_STATE))
                        for task in self.tasks[1:])
        self.callbacks.append(resume.ResumeState(self.run_dir.resume_dir, self.optimizer, stateful, self.resumed))

    def restore_best(self):
        for task in self.tasks:
            task.checkpoint.best_epoch = self.checkpoint.best_epoch  # saved together, on the main monitor
            task.classifier.load_weights(task.h5_path)

    def evaluate(self):
        self.result = dict(self.result_header(), tasks={})
        best, best_epoch = self.result["best"], self.result["best_epoch"]
        for task in self.tasks:
            scores, task.logits = score_classifier(task.config, task.classifier, task.batches, task.targets,
                                                   task.loss, task.activation, task.meta["threshold"], task.h5_path,
                                                   best_epoch, self.verbose)
            prefix = task.name + "_"
            self.result["tasks"][task.name] = dict(
                scores, main=task.main, weight=task.weight, loss_weight=task.trainer.loss_weight(),
                num_labels=len(task.labels),
                labels=list(task.labels.names),
                best={k[len(prefix):]: v for k, v in best.items() if k.startswith(prefix)},
                examples={name: len(ex) for name, ex in task.prepared["splits"].items()})
            if task.main:  # the main task's fields are the run's (what sweeps and reports read)
                self.result.update(scores, num_labels=len(task.labels), examples=self.result["tasks"][task.name]
                                   ["examples"])
                self.logits = task.logits


def prepare_task(task):
    """The task's data; an input error names the task."""
    try:
        return prepare_data(task.config)
    except XtuneError as exc:
        raise XtuneError("task '%s': %s" % (task.name, exc)) from None
