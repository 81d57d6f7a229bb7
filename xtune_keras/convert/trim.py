"""A Google-format encoder cut down to the vocabulary pieces a corpus uses.

Multilingual encoders spend most of their weights on embedding rows a task never touches: e5-small's
250k rows are 96M of its 118M parameters. Abdaoui et al. (2020), "Load What You Need: Smaller
Versions of Multilingual BERT", keep only the rows of the pieces that occur in the target corpus;
the model is then the same function of every text of that corpus, with a much smaller checkpoint,
`.h5` and masked-LM output layer (the softmax of further pretraining runs over the kept pieces).

Why the tokenization of the corpus does not change: WordPiece takes the longest vocabulary match at
each position, and SentencePiece's unigram model the segmentation of highest score; the pieces a
text was cut into stay, every alternative left is one the full vocabulary had too, so neither
choice changes. Ties could in principle break differently, so :func:`trim_encoder` re-tokenizes the
whole corpus with the trimmed vocabulary and refuses to write anything if one id differs.
"""
import json
import os

import numpy as np

from xtune_keras.convert.checkpoints import CHECKPOINT_NAME, CONFIG_NAME, load_variables, save_variables
from xtune_keras.errors import XtuneError
from xtune_keras.model.encoders import (
    SentencePieceTokenizer, build_tokenizer, is_sentencepiece, resolve_encoder_paths, tokenizer_from_vocab,
)

TRIM_NAME = "trim.json"  # what was kept, from what, written beside the trimmed checkpoint
ROW_VARIABLES = ("bert/embeddings/word_embeddings", "cls/predictions/output_bias")  # indexed by token id
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def corpus_ids(tokenizer, texts):
    """Token ids of each text, as the fine-tuning and pretraining recipes encode them (no cut)."""
    return [tokenizer.encode(text)[0] for text in texts]


def kept_ids(tokenizer, encoded):
    """Sorted ids of every piece used by ``encoded`` and of the special tokens; 0 (padding) included."""
    ids = {0}
    for token in SPECIAL_TOKENS:
        ids.add(tokenizer.token_to_id(token))
    for row in encoded:
        ids.update(row)
    return np.array(sorted(ids), dtype=np.int64)


def trimmed_sentencepiece(model_proto, keep):
    """Serialized SentencePiece model holding only the pieces ``keep`` (old ids, sorted), in that order."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto.FromString(model_proto)
    pieces = list(proto.pieces)
    new_id = {int(old): new for new, old in enumerate(keep)}
    del proto.pieces[:]
    for old in keep:
        proto.pieces.add().CopyFrom(pieces[int(old)])
    spec = proto.trainer_spec
    for name in ("bos", "eos", "pad", "unk"):
        old = getattr(spec, name + "_id")
        if old >= 0:
            setattr(spec, name + "_id", new_id.get(old, -1))
    spec.vocab_size = len(keep)
    return proto.SerializeToString()


def trimmed_wordpiece(vocab_path, keep):
    with open(vocab_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    return "".join(lines[int(old)] + "\n" for old in keep).encode("utf-8")


def trimmed_vocab(src_vocab, keep):
    """Bytes of the trimmed vocabulary file (SentencePiece model or vocab.txt)."""
    if is_sentencepiece(src_vocab):
        with open(src_vocab, "rb") as f:
            return trimmed_sentencepiece(f.read(), keep)
    return trimmed_wordpiece(src_vocab, keep)


def tokenizer_of(src_vocab, data, do_lower_case):
    if is_sentencepiece(src_vocab):
        return SentencePieceTokenizer(data, source="the trimmed " + src_vocab)
    pieces = data.decode("utf-8").splitlines()
    return tokenizer_from_vocab({piece: i for i, piece in enumerate(pieces)}, do_lower_case=do_lower_case)


def check_same_tokens(tokenizer, texts, encoded, keep):
    """Every text must tokenize to its old ids, renumbered, under the trimmed vocabulary."""
    new_id = {int(old): new for new, old in enumerate(keep)}
    for index, (text, old) in enumerate(zip(texts, encoded)):
        if tokenizer.encode(text)[0] != [new_id.get(i, -1) for i in old]:
            raise XtuneError("text %d tokenizes differently after trimming the vocabulary: %r" % (index, text[:60]))


def trim_encoder(src_dir, dst_dir, texts, source_note="", do_lower_case=True):
    """Write ``src_dir``'s encoder to ``dst_dir`` with only the pieces ``texts`` use; ``trim.json``'s content.

    Everything is computed and checked before ``dst_dir`` is written; the config is written last.
    """
    paths = resolve_encoder_paths(src_dir)
    tokenizer = build_tokenizer(paths["vocab"], do_lower_case=do_lower_case)
    texts = [str(t) for t in texts]
    encoded = corpus_ids(tokenizer, texts)
    keep = kept_ids(tokenizer, encoded)
    with open(paths["config"], encoding="utf-8") as f:
        config = json.load(f)
    variables = load_variables(paths["checkpoint"])
    for name in ROW_VARIABLES:
        if name in variables:
            if variables[name].shape[0] != config["vocab_size"]:
                raise XtuneError("%s: %s has %d rows but vocab_size is %d"
                                 % (paths["checkpoint"], name, variables[name].shape[0], config["vocab_size"]))
            variables[name] = variables[name][keep]
    vocab = trimmed_vocab(paths["vocab"], keep)
    check_same_tokens(tokenizer_of(paths["vocab"], vocab, do_lower_case), texts, encoded, keep)
    os.makedirs(dst_dir, exist_ok=True)
    with open(os.path.join(dst_dir, os.path.basename(paths["vocab"])), "wb") as f:
        f.write(vocab)
    save_variables(variables, os.path.join(dst_dir, CHECKPOINT_NAME))
    record = {"source": src_dir, "source_pieces": config["vocab_size"], "kept_pieces": len(keep),
              "texts": len(texts), "corpus": source_note,
              "why": "Abdaoui et al. 2020, Load What You Need: only the rows of pieces the corpus uses"}
    with open(os.path.join(dst_dir, TRIM_NAME), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    config["vocab_size"] = len(keep)
    with open(os.path.join(dst_dir, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return record

