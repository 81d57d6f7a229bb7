"""The write-up's last step: "choose the best method in each part to build the final model".

``xtune combine ABLATION.yaml`` first finishes the ablation (finished runs are skipped), then, per
part (the ``part:`` of each variant; a variant without one is a part of its own), takes the
variant with the best mean validation accuracy, provided it beats row 0 (and, with ``alpha``,
does so with Welch p < alpha). The chosen variants' overrides are merged into one configuration,
which is trained with the same seeds and reported against row 0 next to the chosen rows.

Two chosen variants may set the same key (e.g. a learning-rate row and a warmup row that also
changes the learning rate): the better-scoring variant's value wins and the conflict is listed.
"""
import json
import os

from xtune_keras.schema import dump_config
from xtune_keras.experiments.sweep import execute_runs, load_ablation, planned_runs, report_ablation

COMBINED = "combined"


def choose_best_per_part(ablation, rows, alpha=None, metric="val_acc"):
    """``[(part, variant name, mean, p), ...]``: the winning variant of each part that beats row 0."""
    by_name = {row["variant"]: row for row in rows}
    baseline = by_name[ablation["variants"][0][0]][metric + "_mean"]
    winners = {}
    for name, _ in ablation["variants"][1:]:
        row = by_name.get(name)
        if row is None or row.get(metric + "_mean") is None or row[metric + "_mean"] <= baseline:
            continue
        if alpha is not None and (row["p"] is None or row["p"] >= alpha):
            continue
        part = ablation["parts"].get(name) or name
        if part not in winners or row[metric + "_mean"] > winners[part][2]:
            winners[part] = (part, name, row[metric + "_mean"], row["p"])
    return sorted(winners.values(), key=lambda w: -w[2])


def merge_overrides(ablation, choices):
    """The chosen variants' overrides, best first; returns (overrides, conflicts)."""
    overrides_of = dict(ablation["variants"])
    merged, owner, conflicts = {}, {}, []
    for _, name, _, _ in choices:  # best first, so an earlier owner of a key is the better row
        for item in overrides_of[name]:
            key, value = item.split("=", 1)
            if key in merged and merged[key] != value:
                conflicts.append({"key": key, "kept": owner[key], "kept_value": merged[key],
                                  "dropped": name, "dropped_value": value})
                continue
            merged[key], owner[key] = value, name
    return ["%s=%s" % kv for kv in merged.items()], conflicts


def run_combine(path, seeds=None, extra_overrides=(), alpha=None, echo=True, **backend):
    """Ablation (resumed), choice per part, the combined run with the same seeds, its table."""
    ablation = load_ablation(path, seeds)
    runs = planned_runs(ablation, extra_overrides)
    execute_runs(ablation["base"], runs, echo=echo, **backend)
    rows, _ = report_ablation(ablation, runs)
    choices = choose_best_per_part(ablation, rows, alpha)
    overrides, conflicts = merge_overrides(ablation, choices)

    stem = os.path.splitext(os.path.basename(path))[0] + "_combined"
    chosen_names = [name for _, name, _, _ in choices]
    variants = [ablation["variants"][0]] + [v for v in ablation["variants"] if v[0] in chosen_names]
    combined = dict(ablation, variants=variants + [(COMBINED, overrides)], stem=stem)
    combined_runs = planned_runs(combined, extra_overrides)
    execute_runs(ablation["base"], combined_runs, echo=echo, **backend)
    rows, tables = report_ablation(combined, combined_runs)
    tables.update(write_choices(os.path.dirname(tables["md"]), choices, overrides, conflicts,
                                combined_runs))
    return rows, tables, choices, conflicts


def write_choices(out_dir, choices, overrides, conflicts, runs):
    """``choices.json`` (what was picked and why) and ``combined.yaml``, an experiment file of the
    final configuration that ``xtune train`` runs as it is."""
    choices_path = os.path.join(out_dir, "choices.json")
    with open(choices_path, "w", encoding="utf-8") as f:
        json.dump({"choices": [{"part": p, "variant": n, "val_acc_mean": m, "p": pv} for p, n, m, pv in choices],
                   "overrides": overrides, "conflicts": conflicts}, f, indent=2, ensure_ascii=False)
    yaml_path = os.path.join(out_dir, "combined.yaml")
    config = next(c for name, seed, _, c in runs if name == COMBINED)
    dump_config(dict(config, seed=0), yaml_path)
    return {"choices": choices_path, "experiment": yaml_path}
