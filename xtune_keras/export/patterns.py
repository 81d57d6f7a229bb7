"""Python regexes of ``data.clean_patterns`` and bert4keras's character classes, rewritten for
RE2 (the regex engine of ``tf.strings.regex_replace`` and tensorflow-text), so that an exported
SavedModel cleans and splits text as training did. See ``savedmodel.py``."""
import functools
import re
import unicodedata

import tensorflow as tf

from xtune_keras.errors import XtuneError


# --------------------------------------------------------------------------- character classes


def _re2_class(code_points, negate=False):
    """An RE2 character class of the given (sorted) code points, as ranges."""
    parts, start, previous = [], None, None
    for cp in list(code_points) + [None]:
        if start is not None and (cp is None or cp != previous + 1):
            parts.append("\\x{%X}" % start if start == previous else "\\x{%X}-\\x{%X}" % (start, previous))
            start = None
        if cp is not None and start is None:
            start = cp
        previous = cp
    return "[%s%s]" % ("^" if negate else "", "".join(parts))


def _all_characters():
    # Surrogates cannot occur in valid UTF-8 and RE2 refuses them in a class.
    return (chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)


@functools.lru_cache(maxsize=None)
def tokenizer_classes():
    """bert4keras ``Tokenizer._tokenize`` as four RE2 classes, from its own predicates.

    It looks at each character in this order: punctuation or CJK -> a token of its own; space ->
    separator; NUL, U+FFFD or control -> dropped; anything else is kept, and ``str.split()`` then
    also separates at the other Python whitespace (U+2028, U+2029). ``Mn`` (combining marks) is
    what ``lowercase_and_normalize`` strips after NFD.
    """
    from bert4keras.tokenizers import Tokenizer

    alone, separator, dropped, marks = [], [], [], []
    for ch in _all_characters():
        cp = ord(ch)
        if Tokenizer._is_punctuation(ch) or Tokenizer._is_cjk_character(ch):
            alone.append(cp)
        elif Tokenizer._is_space(ch):
            separator.append(cp)
        elif cp == 0 or cp == 0xFFFD or Tokenizer._is_control(ch):
            dropped.append(cp)
        elif ch.isspace():
            separator.append(cp)
        if unicodedata.category(ch) == "Mn":
            marks.append(cp)
    return {"alone": _re2_class(alone), "separator": _re2_class(separator),
            "dropped": _re2_class(dropped), "marks": _re2_class(marks)}


@functools.lru_cache(maxsize=None)
def python_re_classes():
    """Python's Unicode ``\\s``, ``\\d`` and ``\\w`` (RE2's are ASCII-only), as RE2 class bodies."""
    spaces, digits, word = [], [], []
    for ch in _all_characters():
        if ch.isspace():
            spaces.append(ord(ch))
        if ch.isdecimal():
            digits.append(ord(ch))
        if ch.isalnum() or ch == "_":
            word.append(ord(ch))
    return {"s": _re2_class(spaces)[1:-1], "d": _re2_class(digits)[1:-1], "w": _re2_class(word)[1:-1]}


# --------------------------------------------------------------------------- data.clean_patterns


def re2_pattern(pattern):
    """A Python ``re`` pattern rewritten for RE2 (tf.strings.regex_replace), or an XtuneError.

    ``\\d \\s \\w`` (and ``\\D \\S \\W`` outside brackets) become the Unicode classes Python
    uses; ``\\Z`` becomes ``\\z``. Refused: ``\\b``/``\\B`` (RE2's are ASCII-only), ``\\D \\S \\W``
    inside brackets, patterns that match the empty string (Python and RE2 place empty matches
    differently), and whatever RE2 cannot compile (lookaround, backreferences).
    """
    compiled = re.compile(pattern)
    if compiled.search("") is not None:
        raise _pattern_error(pattern, "it matches the empty string")
    if compiled.flags & re.ASCII:
        return pattern  # (?a): Python's classes are ASCII too, like RE2's
    classes = python_re_classes()
    out, i, bracket_start = [], 0, None  # bracket_start: index of the open "[", None outside
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(_re2_escape(pattern, pattern[i + 1], bracket_start is not None, classes))
            i += 2
            continue
        if bracket_start is None and ch == "[":
            bracket_start = i
        elif bracket_start is not None and ch == "]" and not _opens_class_body(pattern, bracket_start, i):
            bracket_start = None
        out.append(ch)
        i += 1
    return "".join(out)


def _opens_class_body(pattern, start, i):
    # "]" right after "[" or "[^" is a literal in Python, not the end of the class.
    return pattern[start + 1:i] in ("", "^")


def _re2_escape(pattern, letter, in_brackets, classes):
    if letter in "dsw":
        return classes[letter] if in_brackets else "[%s]" % classes[letter]
    if letter in "DSW":
        if in_brackets:
            raise _pattern_error(pattern, "\\%s inside [...] has no RE2 equivalent" % letter)
        return "[^%s]" % classes[letter.lower()]
    if letter in "bB":
        raise _pattern_error(pattern, "RE2's \\%s knows only ASCII words" % letter)
    if letter == "Z":
        return "\\z"
    return "\\" + letter


def _pattern_error(pattern, why):
    return XtuneError("data.clean_patterns: %r cannot run inside the SavedModel: %s" % (pattern, why))


def graph_clean_patterns(patterns):
    """The model's clean patterns as RE2 patterns, each checked by compiling it once."""
    if isinstance(patterns, str):
        patterns = [patterns]
    converted = []
    for pattern in patterns or ():
        rewritten = re2_pattern(pattern)
        try:
            tf.strings.regex_replace(tf.constant([""]), rewritten, " ")
        except (tf.errors.OpError, ValueError) as exc:
            raise _pattern_error(pattern, str(exc).splitlines()[0])
        converted.append(rewritten)
    return converted


def prepare_texts(texts, re2_patterns):
    """``data._joined_text`` after the join: clean patterns -> " ", then ``" ".join(text.split())``."""
    for pattern in re2_patterns:
        texts = tf.strings.regex_replace(texts, pattern, " ")
    spaces = "[%s]+" % python_re_classes()["s"]
    texts = tf.strings.regex_replace(texts, spaces, " ")
    return tf.strings.regex_replace(texts, "^ | $", "")


