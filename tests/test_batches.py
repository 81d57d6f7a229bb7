import numpy as np

import itertools

import pytest

from xtune_keras.data.batches import PaddedBatches, fewest_token_cuts


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


def _lengths_and_labels(batches):
    """(padded length, label column) of each batch of one pass."""
    return [(x["Input-Token"].shape[1], y[:, 0].tolist()) for x, y in (batches[i] for i in range(len(batches)))]


def _varied(n=100, seed=3):
    rng = np.random.default_rng(seed)
    ids = [[2] + [9] * int(k) + [3] for k in rng.integers(1, 60, n)]
    return ids, [[0] * len(x) for x in ids], np.arange(n)[:, None]


def test_group_by_length_pads_less_and_still_covers_every_example_once():
    ids, segs, labels = _varied()
    plain = PaddedBatches(ids, segs, labels, batch_size=8, shuffle=True, seed=1)
    grouped = PaddedBatches(ids, segs, labels, batch_size=8, shuffle=True, seed=1, group_by_length=True,
                            pool_batches=4)
    for epoch in range(3):
        seen = sorted(sum((y for _, y in _lengths_and_labels(grouped)), []))
        assert seen == list(range(100)), epoch
        assert len(grouped) == len(plain) == 13
        # within a pool of 4 batches (32 texts) sorted by length, a batch spans few lengths
        assert grouped.padded_tokens() < 0.8 * plain.padded_tokens(), epoch
        grouped.on_epoch_end()
        plain.on_epoch_end()


def test_group_by_length_is_seeded_and_reshuffled_every_epoch():
    ids, segs, labels = _varied()
    first = PaddedBatches(ids, segs, labels, batch_size=8, shuffle=True, seed=5, group_by_length=True,
                          pool_batches=4)
    second = PaddedBatches(ids, segs, labels, batch_size=8, shuffle=True, seed=5, group_by_length=True,
                           pool_batches=4)
    epoch1 = _lengths_and_labels(first)
    assert epoch1 == _lengths_and_labels(second)
    first.on_epoch_end()
    assert _lengths_and_labels(first) != epoch1
    # batch order is random: not longest-first nor shortest-first
    lengths = [n for n, _ in epoch1]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)


def test_group_by_length_only_for_shuffled_batches():
    ids, segs, labels = _varied(10)
    try:
        PaddedBatches(ids, segs, labels, batch_size=4, group_by_length=True)
    except ValueError as e:
        assert "shuffle" in str(e)
    else:
        raise AssertionError("group_by_length without shuffle was accepted")


def test_by_length_batches_pad_least_and_outputs_come_back_in_input_order():
    ids, segs, _ = _varied(37)
    batches = PaddedBatches(ids, segs, None, batch_size=8, by_length=True)
    plain = PaddedBatches(ids, segs, None, batch_size=8)
    assert batches.padded_tokens() < plain.padded_tokens()
    widths = [batches[i][0]["Input-Token"].shape[1] for i in range(len(batches))]
    assert widths == sorted(widths, reverse=True)
    # a stand-in "model output" per example: its own length, read from the padded batch
    outputs = np.concatenate([(batches[i][0]["Input-Token"] > 0).sum(1) for i in range(len(batches))])
    assert batches.in_input_order(outputs).tolist() == [len(x) for x in ids]
    assert plain.in_input_order(outputs[:0].tolist() + list(range(37))).tolist() == list(range(37))


def _tokens(lengths, cuts):
    return sum((b - a) * lengths[a] for a, b in zip(cuts[:-1], cuts[1:]) if b > a)


def test_fewest_token_cuts_match_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n, parts = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        lengths = np.sort(rng.integers(2, 50, n))[::-1]
        cuts = fewest_token_cuts(lengths, parts)
        assert len(cuts) == parts + 1 and cuts[0] == 0 and cuts[-1] == n and cuts == sorted(cuts)
        used = min(parts, n)
        assert all(b > a for a, b in zip(cuts[:used], cuts[1:used + 1]))  # no empty part before the last
        best = min(_tokens(lengths, (0,) + inner + (n,))
                   for inner in itertools.combinations(range(1, n), used - 1))
        assert _tokens(lengths, cuts) == best


def test_micro_batches_split_each_drawn_batch_by_length():
    ids, segs, labels = _varied()
    whole = PaddedBatches(ids, segs, labels, batch_size=16, shuffle=True, seed=4)
    split = PaddedBatches(ids, segs, labels, batch_size=16, shuffle=True, seed=4, micro_batches=3)
    assert len(split) == len(whole)
    for i in range(len(whole)):
        _, y = whole[i]
        xs, ys = split[i]
        assert len(xs) == len(ys) == 3
        # the same examples as the unsplit batch, longest first, each part padded to its own longest
        assert sorted(np.concatenate(ys)[:, 0].tolist()) == sorted(y[:, 0].tolist())
        widths = [x["Input-Token"].shape[1] for x in xs]
        assert widths == sorted(widths, reverse=True)
        for x, part in zip(xs, ys):
            assert x["Input-Token"].shape[0] == len(part)
            assert [len(ids[k]) for k in part[:, 0]][0] == x["Input-Token"].shape[1]
    assert split.padded_tokens() < whole.padded_tokens()


def test_micro_batches_of_a_short_last_batch_are_empty_parts():
    ids = [[2, 9, 3], [2, 9, 9, 3], [2, 3]]
    batches = PaddedBatches(ids, [[0] * len(x) for x in ids], np.eye(3, dtype=np.float32), batch_size=3,
                            micro_batches=5)
    xs, ys = batches[0]
    assert [x["Input-Token"].shape for x in xs] == [(1, 4), (1, 3), (1, 2), (0, 1), (0, 1)]
    assert [len(y) for y in ys] == [1, 1, 1, 0, 0]


def test_micro_batches_need_labels():
    with pytest.raises(ValueError):
        PaddedBatches([[2, 3]], [[0, 0]], None, batch_size=2, micro_batches=2)
