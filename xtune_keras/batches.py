"""Batches padded to their own longest sequence (not to max_len), reshuffled every epoch."""
import numpy as np
from bert4keras.backend import keras
from bert4keras.snippets import sequence_padding


class PaddedBatches(keras.utils.Sequence):
    """``({Input-Token, Input-Segment}, labels)`` batches; padding only up to the batch's longest text."""

    def __init__(self, token_ids, segment_ids, labels=None, batch_size=32, shuffle=False, seed=0):
        super().__init__()
        self.token_ids, self.segment_ids, self.labels = token_ids, segment_ids, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self.order = np.arange(len(token_ids))
        if shuffle:
            self._rng.shuffle(self.order)

    def __len__(self):
        return int(np.ceil(len(self.order) / self.batch_size))

    def __getitem__(self, index):
        picked = self.order[index * self.batch_size:(index + 1) * self.batch_size]
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
            self._rng.shuffle(self.order)
