"""Ablation sweeps: a base experiment, variants that change one thing each, times seeds.

An ablation file (see ``experiments/ablation.yaml``)::

    base: baseline.yaml            # relative to this file
    epochs: 5                      # the write-up's TEST STANDARD
    seeds: [0, 1, 2]               # or: xtune ablate FILE --seeds N
    variants:                      # the first is row 0, the one every row is compared with
      - {name: row0_baseline}
      - {name: row6_lr_5e-5, overrides: {train.lr: 5.0e-5}}

Every run trains in its own process (memory is returned between runs) and writes its own run
folder; a run whose ``result.json`` exists is skipped, so an interrupted sweep resumes where it
stopped, and the table is computed from the files on disk.
"""
import json
import os
import subprocess
import sys

import yaml

from xtune_keras.schema import load_config
from xtune_keras.errors import XtuneError
from xtune_keras.experiments.report import group_by_variant, summarize, write_tables
from xtune_keras.registry import Registry
from xtune_keras.rundir import RunDir

ABLATION_KEYS = ("base", "epochs", "seeds", "variants")
VARIANT_KEYS = ("name", "part", "overrides")


def read_sweep_file(path, kind, keys):
    """The mapping in a sweep file (ablation, generalization), its keys checked against ``keys``."""
    if not os.path.isfile(path):
        raise XtuneError("%s: %s file not found" % (path, kind))
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise XtuneError("%s: a %s file is a mapping of %s" % (path, kind, ", ".join(keys)))
    unknown = [k for k in raw if k not in keys]
    if unknown:
        raise XtuneError("%s: unknown key '%s'; valid keys: %s" % (path, unknown[0], ", ".join(keys)))
    return raw


def load_ablation(path, seeds=None):
    """The validated ablation: base path, epochs, seed list, ``[(name, ["k=v", ...]), ...]``."""
    raw = read_sweep_file(path, "ablation", ABLATION_KEYS)
    if not raw.get("base") or not raw.get("variants"):
        raise XtuneError("%s: an ablation needs 'base' (an experiment YAML) and 'variants'" % path)
    base = os.path.join(os.path.dirname(os.path.abspath(path)), raw["base"])
    if seeds is not None:
        seed_list = list(range(seeds))
    else:
        seed_list = list(raw.get("seeds") or [0])
    return {"path": path, "base": base, "epochs": raw.get("epochs"), "seeds": seed_list,
            "variants": [_variant(path, i, v) for i, v in enumerate(raw["variants"])],
            # which part of the model a row changes (encoder, head, loss, ...): xtune combine
            # picks the best row of each part
            "parts": {v["name"]: v.get("part") for v in raw["variants"] if isinstance(v, dict)}}


def _variant(path, index, spec):
    where = "%s: variants[%d]" % (path, index)
    if not isinstance(spec, dict) or not spec.get("name"):
        raise XtuneError("%s: a variant is a mapping with a 'name' (and optional 'part', 'overrides')" % where)
    for key in spec:
        if key not in VARIANT_KEYS:
            raise XtuneError("%s: unknown key '%s'; valid keys: %s" % (where, key, ", ".join(VARIANT_KEYS)))
    overrides = spec.get("overrides") or {}
    # JSON is valid YAML flow syntax, so each value survives the key=value round trip exactly.
    return spec["name"], ["%s=%s" % (k, json.dumps(v, ensure_ascii=False)) for k, v in overrides.items()]


def planned_runs(ablation, extra_overrides=()):
    """``[(variant, seed, overrides, config), ...]``; the base and every row are loaded and
    validated (types, ranges, rules) before anything runs, so a bad value in the last row fails
    now, naming that row, not after the other rows have trained."""
    names = [name for name, _ in ablation["variants"]]
    if len(set(names)) != len(names):
        raise XtuneError("%s: variant names must be unique" % ablation["path"])
    load_config(ablation["base"], extra_overrides)
    runs = []
    for index, (name, overrides) in enumerate(ablation["variants"]):
        where = "%s: variants[%d] %r" % (ablation["path"], index, name)
        for seed in ablation["seeds"]:
            full = list(overrides) + list(extra_overrides) + ["name=%s" % json.dumps(name), "seed=%d" % seed]
            if ablation["epochs"]:
                full.append("train.epochs=%d" % ablation["epochs"])
            runs.append((name, seed, full, load_config(ablation["base"], full, where=where)))
    return runs


def run_sweep(path, seeds=None, extra_overrides=(), echo=True, backend="local", address=None, cpus=1,
              gpus=0):
    """Train every (variant, seed) not yet finished, one process each; return the table rows."""
    ablation = load_ablation(path, seeds)
    runs = planned_runs(ablation, extra_overrides)
    execute_runs(ablation["base"], runs, backend=backend, address=address, echo=echo, cpus=cpus, gpus=gpus)
    return report_ablation(ablation, runs)


BACKENDS = Registry("backend")


def execute_runs(base, runs, backend="local", address=None, echo=True, cpus=1, gpus=0):
    """Train the runs of ``planned_runs`` whose ``result.json`` is missing, on ``backend``."""
    execute = BACKENDS.get(backend, "--backend")
    todo = [(i, run) for i, run in enumerate(runs, 1) if not RunDir.of(run[3]).finished()]
    execute(base, runs, todo, address=address, echo=echo, cpus=cpus, gpus=gpus)


@BACKENDS.register("local")
def run_locally(base, runs, todo, address=None, echo=True, cpus=1, gpus=0):
    """One run after another, each in its own process (memory is returned between runs)."""
    for i, (name, seed, overrides, _) in todo:
        if echo:
            print("[%d/%d] %s seed %d" % (i, len(runs), name, seed), flush=True)
        train_in_subprocess(base, overrides, name, seed)


@BACKENDS.register("ray")
def run_on_ray(base, runs, todo, address=None, echo=True, cpus=1, gpus=0):
    """Each run a Ray task asking for ``cpus`` CPUs and ``gpus`` GPUs (``address``: an existing
    cluster); Ray is imported only when asked for."""
    from xtune_keras.experiments import backends

    backends.run_on_ray(base, runs, todo, address=address, echo=echo, cpus=cpus, gpus=gpus)


def train_in_subprocess(base, overrides, name, seed):
    command = [sys.executable, "-m", "xtune_keras.cli", "train", base] + list(overrides)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise XtuneError("variant %s seed %d failed (exit %d): %s" % (name, seed, done.returncode, last))


def finished_results(runs):
    """The ``result.json`` of each run of ``planned_runs`` that finished."""
    return [r for r in (RunDir.of(config).result() for *_, config in runs) if r is not None]


def report_ablation(ablation, runs):
    """Rows of this ablation's runs only (by config hash), row 0 first; tables next to the runs."""
    results = finished_results(runs)
    order = [name for name, _ in ablation["variants"]]
    groups = group_by_variant(results, order)
    rows = summarize(groups, baseline=order[0])
    runs_dir = runs[0][3]["output"]["runs_dir"]  # overrides of output.* apply to every row
    stem = ablation.get("stem") or os.path.splitext(os.path.basename(ablation["path"]))[0]
    return rows, write_tables(rows, os.path.join(runs_dir, "_tables", stem), groups)
