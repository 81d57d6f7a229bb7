"""Batches padded to their own longest sequence (not to max_len), reshuffled every epoch.

Two ways to pad less (padding is masked, so neither changes what a text scores):
* ``group_by_length`` (training): every epoch the shuffled examples are cut into pools of
  ``pool_batches`` batches, each pool is sorted by length and cut into batches, and the batches
  are shuffled. Batches hold texts of similar length while their order stays random: the
  "megabatch" scheme of the HF Trainer's ``group_by_length`` (its LengthGroupedSampler, 50
  batches a pool) and of fairseq/AllenNLP bucket iterators. On the Reuters R8 subset of
  bench/peers it cuts the padded tokens of an epoch at max_len 128 by a third, but where length
  and class go together batches become nearly one-class and macro-F1 dropped (bench/RESULTS.md):
  off by default.
* ``micro_batches`` (training): each batch, as drawn, is sorted by length and cut into that many
  parts, each padded to its own longest text; the trainer sums the parts' gradients, weighted by
  their share of the batch, into one update (adversarial.AdversarialTrainer). The step is the one
  of the whole batch (the loss is a per-example mean; BERT has no batch statistics), only with
  fewer padded tokens, so it costs no quality. Cut points minimise the padded tokens (a small
  dynamic programme over the sorted lengths).
* ``by_length`` (prediction): batches in length order; ``in_input_order`` puts the outputs back.
"""
import numpy as np

from xtune_keras import compat  # noqa: F401  (first: TensorFlow and the bert4keras repairs)
from bert4keras.backend import keras  # noqa: E402  (isort: after compat)
from bert4keras.snippets import sequence_padding


class PaddedBatches(keras.utils.Sequence):
    """``({Input-Token, Input-Segment}, labels)`` batches; padding only up to the batch's longest text."""

    def __init__(self, token_ids, segment_ids, labels=None, batch_size=32, shuffle=False, seed=0,
                 group_by_length=False, pool_batches=50, by_length=False, micro_batches=1):
        super().__init__()
        if group_by_length and not shuffle:
            raise ValueError("group_by_length regroups the shuffled training batches: it needs shuffle=True")
        if micro_batches > 1 and labels is None:
            raise ValueError("micro_batches splits training batches: it needs labels")
        self.token_ids, self.segment_ids, self.labels = token_ids, segment_ids, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.group_by_length, self.pool_batches = group_by_length, pool_batches
        self.micro_batches = micro_batches
        self._rng = np.random.default_rng(seed)
        self.lengths = np.array([len(ids) for ids in token_ids], dtype=np.int64)
        if by_length:
            # Longest first: a batch too big for memory fails at once, not at the end.
            self.order = np.argsort(-self.lengths, kind="stable")
        else:
            self.order = np.arange(len(token_ids))
        self._cut()
        if shuffle:
            self._reshuffle()

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batch_of(self.batches[index])

    def batch_of(self, picked):
        """The batch of the examples ``picked`` (indices into this table)."""
        if self.micro_batches > 1:
            parts = self.parts_of(picked)
            return tuple(self._inputs(part) for part in parts), tuple(self.labels[part] for part in parts)
        if self.labels is None:
            return (self._inputs(picked),)
        return self._inputs(picked), self.labels[picked]

    def _inputs(self, picked):
        # Keyed by the encoder's input names: a bare 2-list would be read as (x, y).
        if not len(picked):  # an empty micro-batch (a last batch shorter than micro_batches)
            empty = np.zeros((0, 1), dtype=np.int32)
            return {"Input-Token": empty, "Input-Segment": empty}
        return {
            "Input-Token": sequence_padding([self.token_ids[i] for i in picked]).astype(np.int32),
            "Input-Segment": sequence_padding([self.segment_ids[i] for i in picked]).astype(np.int32),
        }

    def parts_of(self, picked):
        """``picked`` sorted longest first and cut into ``micro_batches`` parts (empty ones last
        when there are fewer examples than parts) with the fewest padded tokens."""
        picked = picked[np.argsort(-self.lengths[picked], kind="stable")]
        cuts = fewest_token_cuts(self.lengths[picked], self.micro_batches)
        return [picked[a:b] for a, b in zip(cuts[:-1], cuts[1:])]

    def on_epoch_end(self):
        if self.shuffle:
            self._reshuffle()

    def in_input_order(self, outputs):
        """Per-example outputs of one pass over these (unshuffled) batches, in the input's order."""
        outputs = np.asarray(outputs)
        restored = np.empty_like(outputs)
        restored[self.order] = outputs
        return restored

    def padded_tokens(self):
        """Token slots of one pass, padding included (what the encoder computes on)."""
        parts = [p for b in self.batches for p in (self.parts_of(b) if self.micro_batches > 1 else [b])]
        return int(sum(len(p) * self.lengths[p].max() for p in parts if len(p)))

    def _cut(self):
        self.batches = [self.order[i:i + self.batch_size] for i in range(0, len(self.order), self.batch_size)]

    def _reshuffle(self):
        self._rng.shuffle(self.order)
        if not self.group_by_length:
            self._cut()
            return
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(self.order), pool):
            members = self.order[start:start + pool]
            members = members[np.argsort(-self.lengths[members], kind="stable")]
            batches += [members[i:i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        self.batches = [batches[i] for i in self._rng.permutation(len(batches))]
        self.order = np.concatenate(self.batches) if batches else self.order


def fewest_token_cuts(lengths, parts):
    """Cut points ``[0, ..., n]`` splitting ``lengths`` (sorted longest first) into ``parts``
    contiguous runs with the least ``sum(len(run) * run[0])``; runs past ``n`` are empty.

    best[p][j]: fewest tokens for the first j lengths in p runs; a run i..j costs (j - i) * lengths[i].
    O(parts * n^2), n being a batch size.
    """
    n = len(lengths)
    used = min(parts, n)
    best = np.full((used + 1, n + 1), np.inf)
    start = np.zeros((used + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0
    for p in range(1, used + 1):
        for j in range(p, n + 1):
            costs = [best[p - 1, i] + (j - i) * lengths[i] for i in range(p - 1, j)]
            i = int(np.argmin(costs))
            best[p, j], start[p, j] = costs[i], i + p - 1
    cuts, j = [n], n
    for p in range(used, 0, -1):
        j = int(start[p, j])
        cuts.append(j)
    return cuts[::-1] + [n] * (parts - used)
