"""Further pretraining (``recipe: pretrain``, ``xtune pretrain``): masked-language-model training of
the encoder on in-task or in-domain text before fine-tuning (Sun et al. 2019, "How to Fine-Tune
BERT for Text Classification?", section 5.1 ITPT; Gururangan et al. 2020, "Don't Stop
Pretraining": TAPT, DAPT).

Phases: ``setup_data`` (the corpus tokenized into packed blocks, cached; a held-out slice),
``setup_model`` (encoder + MLM head, optimizer; a resumed run restores both), ``setup_callbacks``,
``fit`` (chunks of about ``train.eval_every`` steps, each ending with the held-out MLM loss,
accuracy and perplexity), ``save`` (a Google-format checkpoint folder, MLM head included, that
``encoder.dir`` and bert4keras's ``build_transformer_model(..., with_mlm=True)`` read as it is).
"""
import math
import os
import shutil

import numpy as np
from bert4keras.backend import keras

from xtune_keras.convert.checkpoints import CHECKPOINT_NAME, CONFIG_NAME, save_transformer_checkpoint
from xtune_keras.data.corpus import tokenized_corpus
from xtune_keras.data.masking import max_predictions
from xtune_keras.data.mlm_batches import MLMStream
from xtune_keras.data.token_cache import tokenizer_id
from xtune_keras.errors import XtuneError
from xtune_keras.model.encoders import build_tokenizer, read_config, resolve_encoder_paths
from xtune_keras.model.mlm import (MaskedLMAccuracy, MaskedLMLoss, build_mlm_model, build_mlm_transformer,
                                   load_available, perplexity, warn_fresh_head)
from xtune_keras.recipes import RECIPES
from xtune_keras.recipes.base import Recipe
from xtune_keras.recipes.finetune import make_optimizer, set_seed
from xtune_keras.schema import config_hash
from xtune_keras.train import callbacks as cb
from xtune_keras.train import resume
from xtune_keras.train.optimizers import EMAWeights


def output_dir(config):
    return config["output"]["dir"] or os.path.join("checkpoints", config["name"])


def held_out_split(count, ratio):
    """``(train, valid)`` block indices: a seeded ``ratio`` of the blocks held out (at least one
    when there are two or more blocks and ``ratio`` > 0)."""
    order = np.random.default_rng(0).permutation(count)
    held = min(count - 1, max(1, int(round(count * ratio)))) if ratio > 0 and count > 1 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def chunking(total_steps, eval_every):
    """``(chunks, chunk_size)``: about ``eval_every`` steps per chunk, at least ``total_steps`` in all."""
    chunks = max(1, int(math.ceil(total_steps / eval_every)))
    return chunks, int(math.ceil(total_steps / chunks))


def saving_interval(save_every, chunk_steps):
    """Chunks between resume checkpoints: ``save_every`` steps rounded up to whole chunks."""
    return 1 if not save_every else max(1, int(math.ceil(save_every / chunk_steps)))


class HeldOutMLM(keras.callbacks.Callback):
    """After each chunk: the optimizer step and the held-out ``val_loss``, ``val_mlm_acc``,
    ``val_perplexity`` into the logs (so the logger, TensorBoard and the resume state see them)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_end(self, epoch, logs=None):
        logs["step"] = float(self.model.optimizer.iterations.numpy())  # a float like every logged value
        if self.batches is None:
            return
        loss, accuracy = self.model.evaluate(self.batches, verbose=0)
        logs.update(val_loss=loss, val_mlm_acc=accuracy, val_perplexity=perplexity(loss))


@RECIPES.register("pretrain")
class PretrainRecipe(Recipe):
    PHASES = ("setup_data", "setup_model", "setup_callbacks", "fit", "save")

    def setup_data(self):
        config = self.config
        corpus, masking, train = config["corpus"], config["masking"], config["train"]
        set_seed(config["seed"], train["deterministic"])
        enc = config["encoder"]
        self.paths = resolve_encoder_paths(enc["dir"], enc["config"], enc["checkpoint"], enc["vocab"])
        tokenizer = build_tokenizer(self.paths["vocab"], corpus["lowercase"])
        vocab_size = read_config(self.paths["config"])["vocab_size"]
        # more embedding rows than tokens is fine (e5 pads its 250002 pieces to 250037 rows); fewer
        # would let the tokenizer emit ids the embedding does not have
        if tokenizer._vocab_size > vocab_size:
            raise XtuneError("%s: %d tokens, but %s has vocab_size %d: the vocabulary does not match the "
                             "checkpoint" % (self.paths["vocab"], tokenizer._vocab_size, self.paths["config"],
                                             vocab_size))
        cache_dir = corpus["cache_dir"] or os.path.join(config["output"]["runs_dir"], "_cache", "corpus")
        blocks, words = tokenized_corpus(corpus, masking, tokenizer, tokenizer_id(self.paths["vocab"],
                                                                                  corpus["lowercase"]), cache_dir)
        train_idx, valid_idx = held_out_split(len(blocks), corpus["valid_ratio"])
        self.slots = max_predictions(masking["max_len"], masking["rate"])
        options = dict(rate=masking["rate"], mask_ratio=masking["mask_ratio"], random_ratio=masking["random_ratio"],
                       mask_id=tokenizer._token_mask_id, vocab_size=tokenizer._vocab_size,
                       special_ids=special_ids(tokenizer), slots=self.slots)
        per_pass = int(math.ceil(len(train_idx) / train["batch_size"]))
        self.chunks, chunk_size = chunking(train["max_steps"] or train["epochs"] * per_pass, train["eval_every"])
        self.stream = MLMStream(blocks, words, train_idx, train["batch_size"], config["seed"], options, chunk_size)
        self.held_out = (MLMStream(blocks, words, valid_idx, train["batch_size"], config["seed"], options)
                         if len(valid_idx) else None)
        self.counts = {"blocks": len(blocks), "train_blocks": len(train_idx), "valid_blocks": len(valid_idx),
                       "steps": self.chunks * chunk_size, "chunk_steps": chunk_size}
        self.open_run_dir()
        self.stream.chunk = self.initial_epoch
        if self.resumed:
            self.say("resuming %s after step %d of %d" % (self.run_dir.path, self.initial_epoch * chunk_size,
                                                           self.counts["steps"]))

    def setup_model(self):
        enc, train = self.config["encoder"], self.config["train"]
        self.transformer = build_mlm_transformer(self.paths["config"], enc["model"], enc["dropout"],
                                                 enc["attention_dropout"])
        self.fresh_head = load_available(self.transformer, self.paths["checkpoint"], enc["fresh_head"])
        warn_fresh_head(self.paths["checkpoint"], self.fresh_head)
        self.model = build_mlm_model(self.transformer, self.slots)
        num_layers = read_config(self.paths["config"])["num_hidden_layers"]
        schedule = dict(train, epochs=self.chunks)  # the LR schedule counts chunks of steps as epochs
        self.optimizer = make_optimizer(schedule, self.model, num_layers, len(self.stream))
        self.model.compile(optimizer=self.optimizer, loss=MaskedLMLoss(), metrics=[MaskedLMAccuracy()])
        if self.resumed:
            resume.restore_training(self.run_dir.resume_dir, self.resumed, self.model, self.optimizer)

    def setup_callbacks(self):
        self.callbacks = self.hook_callbacks() + [EMAWeights(), HeldOutMLM(self.held_out),
                                                  cb.MetricsLogger(self.run_dir.metrics_path, echo=self.echo)]
        if self.config["output"]["tensorboard"]:
            self.callbacks.append(cb.tensorboard(self.run_dir.tensorboard_dir))
        every = saving_interval(self.config["train"]["save_every"], self.counts["chunk_steps"])
        self.callbacks.append(resume.ResumeState(self.run_dir.resume_dir, self.optimizer, {}, self.resumed,
                                                 every=every, last=self.chunks))

    def fit(self):
        if self.initial_epoch < self.chunks:
            self.model.fit(self.stream, epochs=self.chunks, initial_epoch=self.initial_epoch, shuffle=False,
                           callbacks=self.callbacks, verbose=self.verbose)

    def save(self):
        """The checkpoint folder, written beside its final place and then moved there."""
        target = output_dir(self.config)
        staging = target.rstrip("/") + ".writing"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        shutil.copy(self.paths["config"], os.path.join(staging, CONFIG_NAME))
        shutil.copy(self.paths["vocab"], os.path.join(staging, os.path.basename(self.paths["vocab"])))
        save_transformer_checkpoint(self.transformer, os.path.join(staging, CHECKPOINT_NAME))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        rows = self.run_dir.epochs()
        self.result = {"name": self.config["name"], "seed": self.config["seed"],
                       "config_hash": config_hash(self.config), "run_dir": self.run_dir.path, "output_dir": target,
                       "fresh_head": self.fresh_head, **self.counts, "last": rows[-1] if rows else {}}


def special_ids(tokenizer):
    """Ids a random replacement must not draw: [PAD], [UNK], [CLS], [SEP], [MASK] (those that exist)."""
    names = ("_token_pad_id", "_token_unk_id", "_token_start_id", "_token_end_id", "_token_mask_id")
    return sorted({getattr(tokenizer, name) for name in names if getattr(tokenizer, name, None) is not None})
