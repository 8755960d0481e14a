"""The validation split held out of the training images, and its evaluations within epochs."""

import csv
import json
import os

import numpy as np
import pytest

from sngm_keras.data import DataError, hold_out_validation, load_arrays, make_datasets
from sngm_keras.training import ConfigError, TrainConfig, train
from sngm_keras.training.validation_monitor import logits_loss_and_accuracy


def test_hold_out_is_a_fixed_disjoint_subset_of_the_training_images():
    arrays = load_arrays("sample")
    kept, x_val, y_val = hold_out_validation(arrays, 500)
    assert (kept.num_train, len(x_val), kept.num_test) == (4500, 500, arrays.num_test)
    np.testing.assert_array_equal(kept.x_test, arrays.x_test)
    # Together the two parts are the training set, each image once.
    flat = arrays.x_train.reshape(len(arrays.x_train), -1)
    index = {row.tobytes(): i for i, row in enumerate(flat)}
    held = sorted(index[r.tobytes()] for r in x_val.reshape(500, -1))
    rest = sorted(index[r.tobytes()] for r in kept.x_train.reshape(4500, -1))
    assert len(set(held) | set(rest)) == 5000 and not set(held) & set(rest)
    np.testing.assert_array_equal(arrays.y_train[held], y_val)
    # The same images for every call (every seed of every run of a study), not the last 500.
    again = hold_out_validation(arrays, 500)[1]
    np.testing.assert_array_equal(again, x_val)
    assert held != list(range(4500, 5000))
    with pytest.raises(DataError, match="validation_size"):
        hold_out_validation(arrays, 5000)


def test_make_datasets_returns_the_validation_split_last():
    train_ds, test_ds, info, validation_ds = make_datasets(
        "sample", batch_size=500, num_epochs=1, validation_size=1000, eval_batch_size=400
    )
    assert (info.num_train, info.num_validation, info.num_test) == (4000, 1000, 1000)
    assert [int(y.shape[0]) for _, y in validation_ds] == [400, 400, 200]
    assert len(list(train_ds)) == 8
    assert len(make_datasets("sample", batch_size=500, num_epochs=1)) == 3


def test_loss_and_accuracy_from_logits_match_a_direct_computation():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 2, 1])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    loss, accuracy = logits_loss_and_accuracy(logits, labels)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(3), labels])), rel=1e-12)
    assert accuracy == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "values, flag",
    [
        (dict(validation_size=-1), "--validation_size"),
        (dict(validations_per_epoch=4), "--validations_per_epoch"),
        (dict(validation_size=100, validations_per_epoch=0), "--validations_per_epoch"),
        (dict(dataset="imagenet2012", validation_size=100), "--validation_size"),
        (dict(optimizer="sngm", pytorch_lars=True), "--pytorch_lars"),
    ],
)
def test_bad_validation_settings_name_their_flag(tmp_path, values, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(model_dir=str(tmp_path / "run"), **values).validate()


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluations_within_epochs_leave_training_untouched(tmp_path):
    """Four validations an epoch give the same training (weights, per-epoch training loss) as one."""
    common = dict(
        dataset="sample",
        batch_size=500,
        micro_batch_size=250,
        epochs=2,
        validation_size=500,
        deterministic=True,
        verbose=0,
        learning_rate=0.3,
    )
    runs = {}
    for every in (1, 4):
        model_dir = str(tmp_path / f"every{every}")
        summary = train(TrainConfig(model_dir=model_dir, validations_per_epoch=every, **common))
        runs[every] = (
            summary,
            _rows(os.path.join(model_dir, "history.csv")),
            _rows(os.path.join(model_dir, "validation.csv")),
        )
    (one, hist1, val1), (four, hist4, val4) = runs[1], runs[4]
    assert [r["train_loss"] for r in hist1] == [r["train_loss"] for r in hist4]
    assert one["test_accuracy"] == four["test_accuracy"]
    assert [int(r["updates"]) for r in val1] == [9, 18]
    assert [int(r["updates"]) for r in val4] == [2, 4, 6, 8, 9, 11, 13, 15, 17, 18]  # every 9 // 4 updates
    # The epoch-end evaluations agree, and are what history.csv and summary.json report.
    assert [r["validation_accuracy"] for r in val1] == [val4[4]["validation_accuracy"], val4[-1]["validation_accuracy"]]
    assert [r["validation_accuracy"] for r in hist4] == [
        val4[4]["validation_accuracy"],
        val4[-1]["validation_accuracy"],
    ]
    assert four["validation_accuracy"] == float(val4[-1]["validation_accuracy"])
    assert four["best_validation_accuracy"] == max(float(r["validation_accuracy"]) for r in val4)
    # The epoch the end-of-epoch validations select, and the test accuracy there (to 6 digits).
    selected = max(hist4, key=lambda r: float(r["validation_accuracy"]))
    assert four["best_validation_epoch"] == int(selected["epoch"])
    assert four["test_accuracy_at_best_validation_epoch"] == float(f"{float(selected['test_accuracy']):.6g}")
    assert four["num_train"] == 4500 and four["num_validation"] == 500
    saved = json.load(open(tmp_path / "every4" / "summary.json"))
    assert saved["validation_accuracy"] == four["validation_accuracy"]


def test_every_batch_size_of_one_micro_batch_trains_on_the_examples_of_an_epoch(tmp_path):
    """B = 1024 as micro-batches of 128 on the 4,500 kept images: each epoch
    uses 4,480 (35 micro-batches), as B = 128 does, in four batches of 1024
    and a last of 384; #grad/n counts the examples, not updates x B."""
    summary = train(
        TrainConfig(
            model_dir=str(tmp_path / "run"),
            dataset="sample",
            batch_size=1024,
            micro_batch_size=128,
            epochs=2,
            validation_size=500,
            validations_per_epoch=2,
            verbose=0,
        )
    )
    assert summary["updates"] == 2 * 5 and summary["num_train"] == 4500 and summary["num_classes"] == 10
    assert summary["grad_per_n"] == pytest.approx(2 * 4480 / 4500)
    history = _rows(tmp_path / "run" / "history.csv")
    assert [float(r["grad_per_n"]) for r in history] == pytest.approx([4480 / 4500, 2 * 4480 / 4500], abs=1e-6)
    validation = _rows(tmp_path / "run" / "validation.csv")
    assert [int(r["updates"]) for r in validation] == [2, 4, 5, 7, 9, 10]  # every 5 // 2 updates, and each epoch's end
    assert [float(r["grad_per_n"]) for r in validation] == pytest.approx(
        [n / 4500 for n in (2048, 4096, 4480, 4480 + 2048, 4480 + 4096, 2 * 4480)], abs=1e-6
    )
    assert summary["gradient_variance_ema"] > 0  # the noise scale is measured with the last, smaller batches too
