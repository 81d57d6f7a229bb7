"""Does a multi-task epoch cost more than the single-task steps it contains? (issue 14)

In one process: each task trained alone (the fine-tuning recipe on the task's own config,
``schema.task_config``), then both together (the multi-task recipe), one epoch each, every training
step timed by a hook's Keras callback (the multi-task model says which task a step was,
``recipe.model.last_task``). The first step of each task in each run is left out (tracing).
Ratio = multi-task step time summed / sum over tasks of (its steps x its single-task mean step).
Run from the repository root: .venv/bin/python bench/multitask/speed.py CONFIG.yaml [key=value ...]
"""
import json
import os
import platform
import subprocess
import sys
import time


def cpu_line():
    flags = open("/proc/cpuinfo").read()
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "?")
    return "%s; %d cores; amx: %s; avx512f: %s" % (model, os.cpu_count(), "amx_tile" in flags, "avx512f" in flags)


def timed_hook(keras, record):
    class StepTimer(keras.callbacks.Callback):
        def __init__(self, recipe):
            super().__init__()
            self.recipe = recipe

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            task = getattr(self.recipe.model, "last_task", None)
            record.append((0 if task is None else task, time.perf_counter() - self.start))

    class Hook:
        def callbacks(self, recipe):
            return [StepTimer(recipe)]

    return Hook()


def steady(steps):
    """Step times of each task without its first (traced) step: {task: [seconds, ...]}."""
    by_task = {}
    for task, seconds in steps:
        by_task.setdefault(task, []).append(seconds)
    return {task: times[1:] for task, times in by_task.items()}


def main(path, overrides=()):
    from xtune_keras import compat  # noqa: F401
    from bert4keras.backend import keras

    from xtune_keras.recipes import run_recipe
    from xtune_keras.schema import active_tasks, load_config, task_config

    print(cpu_line(), "| python", platform.python_version(), flush=True)
    config = load_config(path, list(overrides) + ["train.epochs=1", "output.tensorboard=false"])
    tasks = active_tasks(config)
    single = {}
    for i, task in enumerate(tasks):
        record = []
        alone = task_config(config, task)
        alone["name"] = "speed_alone_" + task["name"]
        run_recipe(alone, force=True, echo=False, hooks=[timed_hook(keras, record)])
        single[i] = steady(record)[0]
    record = []
    run_recipe(dict(config, name="speed_multitask"), force=True, echo=False, hooks=[timed_hook(keras, record)])
    multi = steady(record)
    batch = config["train"]["batch_size"]
    rows, expected, spent = [], 0.0, 0.0
    for i, task in enumerate(tasks):
        alone_mean = sum(single[i]) / len(single[i])
        multi_mean = sum(multi[i]) / len(multi[i])
        expected += len(multi[i]) * alone_mean
        spent += sum(multi[i])
        rows.append({"task": task["name"], "steps_alone": len(single[i]) + 1, "steps_in_multitask": len(multi[i]) + 1,
                     "examples_per_s_alone": batch / alone_mean, "examples_per_s_in_multitask": batch / multi_mean})
    summary = {"cpu": cpu_line(), "command": " ".join(sys.argv), "tasks": rows,
               "multitask_steps_seconds": spent, "same_steps_alone_seconds": expected, "ratio": spent / expected,
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()}
    os.makedirs("bench/out/multitask", exist_ok=True)
    with open("bench/out/multitask/speed.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
