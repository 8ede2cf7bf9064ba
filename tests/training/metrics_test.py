"""Classification metrics against scikit-learn; evaluate() ignores padding rows exactly."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from rgft_jax.data import eval_batches
from rgft_jax.training import classification_metrics

from .conftest import BATCH, examples, stack


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 7))
    n = int(rng.integers(1, 60))
    # Seeds 0-2 draw from every class; 3-5 leave some classes out of labels and/or preds.
    hi = num_classes if seed < 3 else max(1, num_classes - 2)
    labels = rng.integers(0, hi, size=n)
    preds = rng.integers(0 if seed != 4 else 1, num_classes, size=n)
    got = classification_metrics(preds, labels, num_classes)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, preds), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(
        f1_score(labels, preds, average="macro", zero_division=0.0), abs=1e-12)
    np.testing.assert_array_equal(
        got["confusion"], confusion_matrix(labels, preds, labels=range(num_classes)))


def test_classification_metrics_edge_cases():
    perfect = classification_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 2]), 5)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0  # classes 3, 4 skipped
    wrong = classification_metrics(np.array([1, 1]), np.array([0, 0]), 2)
    assert wrong["accuracy"] == 0.0 and wrong["macro_f1"] == 0.0


def test_evaluate_with_padded_last_batch_equals_unpadded(smoke_runs):
    trainer = smoke_runs("full").trainer
    exs = examples(13, seed=5)  # batches of 8: the second has 3 padding rows
    padded_batches = list(eval_batches(exs, batch_size=BATCH))
    assert len(padded_batches) == 2 and padded_batches[1]["valid"].sum() == 5
    padded = trainer.evaluate(padded_batches)
    unpadded = trainer.evaluate([stack(exs)])  # one batch of all 13, no valid mask
    assert np.sum(padded["confusion"]) == 13
    assert padded == unpadded
    # Against the model's own predictions on the unpadded examples.
    b = stack(exs)
    logits = np.asarray(trainer.model(b["input_ids"], b["attention_mask"], b["token_type_ids"]))
    assert padded == classification_metrics(logits.argmax(-1), b["label"], trainer.num_classes)
