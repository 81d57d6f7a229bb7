"""Every experiment key, declared once: default, type, allowed range or choices, how it enters the
run's hash, whether TensorBoard's HParams dashboard shows it, and its documentation.

Loading, validation, the config hash, the HParams session and ``docs/config.md`` are all computed
from this table; adding a key is one ``Key(...)`` line here (and whatever reads it).
"""


class Key:
    """One config key.

    kind: int | number | bool | str | path (a non-empty string) | columns (a column name or a list
    of them) | choice | any.
    valid: a range for int and number (``"> 0"``, ``">= 1"``, ``"(0, 1]"``), a tuple for choice.
    hashed: "always"; "if_changed" (added after runs were first written: hashed only away from
    its default, so older run folders keep their name); "never" (changes no result).
    """

    __slots__ = ("default", "kind", "doc", "valid", "hashed", "hparam")

    def __init__(self, default, kind, doc, valid=None, hashed="always", hparam=False):
        self.default, self.kind, self.doc = default, kind, doc
        self.valid, self.hashed, self.hparam = valid, hashed, hparam


TRUNCATIONS = ("head", "tail", "head+tail")
MONITORS = ("val_loss", "val_acc", "val_subset_acc", "val_micro_f1", "val_macro_f1")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")  # train/precision.py

SECTIONS = ("data", "encoder", "model", "train", "output")

KEYS = {
    "name": Key(None, "str", "experiment name: names the .h5 and the runs/ folder; default: the YAML file's stem"),
    "seed": Key(0, "int", "random seed of initialisation, dropout and data order (its own run folder)",
                hashed="never"),
    "recipe": Key("finetune", "str", "the kind of run: finetune (recipes/finetune.py); a new recipe is a "
                  "new module registered in recipes/", hashed="if_changed"),
    # data
    "data.train": Key(None, "path", "training table (required): csv, tsv, jsonl, json or xlsx"),
    "data.valid": Key(None, "path", "validation table; or null with data.valid_ratio"),
    "data.valid_ratio": Key(None, "number", "seeded share of data.train held out for validation", "(0, 1)"),
    "data.split_seed": Key(0, "int", "seed of the data.valid_ratio split"),
    "data.test": Key(None, "path", "test table, scored once with the restored best model"),
    "data.text1": Key(["text"], "columns", "columns joined (with a space) into the first segment"),
    "data.text2": Key([], "columns", "columns joined into the second segment (empty: one segment)"),
    "data.label": Key("label", "str", "label column"),
    "data.multi_label": Key(True, "bool", "several labels per row (sigmoid) or exactly one (softmax)"),
    "data.label_sep": Key("|", "str", "separates labels inside one cell, e.g. road|noise"),
    "data.clean_patterns": Key([], "columns", "regexes removed from every text (e.g. repeated templates)"),
    "data.max_len": Key(128, "int", "tokens per example, [CLS] and [SEP] included", ">= 8", hparam=True),
    "data.truncation": Key("head", "choice", "which tokens a long text keeps (Sun et al. 2019)", TRUNCATIONS,
                           hparam=True),
    "data.truncation2": Key(None, "choice", "rule for text2 if different from data.truncation",
                            TRUNCATIONS + (None,), hparam=True),
    "data.head_ratio": Key(0.25, "number", "head+tail: share of the budget kept from the head (128 of 510)",
                           "[0, 1]", hparam=True),
    "data.lowercase": Key(True, "bool", "lowercase before tokenizing (uncased and Chinese vocabularies)"),
    "data.cache": Key(True, "bool", "keep token ids on disk: variants and seeds tokenize the data once",
                      hashed="never"),
    "data.cache_dir": Key(None, "path", "token cache folder; null: <output.runs_dir>/_cache/tokens",
                          hashed="never"),
    # encoder
    "encoder.dir": Key(None, "path", "Google-format folder: bert_config.json, vocab.txt, bert_model.ckpt.*"),
    "encoder.config": Key(None, "path", "bert_config.json, if not in encoder.dir"),
    "encoder.checkpoint": Key(None, "path", "checkpoint prefix, if not in encoder.dir"),
    "encoder.vocab": Key(None, "path", "vocab.txt, if not in encoder.dir"),
    "encoder.pretrain": Key(None, "path", "a pretraining YAML (xtune pretrain): run first, or its finished "
                                          "output reused, and fine-tune from its checkpoint folder",
                            hashed="if_changed"),
    "encoder.model": Key("bert", "choice", "architecture (roberta-wwm loads as bert)", ("bert", "albert"),
                         hparam=True),
    "encoder.output_layer": Key(-1, "int", "transformer layer the heads read (0-based; -1: last)", hparam=True),
    "encoder.pool_layers": Key(1, "int", "combine the last k layers ending at output_layer (Sun et al.: 4)",
                               ">= 1", hparam=True),
    "encoder.pool_mode": Key("concat", "choice", "how pooled layers combine", ("concat", "mean", "max"),
                             hparam=True),
    "encoder.freeze": Key(False, "bool", "freeze the whole encoder (only the heads train)", hparam=True),
    "encoder.freeze_pattern": Key(None, "str", "regex on layer names to freeze, e.g. ^Embedding-|^Transformer-[0-5]-",
                                  hparam=True),
    "encoder.unfreeze_epoch": Key(None, "int", "frozen layers start training after this many epochs", ">= 1",
                                  hparam=True),
    "encoder.dropout": Key(None, "number", "hidden dropout; null: the checkpoint config's", "[0, 1)",
                           hparam=True),
    "encoder.attention_dropout": Key(None, "number", "attention dropout; null: the checkpoint config's",
                                     "[0, 1)", hparam=True),
    # model
    "model.heads": Key([{"type": "cls"}, {"type": "mlp", "units": [256], "dropout": 0.1}], "any",
                       "list of heads, concatenated in order; see docs/heads.md"),
    "model.loss": Key("bce", "any", "a loss name, or {type: focal, alpha: 0.25, gamma: 2.0}; see docs/losses.md"),
    "model.threshold": Key(0.5, "any", "multi-label decision: a number in (0, 1), or \"tuned\" (per label, "
                                       "on validation)"),
    # train
    "train.optimizer": Key("adam", "choice", "adam | adamw (google-research/bert: decay 0.01, clip 1.0)",
                           None, hparam=True),
    "train.lr": Key(5e-4, "number", "the heads' learning rate; the encoder's is lr * encoder_lr_ratio", "> 0",
                    hparam=True),
    "train.encoder_lr_ratio": Key(1.0, "number", "encoder LR / head LR (the write-up's 5e-5 vs 2e-4: 0.25)",
                                  ">= 0", hparam=True),
    "train.layer_decay": Key(None, "number", "layer-wise LR decay xi (Sun et al. 2019 best: 0.95)", "(0, 1]",
                             hparam=True),
    "train.lr_multipliers": Key(None, "any", "{variable-name substring: factor}; 0 freezes what it names"),
    "train.weight_decay": Key(None, "number", "decoupled weight decay; null: the optimizer's (adam 0, adamw 0.01)",
                              ">= 0", hparam=True),
    "train.clip_norm": Key(None, "number", "global-norm clipping; null: the optimizer's (adamw 1.0); 0: off",
                           ">= 0"),
    "train.warmup_steps": Key(0, "number", "linear warmup: steps, or a fraction of all steps if < 1 (BERT: 0.1)",
                              ">= 0", hparam=True),
    "train.lr_decay": Key(False, "bool", "linear decay to 0 at the last step (google-research/bert)", hparam=True),
    "train.grad_accum_steps": Key(1, "int", "update every k batches with their mean gradient", ">= 1",
                                  hparam=True),
    "train.ema_momentum": Key(None, "number", "exponential moving average of weights, e.g. 0.999", "[0, 1)",
                              hparam=True),
    "train.embedding_update": Key("dense", "choice", "dense: Adam moves every embedding row each step (BERT); "
                                  "lazy: only the rows of the batch's tokens (LazyAdam; faster with large "
                                  "vocabularies; no effect in pretraining, whose MLM output reuses the "
                                  "embedding and makes its gradient dense)", ("dense", "lazy"),
                                  hashed="if_changed", hparam=True),
    "train.adam_kernel": Key("ops", "choice", "ops: bert4keras's Adam update op by op; fused: TensorFlow's one-pass "
                             "ResourceApplyAdam, the same update up to float rounding (fewer passes over "
                             "the weights)", ("ops", "fused"), hashed="if_changed", hparam=True),
    "train.adversarial": Key(None, "any", "{method: fgm | pgd, epsilon, alpha, steps}; null: off"),
    "train.rdrop_alpha": Key(0.0, "number", "R-Drop (Liang et al. 2021) weight of the symmetric KL", ">= 0",
                             hparam=True),
    "train.batch_size": Key(64, "int", "examples per step (the global batch under a strategy)", ">= 1",
                            hparam=True),
    "train.group_by_length": Key(False, "bool", "batches of texts of similar length, in random order",
                                 hashed="if_changed"),
    "train.length_pool": Key(50, "int", "group_by_length: batches per pool sorted together (HF Trainer: 50)",
                             ">= 1", hashed="if_changed"),
    "train.micro_batches": Key(1, "int", "each batch run as k length-sorted parts, one update (less padding)",
                               ">= 1", hashed="if_changed"),
    "train.epochs": Key(5, "int", "maximum epochs", ">= 1", hparam=True),
    "train.monitor": Key("val_loss", "choice", "what EarlyStopping and the best .h5 follow", MONITORS,
                         hparam=True),
    "train.patience": Key(0, "int", "epochs without improvement before stopping", ">= 0"),
    "train.restore_best": Key(True, "bool", "end with the weights of the best epoch"),
    "train.save_optimizer": Key(False, "bool", "include the optimizer state in the .h5"),
    "train.deterministic": Key(True, "bool", "deterministic TensorFlow ops (same seed, same numbers)"),
    "train.precision": Key("float32", "choice", "float32, mixed_bfloat16 (bfloat16 compute, float32 variables "
                           "and logits), mixed_float16 (the same in float16, with dynamic loss scaling: for GPUs), "
                           "or auto: mixed_bfloat16 where the CPU has AMX", PRECISIONS,
                           hashed="if_changed", hparam=True),
    "train.jit_compile": Key(False, "bool", "compile the training step with XLA (for GPUs; on CPU it was slower)",
                             hashed="if_changed"),
    "train.strategy": Key(None, "choice", "null: one device; mirrored: one replica per device, batch_size global",
                          (None, "mirrored")),
    "train.devices": Key(None, "any", "mirrored: e.g. [\"/gpu:0\", \"/gpu:1\"]; null: every GPU (CPUs if none)"),
    # output
    "output.h5": Key(None, "path", "the trained model; null: checkpoints/<name>.h5", hashed="never"),
    "output.runs_dir": Key("runs", "path", "where run folders and tables land", hashed="never"),
    "output.tensorboard": Key(True, "bool", "write TensorBoard logs and the HParams session", hashed="never"),
}


# Further pretraining (``recipe: pretrain``, ``xtune pretrain``): its own sections; the keys it
# shares with fine-tuning are the same declarations.
SEGMENTERS = ("jieba", "whitespace", "none")


def _shared(*names):
    """Keys pretraining shares with fine-tuning: the very same declarations."""
    return {dotted: KEYS[dotted] for dotted in names}


PRETRAIN_KEYS = {
    **_shared("name", "seed"),
    "recipe": Key("pretrain", "str", "pretrain: masked-language-model training of the encoder (recipes/pretrain.py)"),
    "corpus.files": Key([], "columns", "text files (one document per line) or tables (csv, tsv, jsonl, json, "
                                       "xlsx, parquet) with corpus.columns"),
    "corpus.columns": Key(["text"], "columns", "the text columns of table files (joined with a space)"),
    "corpus.from_experiment": Key(None, "path", "a fine-tuning YAML: the texts (text1 + text2) of its splits"),
    "corpus.splits": Key(["train"], "columns", "corpus.from_experiment: which splits (TAPT: train; ITPT may "
                                               "add valid, test)"),
    "corpus.lowercase": KEYS["data.lowercase"],
    "corpus.valid_ratio": Key(0.01, "number", "share of the blocks held out for MLM loss, accuracy, perplexity",
                              "[0, 0.5]"),
    "corpus.cache_dir": Key(None, "path", "tokenized-corpus cache; null: <output.runs_dir>/_cache/corpus",
                            hashed="never"),
    "masking.rate": Key(0.15, "number", "share of tokens predicted (BERT: 0.15)", "(0, 1)"),
    "masking.mask_ratio": Key(0.8, "number", "of those: replaced by [MASK] (BERT: 0.8)", "[0, 1]"),
    "masking.random_ratio": Key(0.1, "number", "of those: replaced by a random token (BERT: 0.1); the rest kept",
                                "[0, 1]"),
    "masking.segmenter": Key("jieba", "choice", "whole words: jieba (Chinese; hfl's wwm), whitespace (words and "
                                                "their ## pieces), none (token level)", SEGMENTERS),
    "masking.max_len": Key(128, "int", "tokens per packed block, [CLS] and [SEP] included", ">= 8"),
    **_shared("encoder.dir", "encoder.config", "encoder.checkpoint", "encoder.vocab", "encoder.model",
              "encoder.dropout", "encoder.attention_dropout"),
    "encoder.fresh_head": Key(False, "bool", "start the MLM head fresh even if the checkpoint has one (hfl's "
                                             "RoBERTa-wwm-ext ships an untrained head)"),
    **_shared("train.optimizer", "train.encoder_lr_ratio", "train.layer_decay", "train.lr_multipliers",
              "train.weight_decay", "train.clip_norm", "train.warmup_steps", "train.lr_decay",
              "train.grad_accum_steps", "train.ema_momentum", "train.embedding_update", "train.adam_kernel",
              "train.deterministic"),
    "train.lr": Key(5e-5, "number", "learning rate (Sun et al. ITPT: 5e-5)", "> 0"),
    "train.batch_size": Key(32, "int", "blocks per step", ">= 1"),
    "train.epochs": Key(1, "int", "passes over the corpus (fresh masks every epoch)", ">= 1"),
    "train.max_steps": Key(None, "int", "stop after this many optimizer steps (null: all epochs)", ">= 1"),
    "train.eval_every": Key(100, "int", "steps between held-out evaluations (and metrics.jsonl lines)", ">= 1"),
    "train.save_every": Key(None, "int", "steps between resume checkpoints, rounded up to whole evaluation "
                                         "intervals (null: at every evaluation); the last step is always saved",
                            ">= 1", hashed="never"),
    "output.dir": Key(None, "path", "the Google-format checkpoint folder; null: checkpoints/<name>",
                      hashed="never"),
    **_shared("output.runs_dir", "output.tensorboard"),
}

# Multi-task fine-tuning (``recipe: multitask``, or any file with ``tasks:``): one shared encoder
# and its training options (fine-tuning's encoder.*, train.*, output.* declarations), a list of
# tasks each with fine-tuning's data.* and model.* (TASK_KEYS), and how batches are drawn.
SAMPLINGS = ("proportional", "temperature", "round_robin", "main_ratio")

MULTITASK_KEYS = {
    **_shared("name", "seed"),
    "recipe": Key("multitask", "str", "multitask: one encoder, a main task and auxiliary tasks "
                                      "(recipes/multitask.py)"),
    "tasks": Key([], "any", "the tasks: a list of mappings {name, main, weight, data, model} (see the task "
                            "keys below; data.* and model.* as in fine-tuning)"),
    "multitask.sampling": Key("proportional", "choice", "which task each batch comes from: proportional (every "
                              "task's batches once per epoch), temperature (size^(1/T), T5), round_robin, "
                              "main_ratio (auxiliary batches capped at r x the main task's, MT-DNN)", SAMPLINGS),
    "multitask.temperature": Key(2.0, "number", "temperature sampling: T (1: proportional; large: uniform)",
                                 "> 0"),
    "multitask.main_ratio": Key(1.0, "number", "main_ratio sampling: auxiliary batches per main batch, at most",
                                "> 0"),
    "multitask.loss_weighting": Key("fixed", "choice", "fixed (each task's weight) or uncertainty (Kendall et "
                                    "al. 2018: exp(-s_i) L_i + s_i, s_i learned from -log(weight))",
                                    ("fixed", "uncertainty")),
    "multitask.only": Key(None, "columns", "train only these tasks (names; the main task among them), e.g. the "
                                           "main task alone as an ablation's row 0; null: all"),
    **{dotted: key for dotted, key in KEYS.items() if dotted.startswith(("encoder.", "train.", "output."))},
}

# One entry of ``tasks:``; its data.* and model.* are fine-tuning's declarations.
TASK_KEYS = {
    "name": Key(None, "str", "the task's name (required, unique): prefixes its metrics and names its .h5"),
    "main": Key(False, "bool", "the main task (exactly one; implied when there is one task): its validation "
                               "monitor drives early stopping, its .h5 keeps the experiment's name"),
    "weight": Key(1.0, "number", "the task's loss weight (uncertainty weighting: the initial one)", "> 0"),
    **{dotted: key for dotted, key in KEYS.items() if dotted.startswith(("data.", "model."))},
}

SCHEMAS = {"finetune": KEYS, "pretrain": PRETRAIN_KEYS, "multitask": MULTITASK_KEYS}


def sections_of(keys):
    """The section names of a key table, in declaration order."""
    return tuple(dict.fromkeys(dotted.split(".")[0] for dotted in keys if "." in dotted))


# train.adversarial, when given, is a mapping of these (validated like the keys above).
ADVERSARIAL = {
    "method": Key("fgm", "choice", "fgm (Miyato et al. 2017) | pgd (Madry et al. 2018)", ("fgm", "pgd")),
    "epsilon": Key(1.0, "number", "radius of the perturbation of the embeddings", "> 0"),
    "alpha": Key(0.3, "number", "pgd: step size", "> 0"),
    "steps": Key(3, "int", "pgd: ascent steps", ">= 1"),
}


def _cell(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else repr(value).replace("'", "")
    return text.replace("|", "\\|")


def config_markdown():
    """``docs/config.md``: every key of every recipe with its default, type, range and meaning."""
    lines = ["# Experiment keys", "",
             "Generated from `xtune_keras/keys.py` by `python -m xtune_keras.keys > docs/config.md`;",
             "a test checks that this page and the declarations agree. *Hash*: whether the key is part",
             "of the run folder's config hash (`if changed`: only away from its default, so run folders",
             "written before the key existed keep their names).", ""]
    for recipe, keys in SCHEMAS.items():
        lines += ["# Recipe `%s`" % recipe, ""]
        groups = [("Top level", [d for d in keys if "." not in d])]
        groups += [("`%s`" % section, [d for d in keys if d.startswith(section + ".")])
                   for section in sections_of(keys)]
        if recipe == "finetune":
            groups.append(("`train.adversarial` (when given)", ["train.adversarial." + name for name in ADVERSARIAL]))
        if recipe == "multitask":
            groups.append(("Each entry of `tasks`", ["tasks[]." + dotted for dotted in TASK_KEYS]))
        for title, names in groups:
            lines += ["## " + title, "", "| key | default | type | allowed | hash | meaning |",
                      "|---|---|---|---|---|---|"]
            for dotted in names:
                key = (ADVERSARIAL[dotted.rsplit(".", 1)[1]] if dotted.startswith("train.adversarial.")
                       else TASK_KEYS[dotted[len("tasks[]."):]] if dotted.startswith("tasks[].") else keys[dotted])
                allowed = " \\| ".join(_cell(v) for v in key.valid) if isinstance(key.valid, tuple) else key.valid or ""
                lines.append("| `%s` | %s | %s | %s | %s | %s |" % (
                    dotted, _cell(key.default), key.kind, allowed,
                    key.hashed.replace("_", " "), key.doc.replace("|", "\\|")))
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(config_markdown(), end="")
