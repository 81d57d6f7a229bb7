"""Multi-task batches: every batch from one task, the task of each step set by a sampling rule.

An epoch is defined by the main task: it holds each of the main task's batches once, and each
other task's share by ``multitask.sampling`` (``task_steps``). A task whose share runs past its
batches starts a new pass of its own (reshuffled by its ``PaddedBatches``); one whose share is
smaller carries on where it stopped in the next epoch. The plan lists the tasks' batches grouped
by task; Keras's ``fit(shuffle=True)`` mixes them (``shuffle`` below is False only for round
robin, whose order is the point), exactly as it orders one task's batches, so a one-task plan
trains like the plain experiment. Replaying ``on_epoch_end`` restores a resumed run's plans.
"""
import numpy as np

from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
from bert4keras.backend import keras  # noqa: E402  (isort: after compat)

from xtune_keras.registry import Registry  # noqa: E402

# fn(sizes, main, options) -> batches per epoch of each task; sizes: each task's batches per pass.
SAMPLINGS = Registry("multitask.sampling")


@SAMPLINGS.register("proportional")
def proportional_steps(sizes, main, options):
    """Each task's batches once per epoch: steps in proportion to the task's size."""
    return list(sizes)


@SAMPLINGS.register("temperature")
def temperature_steps(sizes, main, options):
    """Task i drawn with probability proportional to size_i^(1/T) (T5, Raffel et al. 2020; multilingual
    BERT's language sampling): T=1 is proportional, a large T uniform. Scaled so that the main
    task gets exactly its own batches."""
    shares = np.asarray(sizes, np.float64) ** (1.0 / options["temperature"])
    steps = np.rint(sizes[main] * shares / shares[main]).astype(int)
    steps[main] = sizes[main]
    return [max(1, int(s)) for s in steps]


@SAMPLINGS.register("round_robin")
def round_robin_steps(sizes, main, options):
    """One batch of every task in turn, as many rounds as the main task has batches."""
    return [sizes[main]] * len(sizes)


@SAMPLINGS.register("main_ratio")
def main_ratio_steps(sizes, main, options):
    """MT-DNN's ``--ratio`` (Liu et al. 2019): the auxiliary tasks together get at most
    ``main_ratio`` x the main task's batches, shared in proportion to their sizes."""
    others = [i for i in range(len(sizes)) if i != main]
    budget = min(sum(sizes[i] for i in others), int(options["main_ratio"] * sizes[main]))
    total = sum(sizes[i] for i in others) or 1
    exact = [budget * sizes[i] / total for i in others]
    steps = [int(e) for e in exact]
    for k in np.argsort([s - e for s, e in zip(steps, exact)])[:budget - sum(steps)]:  # largest remainders
        steps[k] += 1
    counts = list(sizes)
    for i, s in zip(others, steps):
        counts[i] = s
    return counts


class TaskBatches(keras.utils.Sequence):
    """``(x, y, task index)`` batches of several tasks' ``PaddedBatches`` (training ones)."""

    def __init__(self, tasks, main, sampling, options):
        super().__init__()
        self.tasks, self.main = list(tasks), main
        self.steps = SAMPLINGS.get(sampling, "multitask.sampling")([len(t) for t in self.tasks], main, options)
        self.interleave = sampling == "round_robin"
        self.shuffle = not self.interleave  # for fit(shuffle=...)
        self._next = [0] * len(self.tasks)  # where each task's pass stands
        self._plan()

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, index):
        task, picked = self.plan[index]
        x, y = self.tasks[task].batch_of(picked)
        return x, y, np.int32(task)

    def on_epoch_end(self):
        self._plan()

    def task_counts(self):
        """Batches of each task in this epoch's plan."""
        return np.bincount([task for task, _ in self.plan], minlength=len(self.tasks)).tolist()

    def _plan(self):
        drawn = [self._take(task, count) for task, count in enumerate(self.steps)]
        if self.interleave:
            rounds = max(self.steps)
            self.plan = [(task, drawn[task][r]) for r in range(rounds) for task in range(len(drawn))
                         if r < len(drawn[task])]
            return
        self.plan = [(task, picked) for task, batches in enumerate(drawn) for picked in batches]

    def _take(self, task, count):
        """The next ``count`` batches of ``task``, a new (reshuffled) pass begun when one ends."""
        batches, taken = self.tasks[task], []
        while len(taken) < count:
            if self._next[task] == len(batches):
                batches.on_epoch_end()
                self._next[task] = 0
            taken.append(batches.batches[self._next[task]])
            self._next[task] += 1
        return taken
