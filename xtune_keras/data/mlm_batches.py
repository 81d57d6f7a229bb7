"""Batches of masked blocks for further pretraining.

``MLMStream`` is one endless, seeded stream of optimizer steps over the training blocks: pass
``p`` visits the blocks in the order ``default_rng([seed, p])`` draws, and each block's masks
come from ``default_rng([seed, p, block])`` (fresh every pass). Keras sees it as "epochs" of
``chunk_size`` steps, a chunk ending with a held-out evaluation and the resume state, so a run
killed at any point continues after its last finished chunk with exactly the batches it would
have had: step ``s`` depends on nothing but ``s``.
"""
import math

import numpy as np
from bert4keras.backend import keras

from xtune_keras.data.masking import mask_block


class MLMStream(keras.utils.Sequence):
    def __init__(self, blocks, words, indices, batch_size, seed, masking, chunk_size=None):
        """``masking``: the keyword arguments of ``mask_block`` besides the block and the rng.
        ``chunk_size=None``: a fixed evaluation set (every block once, pass 0's masks)."""
        super().__init__()
        self.blocks, self.words, self.indices = blocks, words, np.asarray(indices)
        self.batch_size, self.seed, self.masking = batch_size, seed, masking
        self.per_pass = int(math.ceil(len(self.indices) / batch_size))
        self.chunk_size, self.chunk, self._orders = chunk_size, 0, {}

    def __len__(self):
        return self.chunk_size or self.per_pass

    def __getitem__(self, index):
        if self.chunk_size is None:
            return self.batch(0, self.indices[index * self.batch_size:(index + 1) * self.batch_size])
        step = self.chunk * self.chunk_size + index
        order = self.order(step // self.per_pass)
        start = (step % self.per_pass) * self.batch_size
        return self.batch(step // self.per_pass, order[start:start + self.batch_size])

    def order(self, epoch):
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.indices)}
        return self._orders[epoch]

    def batch(self, epoch, picked):
        examples = [mask_block(self.blocks[b], self.words[b], np.random.default_rng([self.seed, epoch, int(b)]),
                               **self.masking) for b in picked]
        inputs, positions, labels = (np.stack(parts) for parts in zip(*examples))
        x = {"Input-Token": inputs, "Input-Segment": np.zeros_like(inputs), "Input-Masked-Positions": positions}
        return x, labels

    def on_epoch_end(self):
        if self.chunk_size is not None:
            self.chunk += 1
