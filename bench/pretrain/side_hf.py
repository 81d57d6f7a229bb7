"""Pretraining peer, Hugging Face side: ``BertForMaskedLM`` + ``Trainer`` with whole-word masking
(transformers 5: ``DataCollatorForLanguageModeling(whole_word_mask=True)``, words from the fast
tokenizer's offsets), on the same corpus packed the same way (``[CLS] doc [SEP] doc ... [SEP]``
blocks of ``--max-len``), batch, steps, LR schedule (linear warmup 10%, linear decay) and AdamW
(weight decay 0.01). Run with bench/out/venv-hf/bin/python. Writes ``summary.json``."""
import argparse
import json
import os
import resource
import time


def blocks(tokenizer, texts, max_len):
    """Packed blocks with offsets (for the collator's word boundaries) and special-token masks."""
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    room, ids, offsets, out = max_len - 2, [], [], []
    for doc_ids, doc_offsets in zip(encoded["input_ids"], encoded["offset_mapping"]):
        ids += doc_ids + [tokenizer.sep_token_id]
        offsets += [tuple(o) for o in doc_offsets] + [(0, 0)]
        while len(ids) >= room:
            block, block_offsets = ids[:room], offsets[:room]
            ids, offsets = ids[room:], offsets[room:]
            out.append({"input_ids": [tokenizer.cls_token_id] + block + [tokenizer.sep_token_id],
                        "offset_mapping": [(0, 0)] + block_offsets + [(0, 0)],
                        "special_tokens_mask": [1] + [int(i == tokenizer.sep_token_id) for i in block] + [1]})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, kind, default in (("--encoder", str, None), ("--corpus", str, None), ("--out", str, None),
                                ("--max-len", int, 128), ("--batch-size", int, 32), ("--steps", int, 60),
                                ("--lr", float, 1e-4), ("--seed", int, 0), ("--threads", int, os.cpu_count())):
        p.add_argument(name, type=kind, default=default)
    args = p.parse_args()
    import torch
    from transformers import (BertForMaskedLM, BertTokenizerFast, DataCollatorForLanguageModeling, Trainer,
                              TrainerCallback, TrainingArguments)

    torch.set_num_threads(args.threads)
    tokenizer = BertTokenizerFast.from_pretrained(args.encoder)
    with open(args.corpus, encoding="utf-8") as f:
        texts = [" ".join(line.split()) for line in f if line.strip()]
    dataset = blocks(tokenizer, texts, args.max_len)
    model = BertForMaskedLM.from_pretrained(args.encoder)  # the sentence-transformer has no MLM head
    stamps, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **kw):
            stamps.append(time.perf_counter())

        def on_log(self, args_, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    training = TrainingArguments(
        output_dir=os.path.join(args.out, "hf"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, weight_decay=0.01, warmup_steps=int(0.1 * args.steps), lr_scheduler_type="linear",
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=args.seed, data_seed=args.seed,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
    collator = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, mlm_probability=0.15, seed=args.seed)
    trainer = Trainer(model=model, args=training, train_dataset=dataset, data_collator=collator,
                      callbacks=[Clock()])
    start = time.perf_counter()
    trainer.train()
    write_summary(args, "hf", start, stamps, losses, len(dataset))


def write_summary(args, system, start, stamps, losses, blocks_count):
    warm = 3
    steady = (stamps[-1] - stamps[warm - 1]) if len(stamps) > warm else float("nan")
    tokens = (len(stamps) - warm) * args.batch_size * args.max_len
    summary = {"system": system, "steps": len(stamps), "blocks": blocks_count, "seconds": stamps[-1] - start,
               "steady_tokens_per_s": tokens / steady, "loss_last10": sum(losses[-10:]) / len(losses[-10:]),
               "loss_first": losses[0], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary_%s.json" % system), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
