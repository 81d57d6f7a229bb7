import numpy as np

from xtune_keras.batches import PaddedBatches


def test_batches_pad_to_their_own_longest_sequence():
    ids = [[2, 5, 3], [2, 5, 6, 7, 3], [2, 3], [2, 9, 9, 9, 9, 9, 3]]
    segs = [[0] * len(x) for x in ids]
    labels = np.eye(4, dtype=np.float32)
    batches = PaddedBatches(ids, segs, labels, batch_size=2)
    (x0, _), (x1, y1) = batches[0], batches[1]
    assert x0["Input-Token"].shape == (2, 5) and x1["Input-Token"].shape == (2, 7)
    assert x0["Input-Token"][0].tolist() == [2, 5, 3, 0, 0]
    assert np.array_equal(y1, labels[2:])


def test_shuffle_is_seeded_and_covers_every_example():
    ids = [[2, i, 3] for i in range(10, 20)]
    segs = [[0, 0, 0]] * 10
    first = PaddedBatches(ids, segs, np.arange(10)[:, None], batch_size=3, shuffle=True, seed=7)
    second = PaddedBatches(ids, segs, np.arange(10)[:, None], batch_size=3, shuffle=True, seed=7)
    order = np.concatenate([first[i][1][:, 0] for i in range(len(first))])
    assert sorted(order.tolist()) == list(range(10))
    assert order.tolist() == np.concatenate([second[i][1][:, 0] for i in range(len(second))]).tolist()
    first.on_epoch_end()
    assert np.concatenate([first[i][1][:, 0] for i in range(len(first))]).tolist() != order.tolist()


def test_prediction_batches_carry_inputs_only():
    batches = PaddedBatches([[2, 3]], [[0, 0]], None, batch_size=4)
    (x,) = batches[0]
    assert set(x) == {"Input-Token", "Input-Segment"}
