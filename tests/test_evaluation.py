"""keras_dnnopt.evaluation: reports for Keras models and TFLite files, and streaming metrics,
checked against scikit-learn."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from keras_dnnopt.backend import keras, tf
from keras_dnnopt.evaluation import F1Score, RootMeanSquaredError, evaluate_report
from tests.helpers import assert_config_round_trip, save_and_load


def _classifier(num_classes=4, activation="softmax", input_dim=6):
    return keras.Sequential([keras.Input(shape=(input_dim,)),
                             keras.layers.Dense(num_classes, activation=activation)])


def _regressor(outputs=1):
    return keras.Sequential([keras.Input(shape=(5,)), keras.layers.Dense(outputs)])


@pytest.fixture
def classification_data(rng):
    x = rng.normal(size=(60, 6)).astype("float32")
    y = rng.integers(0, 4, size=60)
    return x, y


def _assert_matches_sklearn(report, y, predicted, labels):
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    for ours, theirs in (("precision_macro", skm.precision_score),
                         ("recall_macro", skm.recall_score), ("f1_macro", skm.f1_score)):
        assert report[ours] == pytest.approx(theirs(y, predicted, average="macro",
                                                    zero_division=0))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    values = list(report.per_class.values())
    np.testing.assert_allclose([v["precision"] for v in values], precision)
    np.testing.assert_allclose([v["recall"] for v in values], recall)
    np.testing.assert_allclose([v["f1"] for v in values], f1)
    np.testing.assert_array_equal([v["support"] for v in values], support)
    np.testing.assert_array_equal(report.confusion_matrix,
                                  skm.confusion_matrix(y, predicted, labels=labels))


# ---------------------------------------------------------------- evaluate_report


def test_classification_report_matches_sklearn(classification_data):
    x, y = classification_data
    model = _classifier()
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    report = evaluate_report(model, (x, y), class_names=["a", "b", "c", "d"])
    _assert_matches_sklearn(report, y, predicted, labels=[0, 1, 2, 3])
    assert list(report.per_class) == ["a", "b", "c", "d"] and report.num_samples == 60
    # One-hot labels and a tf.data pipeline of batches give the same report.
    dataset = tf.data.Dataset.from_tensor_slices((x, np.eye(4)[y])).batch(7)
    assert evaluate_report(model, dataset).to_dict()["metrics"] == report.to_dict()["metrics"]


def test_classification_with_unpredicted_and_absent_classes():
    # Class 2 is never predicted (precision undefined -> 0); class 3 is neither true nor
    # predicted (left out of the macro average, as scikit-learn does).
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(4, dtype="float32")[[0, 1, 1, 1, 0, 1]]
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Identity()])
    report = evaluate_report(model, (scores, y))
    _assert_matches_sklearn(report, y, scores.argmax(axis=1), labels=[0, 1, 2, 3])
    assert report.per_class["3"]["support"] == 0


def test_binary_single_output(rng):
    x = rng.normal(size=(40, 6)).astype("float32")
    y = rng.integers(0, 2, size=40)
    for activation, threshold in (("sigmoid", 0.5), (None, 0.0)):
        model = _classifier(1, activation)
        predicted = (model.predict(x, verbose=0)[:, 0] > threshold).astype(int)
        report = evaluate_report(model, (x, y))
        _assert_matches_sklearn(report, y, predicted, labels=[0, 1])


def test_regression_report_matches_sklearn(rng):
    x = rng.normal(size=(50, 5)).astype("float32")
    for outputs in (1, 3):
        model = _regressor(outputs)
        y = (x[:, :outputs] * 2.0 + rng.normal(size=(50, outputs))).astype("float32")
        target = y[:, 0] if outputs == 1 else y  # (n,) targets for a (n, 1) output
        predicted = model.predict(x, verbose=0)
        report = evaluate_report(model, (x, target), task="regression")
        mse = skm.mean_squared_error(y, predicted)
        assert report["mse"] == pytest.approx(mse, rel=1e-5)
        assert report["rmse"] == pytest.approx(np.sqrt(mse), rel=1e-5)
        assert report["mae"] == pytest.approx(skm.mean_absolute_error(y, predicted), rel=1e-5)
        assert report["r2"] == pytest.approx(skm.r2_score(y, predicted), rel=1e-5)
        assert report.per_class is None and report.confusion_matrix is None


def test_report_is_printable_and_serialisable(classification_data):
    x, y = classification_data
    report = evaluate_report(_classifier(), (x, y), class_names=["w", "x", "y", "z"])
    text = str(report)
    assert "f1_macro" in text and "confusion matrix" in text and "precision" in text
    assert all(name in text for name in "wxyz")
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["confusion_matrix"] == report.confusion_matrix.tolist()
    assert as_dict["per_class"]["w"]["support"] == int((y == 0).sum())
    assert "EvaluationReport classification" in repr(report)


def test_tflite_file_gives_the_keras_report(classification_data, tmp_path, rng):
    pytest.importorskip("ai_edge_litert", reason="the TFLite path needs keras_dnnopt[litert]")
    from keras_dnnopt.export import export_tflite

    x, y = classification_data
    model = _classifier()
    path = str(tmp_path / "classifier.tflite")
    export_tflite(model, path)
    from_keras = evaluate_report(model, (x, y))
    from_tflite = evaluate_report(path, (x, y))
    np.testing.assert_array_equal(from_tflite.confusion_matrix, from_keras.confusion_matrix)
    assert from_tflite.metrics == pytest.approx(from_keras.metrics)

    regressor = _regressor()
    x_reg = rng.normal(size=(30, 5)).astype("float32")
    y_reg = rng.normal(size=(30,)).astype("float32")
    path = str(tmp_path / "regressor.tflite")
    export_tflite(regressor, path)
    ours = evaluate_report(path, (x_reg, y_reg), task="regression")
    reference = evaluate_report(regressor, (x_reg, y_reg), task="regression")
    assert ours.metrics == pytest.approx(reference.metrics, rel=1e-4)


def test_evaluate_report_bad_input(classification_data, tmp_path, other_keras):
    x, y = classification_data
    model = _classifier()
    with pytest.raises(ValueError, match="`task` must be one of 'classification', "
                                         "'regression'. Received: task='clustering'"):
        evaluate_report(model, (x, y), task="clustering")
    with pytest.raises(ValueError, match=r"same number of samples. Received: len\(x\)=60, "
                                         r"len\(y\)=59"):
        evaluate_report(model, (x, y[:59]))
    with pytest.raises(ValueError, match="`class_names` must name all 4 classes"):
        evaluate_report(model, (x, y), class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="path of an existing `.tflite` file"):
        evaluate_report(str(tmp_path / "missing.tflite"), (x, y))
    with pytest.raises(ValueError, match="`data` must be a tuple `\\(x, y\\)`"):
        evaluate_report(model, x)
    with pytest.raises(TypeError, match="Argument `model`"):
        evaluate_report(other_keras.Sequential([other_keras.Input(shape=(6,)),
                                                other_keras.layers.Dense(4)]), (x, y))


# ---------------------------------------------------------------- streaming metrics


def _batches(n, size):
    return [slice(i, i + size) for i in range(0, n, size)]


@pytest.mark.parametrize("average", ["macro", "weighted", None])
def test_f1_accumulates_over_batches_like_sklearn(rng, average):
    y = rng.integers(0, 5, size=90)
    logits = rng.normal(size=(90, 5)).astype("float32")
    probabilities = tf.nn.softmax(logits).numpy()
    weights = rng.uniform(0.5, 2.0, size=90)
    predicted = logits.argmax(axis=1)
    expected = skm.f1_score(y, predicted, average=average, zero_division=0)
    for labels in (y, y[:, None], np.eye(5)[y]):  # sparse, (n, 1), one-hot
        for scores in (probabilities, logits):
            metric = F1Score(5, average=average)
            for part in _batches(90, 16):
                metric.update_state(labels[part], scores[part])
            np.testing.assert_allclose(metric.result().numpy(), expected, rtol=1e-6)
    metric = F1Score(5, average=average)
    for part in _batches(90, 16):
        metric.update_state(y[part], logits[part], sample_weight=weights[part])
    weighted = skm.f1_score(y, predicted, average=average, sample_weight=weights,
                            zero_division=0)
    np.testing.assert_allclose(metric.result().numpy(), weighted, rtol=1e-6)
    metric.reset_state()
    np.testing.assert_allclose(metric.result().numpy(), 0.0 if average else np.zeros(5))


def test_rmse_accumulates_over_batches_like_sklearn(rng):
    y = rng.normal(size=(70, 2)).astype("float32")
    predicted = y + rng.normal(scale=0.5, size=(70, 2)).astype("float32")
    metric = RootMeanSquaredError()
    means = []
    for part in _batches(70, 16):
        metric.update_state(y[part], predicted[part])
        means.append(skm.mean_squared_error(y[part], predicted[part]))
    expected = np.sqrt(skm.mean_squared_error(y, predicted))
    np.testing.assert_allclose(metric.result().numpy(), expected, rtol=1e-6)
    assert abs(np.sqrt(np.mean(means)) - expected) > 1e-4  # not a mean of batch values
    metric.reset_state()
    metric.update_state(y[:, 0], predicted[:, :1])  # (n,) targets, (n, 1) outputs
    np.testing.assert_allclose(metric.result().numpy(),
                               np.sqrt(skm.mean_squared_error(y[:, 0], predicted[:, 0])),
                               rtol=1e-6)


def test_metrics_in_compile_and_save_load(tmp_path, rng):
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 4, size=64)
    model = _classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=[F1Score(4, name="f1")])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    result = model.evaluate(x, y, batch_size=10, verbose=0, return_dict=True)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    assert result["f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro"),
                                         rel=1e-5)
    (tmp_path / "c").mkdir()
    restored = save_and_load(model, str(tmp_path / "c"))
    again = restored.evaluate(x, y, batch_size=10, verbose=0, return_dict=True)
    assert again["f1"] == pytest.approx(result["f1"], rel=1e-6)

    targets = rng.normal(size=(64, 1)).astype("float32")
    regressor = _regressor()
    regressor.compile(optimizer="sgd", loss="mse", metrics=[RootMeanSquaredError()])
    x_reg = rng.normal(size=(64, 5)).astype("float32")
    result = regressor.evaluate(x_reg, targets, batch_size=10, verbose=0, return_dict=True)
    expected = np.sqrt(skm.mean_squared_error(targets, regressor.predict(x_reg, verbose=0)))
    assert result["rmse"] == pytest.approx(expected, rel=1e-5)
    (tmp_path / "r").mkdir()
    restored = save_and_load(regressor, str(tmp_path / "r"))
    again = restored.evaluate(x_reg, targets, batch_size=10, verbose=0, return_dict=True)
    assert again["rmse"] == pytest.approx(result["rmse"], rel=1e-6)


def test_metric_configs_round_trip():
    for metric in (F1Score(3, average="weighted", name="wf1"), RootMeanSquaredError()):
        clone = assert_config_round_trip(metric)
        assert clone.name == metric.name
    assert F1Score(3).get_config()["average"] == "macro"


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 1}, "`num_classes` must be >= 2. Received: num_classes=1"),
    ({"num_classes": 3, "average": "micro"}, "`average` must be one of 'macro'"),
])
def test_f1_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F1Score(**kwargs)
    assert F1Score(2).num_classes == 2
