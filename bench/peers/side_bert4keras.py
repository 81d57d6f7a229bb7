"""Peer benchmark, plain bert4keras side: a fine-tuning loop in the style of bert4keras's own
examples (examples/task_sentiment_albert.py): Tokenizer, a DataGenerator subclass padding each
batch with sequence_padding, build_transformer_model, Lambda on [CLS], Dense layers, compile,
``model.fit(generator.forfit(), steps_per_epoch=len(generator))``. No xtune code runs here.

bert4keras 0.11.5 on TensorFlow 2.21 needs two things before it works at all, done inline:
TF_KERAS=1 / TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (tf.keras 2, not Keras 3), and
``bert4keras.optimizers`` imported while ``keras.optimizers.Optimizer`` is the legacy
(OptimizerV2) base class, which its Adam needs (``_set_hyper``). That is the same repair as
xtune_keras/compat.py's ``_legacy_optimizer_base``, written out here so that this process loads
no xtune module. The Adam is then bert4keras's own (epsilon 1e-6, bias correction, no decay).
"""
import json
import os
import sys

os.environ["TF_KERAS"] = "1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def import_bert4keras():
    """bert4keras with its Adam built on the legacy optimizer base (see the module docstring)."""
    from bert4keras.backend import keras

    modern = keras.optimizers.Optimizer
    keras.optimizers.Optimizer = keras.optimizers.legacy.Optimizer
    try:
        from bert4keras.optimizers import Adam
    finally:
        keras.optimizers.Optimizer = modern
    return Adam


def main(argv=None):
    args = common.side_arguments(__doc__.split("\n")[0]).parse_args(argv)
    encoder = args.encoder or os.path.join("checkpoints", "all-MiniLM-L6-v2")
    os.makedirs(args.out, exist_ok=True)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    Adam = import_bert4keras()
    from bert4keras.backend import keras
    from bert4keras.models import build_transformer_model
    from bert4keras.snippets import DataGenerator, sequence_padding
    from bert4keras.tokenizers import Tokenizer

    keras.utils.set_random_seed(args.seed)
    config_path = os.path.join(encoder, "bert_config.json")
    checkpoint_path = os.path.join(encoder, "bert_model.ckpt")
    dict_path = os.path.join(encoder, "vocab.txt")

    splits, names = common.read_data(args.data)
    label_id = {name: i for i, name in enumerate(names)}
    tokenizer = Tokenizer(dict_path, do_lower_case=True)

    def load(split):
        texts, labels = splits[split]
        # encode(maxlen): [CLS] + the first maxlen - 2 word pieces + [SEP] (head truncation)
        return [tokenizer.encode(text, maxlen=args.max_len) + (label_id[label],)
                for text, label in zip(texts, labels)]

    data = {split: load(split) for split in ("train", "valid", "test")}
    shapes = common.ShapeLog()

    class data_generator(DataGenerator):
        """The examples' generator: shuffled, each batch padded to its own longest text."""

        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids, batch_labels = [], [], []
            for is_end, (token_ids, segment_ids, label) in self.sample(random):
                batch_token_ids.append(token_ids)
                batch_segment_ids.append(segment_ids)
                batch_labels.append([label])
                if len(batch_token_ids) == self.batch_size or is_end:
                    batch_token_ids = sequence_padding(batch_token_ids)
                    batch_segment_ids = sequence_padding(batch_segment_ids)
                    batch_labels = sequence_padding(batch_labels)
                    if random:
                        shapes.add(*batch_token_ids.shape)
                    yield [batch_token_ids, batch_segment_ids], batch_labels
                    batch_token_ids, batch_segment_ids, batch_labels = [], [], []

    bert = build_transformer_model(config_path=config_path, checkpoint_path=checkpoint_path,
                                   model="bert", return_keras_model=False)
    output = keras.layers.Lambda(lambda x: x[:, 0], name="CLS-token")(bert.model.output)
    output = keras.layers.Dense(common.HEAD_UNITS, activation="relu")(output)
    output = keras.layers.Dropout(common.HEAD_DROPOUT)(output)
    output = keras.layers.Dense(len(names), activation="softmax")(output)
    model = keras.models.Model(bert.model.input, output)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(args.lr),
                  metrics=["sparse_categorical_accuracy"])

    train_generator = data_generator(data["train"], args.batch_size)
    valid_generator = data_generator(data["valid"], args.batch_size)
    test_generator = data_generator(data["test"], args.batch_size)

    def predict(generator):
        probs, labels = [], []
        for x, y in generator:
            probs.append(model.predict_on_batch(x))
            labels.append(y[:, 0])
        return np.concatenate(probs), np.concatenate(labels)

    clock, valid_log = common.StepClock(), []

    Timer = common.keras_timer(keras, clock)

    class Evaluator(keras.callbacks.Callback):
        """Validation accuracy after each epoch (the examples' Evaluator; nothing is saved: the
        final weights are tested, as on the other two sides)."""

        def on_epoch_end(self, epoch, logs=None):
            probs, labels = predict(valid_generator)
            picked = probs[np.arange(len(labels)), labels.astype(int)]
            valid_log.append({"epoch": epoch + 1, "loss": float(logs["loss"]),
                              "val_loss": float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
                              "val_acc": float(np.mean(probs.argmax(-1) == labels))})

    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=args.epochs,
              callbacks=[Timer(), Evaluator()], verbose=0)

    probs, _ = predict(test_generator)
    common.write_predictions(os.path.join(args.out, "predictions.csv"), names, probs.argmax(-1))
    timing = clock.summary(len(data["train"]), args.batch_size)
    steps = sum(timing["steps_per_epoch"])
    common.write_summary(args.out, {
        "system": "bert4keras",
        "batching": "per batch",
        "timing": timing,
        # the generator is consumed in order, so its first `steps` batches are the trained ones
        **shapes.first(steps),
        "steps_run": steps,
        "token_digests": {split: common.ids_digest([d[0] for d in data[split]]) for split in data},
        "labels": names,
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "TF default (0)"},
        "versions": {"tensorflow": tf.__version__, "bert4keras": _version("bert4keras")},
        "valid_per_epoch": valid_log,
    })
    print("bert4keras side: %s" % json.dumps(timing))


def _version(package):
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
