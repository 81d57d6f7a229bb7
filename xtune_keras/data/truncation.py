"""Fitting long texts into BERT's length limit.

Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?", compare keeping the head, the
tail, or head+tail of a long text; head+tail (the first 128 and last 382 of 510 tokens) did best
on long reviews, hence the default ``head_ratio`` 0.25 (round(510 * 0.25) = 128).
"""
import numbers

from xtune_keras.errors import XtuneError

from xtune_keras.keys import TRUNCATIONS as STRATEGIES  # noqa: E402  (declared once, with the keys)
DEFAULT_HEAD_RATIO = 0.25
CLS, SEP = "[CLS]", "[SEP]"


def check_strategy(strategy, head_ratio=DEFAULT_HEAD_RATIO, key="data.truncation"):
    """Raise an XtuneError naming the YAML key when ``strategy`` or ``head_ratio`` is invalid."""
    if strategy not in STRATEGIES:
        raise XtuneError(
            "%s: unknown strategy %r; valid: %s" % (key, strategy, ", ".join(STRATEGIES))
        )
    if isinstance(head_ratio, bool) or not isinstance(head_ratio, numbers.Real) or not 0 <= head_ratio <= 1:
        raise XtuneError("data.head_ratio: must be a number between 0 and 1, got %r" % (head_ratio,))


def truncate(tokens, budget, strategy="head", head_ratio=DEFAULT_HEAD_RATIO):
    """At most ``budget`` tokens of ``tokens``: the first, the last, or the first and last."""
    check_strategy(strategy, head_ratio)
    tokens = list(tokens)
    budget = max(int(budget), 0)
    if len(tokens) <= budget:
        return tokens
    if strategy == "head":
        return tokens[:budget]
    # Explicit start index: tokens[-0:] would be the whole list, not an empty one.
    if strategy == "tail":
        return tokens[len(tokens) - budget:]
    head = round(budget * head_ratio)
    return tokens[:head] + tokens[len(tokens) - (budget - head):]


def split_budget(len1, len2, budget):
    """Token budgets ``(b1, b2)`` for two segments, as google-research/bert's _truncate_seq_pair.

    That loop trims the longer segment one token at a time (the second on ties), so a segment
    shorter than half the budget (an address next to a long complaint) is kept whole.
    """
    budget = max(int(budget), 0)
    if len1 + len2 <= budget:
        return len1, len2
    shorter = min(len1, len2)
    if 2 * shorter <= budget:  # (equal lengths never get here: they would fit)
        return (len1, budget - len1) if len1 < len2 else (budget - len2, len2)
    # Both were trimmed to about half; ties trim the second first, so the first gets the odd token.
    return budget - budget // 2, budget // 2


def encode_pair(tokenizer, text1, text2, max_len, strategy="head", head_ratio=DEFAULT_HEAD_RATIO,
                strategy2=None):
    """``(token_ids, segment_ids)`` of ``[CLS] text1 [SEP] (text2 [SEP])``, at most ``max_len`` long.

    An empty ``text2`` is treated as absent, as google-research/bert's run_classifier does.
    ``strategy2`` is the rule for text2 (default: ``strategy``); the write-up's last data variant
    puts the head of an appeal in text1 and its tail in text2 (``head`` / ``tail``).
    """
    strategy2 = strategy2 or strategy
    check_strategy(strategy, head_ratio)
    check_strategy(strategy2, head_ratio, key="data.truncation2")
    first = _bare_tokens(tokenizer, text1)
    second = _bare_tokens(tokenizer, text2) if text2 else None
    specials = 3 if second is not None else 2
    budget = int(max_len) - specials
    if budget < 1:
        raise XtuneError(
            "data.max_len: %r leaves no room for text next to %d special tokens" % (max_len, specials)
        )
    if second is None:
        tokens = [CLS] + truncate(first, budget, strategy, head_ratio) + [SEP]
        return tokenizer.tokens_to_ids(tokens), [0] * len(tokens)
    budget1, budget2 = split_budget(len(first), len(second), budget)
    part1 = [CLS] + truncate(first, budget1, strategy, head_ratio) + [SEP]
    part2 = truncate(second, budget2, strategy2, head_ratio) + [SEP]
    return tokenizer.tokens_to_ids(part1 + part2), [0] * len(part1) + [1] * len(part2)


def _bare_tokens(tokenizer, text):
    # bert4keras's tokenize() adds [CLS] ... [SEP]; segments are joined here, so drop them.
    tokens = tokenizer.tokenize(text or "")
    if tokens and tokens[0] == CLS:
        tokens = tokens[1:]
    if tokens and tokens[-1] == SEP:
        tokens = tokens[:-1]
    return tokens


def encode_examples(tokenizer, examples, max_len, strategy="head", head_ratio=DEFAULT_HEAD_RATIO,
                    strategy2=None):
    """Token id lists and segment id lists of every example (unpadded)."""
    check_strategy(strategy, head_ratio)
    second = examples.text2 if examples.text2 is not None else [None] * len(examples)
    token_ids, segment_ids = [], []
    for text1, text2 in zip(examples.text1, second):
        tokens, segments = encode_pair(tokenizer, text1, text2, max_len, strategy, head_ratio, strategy2)
        token_ids.append(tokens)
        segment_ids.append(segments)
    return token_ids, segment_ids
