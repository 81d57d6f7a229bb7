"""Encoders: a Google-format checkpoint directory loaded by bert4keras.

roberta-wwm checkpoints (chinese_roberta_wwm_ext, RoBERTa-large-pair) are BERT-format and load
with ``model: bert``; ``albert`` uses bert4keras's ALBERT mapping.

The tokenizer is a WordPiece ``vocab.txt`` (bert4keras ``Tokenizer``) or, in a folder without
one, a SentencePiece ``spm.model`` (bert4keras ``SpTokenizer``, e.g. from ``xtune convert-e5``).
"""
import json
import os

from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import SpTokenizer, Tokenizer, TokenizerBase, load_vocab

from xtune_keras.convert.checkpoints import CHECKPOINT_NAME, CONFIG_NAME, VOCAB_NAME, check_checkpoint
from xtune_keras.errors import XtuneError

MODELS = ("bert", "roberta", "albert")
SPM_NAME = "spm.model"  # a SentencePiece encoder's vocabulary (used when the folder has no vocab.txt)


def resolve_encoder_paths(directory=None, config=None, checkpoint=None, vocab=None):
    """Paths of config, checkpoint prefix and vocab; explicit paths win over the directory."""
    if directory:
        config = config or os.path.join(directory, CONFIG_NAME)
        checkpoint = checkpoint or os.path.join(directory, CHECKPOINT_NAME)
        if not vocab:
            vocab = os.path.join(directory, VOCAB_NAME)
            if not os.path.isfile(vocab) and os.path.isfile(os.path.join(directory, SPM_NAME)):
                vocab = os.path.join(directory, SPM_NAME)
    if not config or not os.path.isfile(config):
        raise XtuneError("encoder config not found: %s (set encoder.dir or encoder.config)" % config)
    if not vocab or not os.path.isfile(vocab):
        raise XtuneError("encoder vocab not found: %s (nor %s; set encoder.dir or encoder.vocab)"
                         % (vocab, SPM_NAME))
    if checkpoint and not os.path.exists(checkpoint + ".index"):
        raise XtuneError("encoder checkpoint not found: %s(.index)" % checkpoint)
    return {"config": config, "checkpoint": checkpoint, "vocab": vocab}


def read_config(config_path):
    try:
        with open(config_path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise XtuneError("%s: not a JSON BERT config (%s)" % (config_path, exc))


def build_transformer(config_path, checkpoint_path=None, model="bert", **kwargs):
    """A bert4keras transformer object; checkpoint shapes are checked before loading."""
    if model not in MODELS:
        raise XtuneError("encoder.model: unknown model %r; valid: %s" % (model, ", ".join(MODELS)))
    read_config(config_path)
    transformer = build_transformer_model(
        config_path, None, model=model, return_keras_model=False, **kwargs
    )
    if checkpoint_path:
        check_checkpoint(transformer, checkpoint_path, config_path)
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer


def is_sentencepiece(vocab_path):
    """A vocabulary path names a SentencePiece model (``*.model``) rather than a WordPiece vocab.txt."""
    return vocab_path.endswith(".model")


def build_tokenizer(vocab_path, do_lower_case=True):
    """bert4keras tokenizer of a vocab.txt, or of a SentencePiece ``*.model`` (``do_lower_case`` is
    then not applied: the model's own normalizer decides, and XLM-R's vocabulary is cased)."""
    if is_sentencepiece(vocab_path):
        try:
            with open(vocab_path, "rb") as f:
                return SentencePieceTokenizer(f.read(), source=vocab_path)
        except OSError as exc:
            raise XtuneError("%s: cannot read the SentencePiece model (%s)" % (vocab_path, exc))
    try:
        token_dict = load_vocab(vocab_path)
    except UnicodeDecodeError as exc:
        raise XtuneError("%s: vocab is not UTF-8 (%s)" % (vocab_path, exc))
    return Tokenizer(token_dict, do_lower_case=do_lower_case)


def tokenizer_from_vocab(token_dict, do_lower_case=True):
    """The tokenizer of a ``{token: id}`` stored in an .h5: WordPiece, or SentencePiece when it is
    a :class:`SentencePieceVocab` (which carries the model)."""
    if isinstance(token_dict, SentencePieceVocab):
        return SentencePieceTokenizer(token_dict.model_proto)
    return Tokenizer(token_dict, do_lower_case=do_lower_case)


class SentencePieceVocab(dict):
    """``{piece: id}`` of a SentencePiece model plus the serialized model (``model_proto``): what a
    trained .h5 stores, so that predict rebuilds the very same tokenizer."""

    def __init__(self, pieces, model_proto):
        super().__init__(pieces)
        self.model_proto = bytes(model_proto)


class SentencePieceTokenizer(SpTokenizer):
    """bert4keras's ``SpTokenizer`` under the BERT token names the rest of xtune uses.

    truncation.py builds ``[CLS] text [SEP] (text2 [SEP])`` from ``tokenize()`` (which here adds
    ``[CLS]`` / ``[SEP]``) and ``tokens_to_ids()``. ``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]`` and
    ``[MASK]`` resolve to the model's bos, eos, pad, unk and ``<mask>`` pieces, unless the model
    has pieces of those very names (ALBERT-style models), which are then used as they are.
    """

    ALIASES = (("[CLS]", "bos"), ("[SEP]", "eos"), ("[PAD]", "pad"), ("[UNK]", "unk"), ("[MASK]", "<mask>"))

    def __init__(self, model_proto, source="the SentencePiece model"):
        TokenizerBase.__init__(self, token_start="[CLS]", token_end="[SEP]")
        try:
            import sentencepiece
        except ImportError as exc:
            raise XtuneError("%s: a SentencePiece encoder needs the sentencepiece package (%s); "
                             "pip install sentencepiece" % (source, exc))
        self.sp_model = sentencepiece.SentencePieceProcessor()
        try:
            self.sp_model.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as exc:
            raise XtuneError("%s: not a SentencePiece model (%s)" % (source, str(exc).strip()))
        self._model_proto = bytes(model_proto)
        self._vocab_size = self.sp_model.get_piece_size()
        self._aliases = {}
        for name, target in self.ALIASES:
            if self.sp_model.piece_to_id(name) != self.sp_model.unk_id():
                continue  # the model has this piece itself
            index = self._special_id(target)
            if index is not None:
                self._aliases[name] = index
        for name in ("[CLS]", "[SEP]"):
            if self.token_to_id(name) == self.sp_model.unk_id():
                raise XtuneError("%s: has no bos/eos piece to stand for %s" % (source, name))
        for token in ("pad", "unk", "mask", "start", "end"):
            setattr(self, "_token_%s_id" % token, self.token_to_id(getattr(self, "_token_%s" % token)))

    def _tokenize(self, text):
        # A piece the model does not know stays unknown, as in SentencePiece's encode_as_ids (and
        # the exported graph): a text holding "[CLS]" must not get the [CLS] id through the alias.
        unknown = self.sp_model.unk_id()
        return [piece if self.sp_model.piece_to_id(piece) != unknown else self._token_unk
                for piece in super()._tokenize(text)]

    def rematch(self, text, tokens):
        """Character offsets of each of ``tokens`` (``tokenize(text)``; ``[]`` for [CLS], [SEP] and
        pieces without surface, such as a lone "▁"), like bert4keras's WordPiece ``rematch``, from
        the piece spans SentencePiece reports (bytes of the input text)."""
        char_of_byte = [i for i, ch in enumerate(text) for _ in ch.encode("utf-8")]
        spans = [list(range(char_of_byte[p.begin], char_of_byte[p.end - 1] + 1)) if p.end > p.begin else []
                 for p in self.sp_model.encode(text, return_type="proto").pieces]
        inner = iter(spans)
        return [[] if token in (self._token_start, self._token_end) else next(inner, []) for token in tokens]

    def _special_id(self, target):
        if target.startswith("<"):
            index = self.sp_model.piece_to_id(target)
            return None if index == self.sp_model.unk_id() else index
        index = getattr(self.sp_model, target + "_id")()
        return index if 0 <= index < self._vocab_size else None

    def token_to_id(self, token):
        index = self._aliases.get(token)
        return self.sp_model.piece_to_id(token) if index is None else index

    @property
    def _token_dict(self):
        """What the .h5 stores (the fine-tuning recipe saves ``tokenizer._token_dict``)."""
        pieces = {self.sp_model.id_to_piece(i): i for i in range(self._vocab_size)}
        return SentencePieceVocab(pieces, self._model_proto)
