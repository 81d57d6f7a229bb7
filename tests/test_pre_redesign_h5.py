"""A .h5 written before the redesign (commit 63e4e85) loads and predicts as it did then.

``tests/fixtures/pre_redesign.h5``: a tiny BERT (hidden 8, 2 layers) with mean pooling of the last
two layers, mlp + textcnn heads, head+tail truncation; ``pre_redesign_probs.json`` holds the
probabilities that code predicted for ``pre_redesign_texts.csv``.
"""
import json
import os

import numpy as np

from xtune_keras.inference import open_model, read_examples

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
H5 = os.path.join(FIXTURES, "pre_redesign.h5")
TEXTS = os.path.join(FIXTURES, "pre_redesign_texts.csv")


def test_pre_redesign_h5_predicts_as_before():
    with open(os.path.join(FIXTURES, "pre_redesign_probs.json"), encoding="utf-8") as f:
        expected = np.array(json.load(f)["probs"])
    meta, probabilities_of = open_model(H5)
    probs = probabilities_of(read_examples(meta, TEXTS, with_labels=False), TEXTS)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    assert meta["labels"] == ["noise", "road", "water"]
