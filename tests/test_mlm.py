"""The MLM model of further pretraining (model/mlm.py) on the tiny checkpoint."""
import numpy as np
import pytest
import tensorflow as tf

from xtune_keras.convert.checkpoints import load_variables, save_variables
from xtune_keras.model.mlm import (MaskedLMAccuracy, MaskedLMLoss, build_mlm_model, build_mlm_transformer,
                                   load_available, tied_output_matrix)

IDS = np.array([[2, 30, 4, 32, 3, 0], [2, 40, 41, 4, 43, 3]], np.int32)
SEGS = np.zeros_like(IDS)
POSITIONS = np.array([[2, 0], [3, 1]], np.int32)


def built(tiny_ckpt, fresh_head=False, prefix=None):
    transformer = build_mlm_transformer(tiny_ckpt["config"])
    fresh = load_available(transformer, prefix or tiny_ckpt["checkpoint"], fresh_head)
    return transformer, build_mlm_model(transformer, slots=2), fresh


def test_logits_at_masked_positions_equal_the_full_head(tiny_ckpt):
    transformer, model, fresh = built(tiny_ckpt)
    assert fresh == []
    full = transformer.model.predict([IDS, SEGS], verbose=0)  # bert4keras's head at every token
    gathered = model.predict({"Input-Token": IDS, "Input-Segment": SEGS, "Input-Masked-Positions": POSITIONS},
                             verbose=0)
    expected = np.take_along_axis(full, POSITIONS[:, :, None], axis=1)
    np.testing.assert_allclose(gathered, expected, rtol=0, atol=1e-5)


def test_output_matrix_is_the_token_embedding_variable(tiny_ckpt):
    _, model, _ = built(tiny_ckpt)
    embedding = tied_output_matrix(model)
    assert sum(1 for w in model.weights if w is embedding) == 1
    assert not any(w.name.startswith("MLM") and tuple(w.shape) == tuple(embedding.shape)[::-1]
                   for w in model.weights)


def test_missing_head_starts_fresh_and_is_named(tiny_ckpt, tmp_path):
    stored = {k: v for k, v in load_variables(tiny_ckpt["checkpoint"]).items() if not k.startswith("cls/")}
    prefix = str(tmp_path / "bert_model.ckpt")
    save_variables(stored, prefix)
    _, _, fresh = built(tiny_ckpt, prefix=prefix)
    assert "cls/predictions/output_bias" in fresh and "cls/predictions/transform/dense/kernel" in fresh
    _, _, forced = built(tiny_ckpt, fresh_head=True)
    assert sorted(forced) == sorted(fresh)


def test_missing_encoder_variable_is_an_error(tiny_ckpt, tmp_path):
    from xtune_keras.errors import XtuneError

    stored = load_variables(tiny_ckpt["checkpoint"])
    del stored["bert/encoder/layer_0/output/dense/kernel"]
    prefix = str(tmp_path / "bert_model.ckpt")
    save_variables(stored, prefix)
    with pytest.raises(XtuneError, match="layer_0/output/dense/kernel is missing"):
        built(tiny_ckpt, prefix=prefix)


def test_loss_and_accuracy_count_only_labelled_slots():
    logits = tf.constant([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]], [[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]]])
    labels = tf.constant([[0, 2], [2, -1]])
    per_slot = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=[[0, 2], [2, 0]], logits=logits).numpy()
    expected = (per_slot[0, 0] + per_slot[0, 1] + per_slot[1, 0]) / 3
    assert float(MaskedLMLoss()(labels, logits)) == pytest.approx(expected)
    accuracy = MaskedLMAccuracy()
    accuracy.update_state(labels, logits)
    assert float(accuracy.result()) == pytest.approx(2 / 3)
