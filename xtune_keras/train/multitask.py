"""Multi-task training: one encoder, a classifier per task, each step on one task's batch.

Each task has a ``TaskTrainer``: the fine-tuning trainer (adversarial.AdversarialTrainer: FGM,
PGD, R-Drop and micro-batches as in single-task runs) of that task's classifier, whose loss is
weighted. Its step differentiates only the task's classifier (the shared encoder and this task's
heads), so another task's heads do not move, not even through Adam's momentum or weight decay.
Loss weights are fixed, or learned (Kendall et al. 2018, "Multi-Task Learning Using Uncertainty to
Weigh Losses": ``exp(-s_i) L_i + s_i`` with a trainable ``s_i`` per task).

``MultiTaskModel`` is what ``fit`` drives: its train function reads each batch's task index (the
third element of ``data.task_batches.TaskBatches``) in Python and runs that task's traced step,
so each task's step is traced once for its own heads, with free lengths and batch sizes. Its logs hold every task's
running metrics prefixed by the task name, and the main task's also unprefixed (what
``train.monitor``, early stopping and the sweep tables read).
"""
import math

import tensorflow as tf
from bert4keras.backend import keras

from xtune_keras.train.adversarial import AdversarialTrainer


class TaskTrainer(AdversarialTrainer):
    """A task's trainer with a loss weight: fixed, or ``exp(-s) L + s`` with ``s`` trained
    (``learned=True``; ``s`` starts at ``-log(weight)``)."""

    def __init__(self, classifier, task, weight=1.0, learned=False, **options):
        super().__init__(classifier, name="trainer_" + task, **options)
        self.task, self.fixed_weight, self.learned = task, float(weight), learned
        self.log_variance = tf.Variable(-math.log(weight), trainable=learned, name=task + "_log_variance") \
            if learned else None

    def step_variables(self):
        return super().step_variables() + ([self.log_variance] if self.learned else [])

    def task_loss(self, y, logits, sample_weight=None):
        loss = super().task_loss(y, logits, sample_weight)
        if self.learned:
            return tf.exp(-self.log_variance) * loss + self.log_variance
        return loss if self.fixed_weight == 1.0 else self.fixed_weight * loss

    def loss_weight(self):
        """The weight on the task loss now: fixed, or ``exp(-s)``."""
        return float(tf.exp(-self.log_variance)) if self.learned else self.fixed_weight


class MultiTaskModel(keras.Model):
    """``fit`` over ``(x, y, task index)`` batches; ``trainers[i]`` trains task i (main first)."""

    def __init__(self, trainers, **kwargs):
        # float32: see AdversarialTrainer (Keras would wrap a mixed_float16 model's optimizer).
        super().__init__(name=kwargs.pop("name", "multitask"), dtype="float32", **kwargs)
        self.trainers = list(trainers)
        self.task_steps = None
        self.last_task = None  # the task of the step just run (for callbacks and benchmarks)

    @property
    def classifiers(self):
        return [trainer.classifier for trainer in self.trainers]

    def call(self, inputs, training=None):
        return self.trainers[0](inputs, training=training)

    def compile_tasks(self, optimizer, losses, metrics, jit_compile=False):
        """Every trainer compiled with the one shared optimizer; ``losses``/``metrics`` per task;
        ``jit_compile``: each task's step traced with XLA (``train.jit_compile``)."""
        for trainer, loss, make_metrics in zip(self.trainers, losses, metrics):
            trainer.compile(optimizer=optimizer, loss=loss, metrics=make_metrics())
        self.compile(optimizer=optimizer, jit_compile=jit_compile)
        self.task_steps = None

    @property
    def metrics(self):
        return [metric for trainer in self.trainers for metric in trainer.metrics]

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        self.task_steps = None  # traced anew after a recompile

        def train_function(iterator):
            if self.task_steps is None:
                self.task_steps = self.traced_steps(iterator)
            x, y, task = next(iterator)
            self.last_task = int(task)
            self.task_steps[self.last_task]((x, y))
            self._train_counter.assign_add(1)
            return self.logs()

        self.train_function = train_function
        return train_function

    def traced_steps(self, iterator):
        """One traced step per task (its own heads and label shape). The signature is the data's
        (``x``, ``y``) spec, whose lengths and batch sizes are free, as in Keras's own train function,
        which reads the batch inside the graph: traced on the first batch's shapes, a step would be
        traced again for each new length (micro-batches), seconds each on a BERT step."""
        spec = getattr(iterator, "element_spec", None)
        options = ({"reduce_retracing": True} if spec is None  # not a tf.data iterator
                   else {"input_signature": [tuple(spec[:2])]})
        return [tf.function(trainer.train_step, jit_compile=bool(self._jit_compile), **options)
                for trainer in self.trainers]

    def logs(self):
        """Every task's running metrics as ``<task>_<metric>`` and its loss weight as
        ``<task>_weight``; the main task's metrics also without prefix."""
        logs = {}
        for i, trainer in enumerate(self.trainers):
            results = {metric.name: metric.result() for metric in trainer.metrics}
            if i == 0:
                logs.update(results)
            logs.update(("%s_%s" % (trainer.task, name), value) for name, value in results.items())
            logs["%s_weight" % trainer.task] = tf.constant(trainer.loss_weight())
        return logs
