"""Masked-language-model data: whole-word masking over packed blocks.

BERT (Devlin et al. 2019) predicts 15% of the tokens; of those 80% become ``[MASK]``, 10% a random
token, 10% stay. Whole-word masking (google-research/bert's 2019 update; hfl's Chinese-BERT-wwm,
Cui et al. 2019) chooses *words* and masks all of their tokens together, labels staying per token:
for Chinese, whose BERT tokens are single characters, the words come from a segmenter (jieba, as
hfl used LTP). Each token carries a word id; ``SEGMENTERS`` compute them. Documents are packed
into full ``max_len`` blocks (RoBERTa's FULL-SENTENCES, Liu et al. 2019), ``[SEP]`` between
documents, so no step computes padding. Masks are drawn afresh every epoch (dynamic masking,
RoBERTa) from a generator seeded by (seed, epoch, block), so an epoch's masks need no saving.
"""
import math

import numpy as np

from xtune_keras.errors import XtuneError
from xtune_keras.registry import Registry

SEGMENTERS = Registry("segmenter")
SPECIAL = -1  # word id of [CLS], [SEP] and the like: never masked


@SEGMENTERS.register("none")
def token_words(text, tokens, offsets):
    """Token-level masking: every token is its own word."""
    return list(range(len(tokens)))


@SEGMENTERS.register("whitespace")
def piece_words(text, tokens, offsets):
    """A word is a token and the pieces that continue it: WordPiece's ``##`` pieces, or with a
    SentencePiece vocabulary the pieces up to the next one that starts with "▁"."""
    sentencepiece = any(token.startswith("\u2581") for token in tokens)
    words, current = [], -1
    for token in tokens:
        starts = token.startswith("\u2581") if sentencepiece else not token.startswith("##")
        if starts or current < 0:
            current += 1
        words.append(current)
    return words


@SEGMENTERS.register("jieba")
def jieba_words(text, tokens, offsets):
    """jieba's words mapped onto the tokens by character offsets: each token joins the word that
    holds its first visible character (a token without one, e.g. [UNK] of a lone symbol, is its own)."""
    word_of_char = np.full(len(text), -1, dtype=np.int64)
    start = 0
    for index, word in enumerate(_jieba().cut(text)):
        word_of_char[start:start + len(word)] = index
        start += len(word)
    words, fresh = [], start + len(tokens)
    for position, token_offsets in enumerate(offsets):
        # the first visible character: a SentencePiece piece "▁word" spans the space before it
        visible = [i for i in token_offsets if not text[i].isspace()]
        words.append(int(word_of_char[visible[0]]) if visible else fresh + position)
    return words


def _jieba():
    try:
        import jieba
    except ImportError:
        raise XtuneError("masking.segmenter: jieba is not installed (pip install jieba), or choose "
                         "whitespace or none")
    import logging

    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" lines on every start
    return jieba


def tokenize_document(tokenizer, text, segmenter):
    """``(token_ids, word_ids)`` of one document, without [CLS]/[SEP]; word ids start at 0."""
    tokens = tokenizer.tokenize(text)[1:-1]
    if not tokens:
        return [], []
    offsets = None
    if segmenter == "jieba":
        offsets = tokenizer.rematch(text, ["[CLS]"] + tokens + ["[SEP]"])[1:-1]
    words = SEGMENTERS.get(segmenter, "masking.segmenter")(text, tokens, offsets)
    return tokenizer.tokens_to_ids(tokens), _renumbered(words)


def _renumbered(words):
    """Word ids 0, 1, 2, ... in order of first appearance."""
    seen = {}
    return [seen.setdefault(word, len(seen)) for word in words]


class BlockPacker:
    """Documents in, ``(token_ids, word_ids)`` blocks of exactly ``max_len`` out (the last one
    shorter): ``[CLS] doc [SEP] doc ... [SEP]``; a document longer than a block continues in the
    next. Word ids are unique within a block; special tokens get ``SPECIAL``."""

    def __init__(self, max_len, cls_id, sep_id):
        self.room, self.cls_id, self.sep_id = max_len - 2, cls_id, sep_id
        self.ids, self.words, self.next_word = [], [], 0

    def add(self, token_ids, word_ids):
        """Blocks completed by this document."""
        blocks = []
        token_ids, word_ids = list(token_ids) + [self.sep_id], [w + self.next_word for w in word_ids] + [SPECIAL]
        self.next_word = max(word_ids) + 1 if word_ids else self.next_word
        while token_ids:
            take = self.room - len(self.ids)
            self.ids += token_ids[:take]
            self.words += word_ids[:take]
            token_ids, word_ids = token_ids[take:], word_ids[take:]
            if len(self.ids) == self.room:
                blocks.append(self.flush())
        return blocks

    def flush(self):
        """The block being filled (if any), closed with [CLS] ... [SEP]."""
        if not self.ids:
            return None
        block = ([self.cls_id] + self.ids + [self.sep_id], [SPECIAL] + self.words + [SPECIAL])
        self.ids, self.words = [], []  # word ids keep growing: unique within every block
        return block


def max_predictions(max_len, rate):
    """Masked positions a block can have (google-research/bert: 20 for 128 at 0.15)."""
    return max(1, int(math.ceil(max_len * rate)))


def mask_block(token_ids, word_ids, rng, rate, mask_ratio, random_ratio, mask_id, vocab_size, special_ids,
               slots):
    """One block's MLM example: ``(input ids, positions, labels)``; positions and labels are
    padded to ``slots`` with 0 and -1 (no label). Whole words are chosen in random order until
    ``rate`` of the block's real tokens are taken (a word that would overshoot is skipped, as in
    Hugging Face's ``DataCollatorForWholeWordMask``); each chosen token then becomes [MASK] with
    ``mask_ratio``, a random token with ``random_ratio``, else stays."""
    token_ids = np.asarray(token_ids)
    word_ids = np.asarray(word_ids)
    real = np.flatnonzero(word_ids != SPECIAL)
    target = min(slots, max(1, int(round(len(real) * rate))))
    chosen = []
    for word in rng.permutation(np.unique(word_ids[real])):
        members = np.flatnonzero(word_ids == word)
        if len(chosen) + len(members) > target:
            continue
        chosen.extend(members.tolist())
        if len(chosen) == target:
            break
    positions = np.sort(np.asarray(chosen, dtype=np.int64))
    inputs = token_ids.copy()
    draw = rng.random(len(positions))
    replace = positions[draw < mask_ratio]
    randomize = positions[(draw >= mask_ratio) & (draw < mask_ratio + random_ratio)]
    inputs[replace] = mask_id
    inputs[randomize] = _random_tokens(rng, len(randomize), vocab_size, special_ids)
    padded_positions = np.zeros(slots, dtype=np.int32)
    labels = np.full(slots, -1, dtype=np.int32)
    padded_positions[:len(positions)] = positions
    labels[:len(positions)] = token_ids[positions]
    return inputs.astype(np.int32), padded_positions, labels


def _random_tokens(rng, count, vocab_size, special_ids):
    """Random ordinary tokens (never [PAD], [CLS], [SEP], [MASK], [UNK])."""
    out = rng.integers(0, vocab_size, count)
    special = np.isin(out, special_ids)
    while special.any():
        out[special] = rng.integers(0, vocab_size, int(special.sum()))
        special = np.isin(out, special_ids)
    return out
