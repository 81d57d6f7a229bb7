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
* ``by_length`` (prediction): batches in length order; ``in_input_order`` puts the outputs back.
"""
import numpy as np
from bert4keras.backend import keras
from bert4keras.snippets import sequence_padding


class PaddedBatches(keras.utils.Sequence):
    """``({Input-Token, Input-Segment}, labels)`` batches; padding only up to the batch's longest text."""

    def __init__(self, token_ids, segment_ids, labels=None, batch_size=32, shuffle=False, seed=0,
                 group_by_length=False, pool_batches=50, by_length=False):
        super().__init__()
        if group_by_length and not shuffle:
            raise ValueError("group_by_length regroups the shuffled training batches: it needs shuffle=True")
        self.token_ids, self.segment_ids, self.labels = token_ids, segment_ids, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.group_by_length, self.pool_batches = group_by_length, pool_batches
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
        picked = self.batches[index]
        # Inputs keyed by the encoder's input names: a bare 2-list would be read as (x, y).
        x = {
            "Input-Token": sequence_padding([self.token_ids[i] for i in picked]).astype(np.int32),
            "Input-Segment": sequence_padding([self.segment_ids[i] for i in picked]).astype(np.int32),
        }
        if self.labels is None:
            return (x,)
        return x, self.labels[picked]

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
        return int(sum(len(b) * self.lengths[b].max() for b in self.batches if len(b)))

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
