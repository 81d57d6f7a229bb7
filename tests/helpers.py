"""Small data and experiment files for tests (the tiny checkpoint comes from conftest)."""
import csv
import os
import random

import yaml

TOPICS = {
    "road": "road street broken light repair 路灯",
    "noise": "noise complaint please fix 噪音",
    "water": "water 漏水 停电 物业",
}


def write_multilabel_csvs(directory, n=60, seed=0, text1="addr", text2="ctx", label="labels"):
    """train/valid/test CSVs with 1-2 labels per row; returns their paths."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = rng.sample(sorted(TOPICS), rng.choice([1, 2]))
        text = " ".join(TOPICS[name] for name in labels) + " " + rng.choice(["the city", "小区", "地址"])
        rows.append({text1: "地址 %d 路" % i, text2: text, label: "|".join(labels)})
    cut1, cut2 = int(n * 0.6), int(n * 0.8)
    paths = {}
    for part, chunk in (("train", rows[:cut1]), ("valid", rows[cut1:cut2]), ("test", rows[cut2:])):
        paths[part] = os.path.join(directory, part + ".csv")
        write_csv(paths[part], chunk, [text1, text2, label])
    return paths


def write_csv(path, rows, fields):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def write_experiment(path, data_paths, encoder_dir, tmp_dir, name="tiny_exp", **sections):
    """A YAML experiment on tiny data; ``sections`` update the defaults below section by section."""
    experiment = {
        "name": name,
        "data": {"train": data_paths["train"], "valid": data_paths["valid"],
                 "test": data_paths.get("test"), "text1": ["addr"], "text2": ["ctx"],
                 "label": "labels", "max_len": 24},
        "encoder": {"dir": encoder_dir},
        "train": {"batch_size": 8, "epochs": 2, "lr": 1e-3, "patience": 2},
        "output": {"runs_dir": os.path.join(tmp_dir, "runs"),
                   "h5": os.path.join(tmp_dir, "checkpoints", name + ".h5")},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            experiment.setdefault(section, {}).update(values)
        else:
            experiment[section] = values
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(experiment, f, allow_unicode=True)
    return path


def saved_epoch(run_dir):
    """The epoch (or pretraining chunk) whose resume state a run has on disk; 0 before the first."""
    return (run_dir.resume_state() or {}).get("epoch", 0)
