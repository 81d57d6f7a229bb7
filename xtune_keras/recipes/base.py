"""A recipe is one kind of run as named phases over one run folder (torchtune's recipe classes).

``Recipe.run`` skips a finished run, then calls each phase in ``PHASES`` order, telling every hook
before and after it, and writes ``result.json`` last. Fine-tuning is ``FineTuneRecipe``;
further pretraining and multi-task fine-tuning are new subclasses in new files.

A hook is any object with some of ``before_<phase>(recipe)``, ``after_<phase>(recipe)`` and
``callbacks(recipe)`` (Keras callbacks run first in ``fit``). Hooks read and may replace what a
phase left on the recipe (``recipe.batches``, ``recipe.model``, ``recipe.logits``, ...): the
benchmarks time and observe training this way, without patching the package.
"""
import sys
import time

from xtune_keras.rundir import RunDir


def progress_verbosity(echo):
    """Keras's per-batch progress bar on a terminal; none in logs and CI (the recipe prints one
    line per epoch there); none at all with ``echo=False`` (``--quiet``)."""
    return 1 if echo and sys.stdout.isatty() else 0


class Recipe:
    PHASES = ()

    def __init__(self, config, echo=True, hooks=(), verbose=None):
        self.config, self.echo, self.hooks = config, echo, list(hooks)
        self.verbose = progress_verbosity(echo) if verbose is None else verbose
        self.run_dir = RunDir.of(config)
        self.result = {}

    def run(self, force=False):
        """Train (or resume) unless already finished; the result dict, also in result.json."""
        if not force and self.run_dir.finished():
            self.say("already finished: %s (use --force to train again)" % self.run_dir.path)
            return self.run_dir.result()
        self.force = force
        start = time.time()
        for phase in self.PHASES:
            self.notify("before_" + phase)
            getattr(self, phase)()
            self.notify("after_" + phase)
        self.result["seconds"] = round(time.time() - start, 2)
        self.run_dir.write_result(self.result)
        return self.result

    def open_run_dir(self, labels=None):
        """Ready the run folder. Sets ``resumed`` (the saved state of a killed attempt; None for a
        fresh run or with ``force``) and ``initial_epoch`` (the epochs that attempt finished);
        metrics logged after that state was saved are dropped, since they are trained again."""
        self.resumed = None if self.force else self.run_dir.resume_state()
        self.initial_epoch = self.resumed["epoch"] if self.resumed else 0
        self.run_dir.start(self.config, labels, resume=self.resumed is not None)
        if self.resumed:
            self.run_dir.keep_epochs(self.initial_epoch)

    def notify(self, event):
        for hook in self.hooks:
            method = getattr(hook, event, None)
            if method is not None:
                method(self)

    def hook_callbacks(self):
        return [callback for hook in self.hooks if hasattr(hook, "callbacks") for callback in hook.callbacks(self)]

    def say(self, text):
        if self.echo:
            print(text, flush=True)
