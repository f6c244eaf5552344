"""`mlp`: shapes, parameter counts, serialization, channel pruning, QAT and TFLite export."""

import warnings

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.compression import prune_channels, quantize
from keras_dnnopt.export import TFLiteModel, compare_outputs, export_tflite
from keras_dnnopt.models import mlp
from tests.helpers import save_and_load

FEATURES = 10


def _x(n=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype("float32")


def _closed_form(features, units, depth, batch_norm, outputs):
    """Parameters of `mlp`: Dense (bias only without BN), BN (4 per unit), head."""
    params, fan_in = 0, features
    for _ in range(depth):
        params += fan_in * units + (4 * units if batch_norm else units)
        fan_in = units
    return params + fan_in * outputs + outputs


@pytest.mark.parametrize("kwargs", [
    {"num_classes": 3},
    {"num_classes": 5, "depth": 1, "width": 8, "batch_norm": False},
    {"num_classes": 2, "depth": 3, "width": 20, "alpha": 0.5, "dropout": 0.2},
    {"task": "regression", "num_outputs": 2, "width": 7, "alpha": 0.3},
])
def test_param_count_matches_closed_form(kwargs):
    model = mlp((FEATURES,), **kwargs)
    units = max(1, round(kwargs.get("width", 64) * kwargs.get("alpha", 1.0)))
    outputs = kwargs.get("num_classes") or kwargs.get("num_outputs", 1)
    expected = _closed_form(FEATURES, units, kwargs.get("depth", 2),
                            kwargs.get("batch_norm", True), outputs)
    assert model.count_params() == expected
    assert model.output_shape == (None, outputs)
    if kwargs.get("dropout"):
        assert model.get_layer("block1_dropout").rate == kwargs["dropout"]


def test_classification_outputs_probabilities_and_layer_names():
    model = mlp((FEATURES,), num_classes=4, depth=2, width=8, dropout=0.1)
    names = [layer.name for layer in model.layers]
    assert names[1:] == ["block1_dense", "block1_bn", "block1_act", "block1_dropout",
                         "block2_dense", "block2_bn", "block2_act", "block2_dropout",
                         "predictions"]
    assert not model.get_layer("block1_dense").use_bias
    probs = np.asarray(model(_x(4), training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": None}, r"`num_classes` must be an integer"),
    ({"num_classes": 1}, r"`num_classes` must be >= 2. Received: num_classes=1"),
    ({"num_classes": 3, "depth": 0}, r"`depth` must be >= 1. Received: depth=0"),
    ({"num_classes": 3, "width": 0}, r"`width` must be >= 1. Received: width=0"),
    ({"num_classes": 3, "alpha": 0}, r"`alpha` must be > 0. Received: alpha=0"),
    ({"num_classes": 3, "dropout": 1.0}, r"`dropout` must be in \[0, 1\)"),
    ({"num_classes": 3, "batch_norm": 1}, r"`batch_norm` must be a bool"),
    ({"num_classes": 3, "batch_norm_momentum": 1.0}, r"`batch_norm_momentum` must be in"),
    ({"num_classes": 3, "activation": "nope"}, r"`activation` must be one of"),
    ({"num_classes": 3, "task": "ranking"}, r"`task` must be one of 'classification'"),
    ({"num_classes": 3, "target_mean": 1.0, "target_std": 2.0}, r"`target_mean` is for"),
    ({"task": "regression", "num_classes": 3}, r"`num_classes` is for task='classification'"),
    ({"task": "regression", "num_outputs": 0}, r"`num_outputs` must be >= 1"),
    ({"task": "regression", "target_mean": 1.0}, r"`target_mean` and `target_std` go"),
    ({"task": "regression", "target_mean": 1.0, "target_std": 0.0},
     r"`target_std` must be > 0. Received: target_std=0.0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mlp((FEATURES,), **kwargs)


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (None,), 10])
def test_bad_input_shape(input_shape):
    with pytest.raises(ValueError, match="`input_shape`"):
        mlp(input_shape, num_classes=3)


def test_boundaries_accepted():
    mlp((1,), num_classes=2, depth=1, width=1, alpha=0.01, dropout=0.0,
        batch_norm_momentum=0.0)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_keras_round_trip_identical_outputs(task, tmp_path):
    kwargs = ({"num_classes": 3} if task == "classification"
              else {"task": "regression", "target_mean": 5.0, "target_std": 2.0})
    model = mlp((FEATURES,), width=8, **kwargs)
    x = _x(8)
    loaded = save_and_load(model, str(tmp_path))
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)),
                                  np.asarray(model(x, training=False)))


def test_prune_channels_removes_hidden_units():
    model = mlp((FEATURES,), num_classes=3, width=16)
    x = _x(8)
    pruned = prune_channels(model, ratio=0.5)
    assert pruned.get_layer("block1_dense").units == 8
    assert pruned.get_layer("block2_dense").units == 8
    assert pruned.get_layer("predictions").units == 3  # the output is frozen
    assert pruned.count_params() == _closed_form(FEATURES, 8, 2, True, 3)
    assert pruned.count_params() < model.count_params()
    assert np.asarray(pruned(x, training=False)).shape == (8, 3)
    same = prune_channels(model, ratio=0.0)
    np.testing.assert_array_equal(np.asarray(same(x, training=False)),
                                  np.asarray(model(x, training=False)))


def test_prune_channels_regression_with_rescaling():
    model = mlp((FEATURES,), task="regression", width=16, target_mean=3.0, target_std=2.0)
    pruned = prune_channels(model, ratio=0.5)
    assert pruned.count_params() < model.count_params()
    assert pruned.output_shape == (None, 1)


def test_qat_trains_and_exports_int8_full(tmp_path):
    model = mlp((FEATURES,), num_classes=3, width=16)
    x, y = _x(32), np.random.default_rng(1).integers(0, 3, 32)
    qat = quantize(model)
    qat.compile("adam", "sparse_categorical_crossentropy")
    history = qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = str(tmp_path / "mlp_qat.tflite")
    export_tflite(qat, path, quantization="int8_full")
    runner = TFLiteModel(path)
    assert runner.input_dtype == np.int8
    assert runner.predict(x[:4]).shape == (4, 3)
    comparison = compare_outputs(qat, path, x)
    assert comparison.max_abs_diff < 0.05
    assert comparison.top1_agreement >= 0.9


def test_qat_regression_with_rescaling(tmp_path):
    model = mlp((FEATURES,), task="regression", width=16, target_mean=150.0, target_std=77.0)
    x = _x(32)
    if USING_TF_KERAS:
        # TF-MOT has no QuantizeConfig for Rescaling: it stays float.
        with pytest.raises(ValueError, match="'target_rescaling' \\(Rescaling\\)"):
            quantize(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            qat = quantize(model, skip_unsupported=True)
    else:
        qat = quantize(model)
    qat.compile("adam", "mse")
    qat.fit(x, x[:, 0] * 77.0 + 150.0, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "mlp_qat_reg.tflite")
    export_tflite(qat, path, quantization="int8_full", representative_data=x)
    assert compare_outputs(qat, path, x).max_abs_diff < 0.2 * 77.0


def _fit_regression(x, y, mean, std, epochs=60):
    model = mlp((FEATURES,), task="regression", width=16, batch_norm=False,
                target_mean=mean, target_std=std)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def test_regression_predicts_raw_units():
    rng = np.random.default_rng(0)
    x = _x(128)
    weights = rng.normal(size=FEATURES).astype("float32")
    y = (x @ weights) * 77.0 + 150.0  # raw units: mean about 150, std about 77 * |w|
    mean, std = float(y.mean()), float(y.std())
    model = _fit_regression(x, y, mean, std)
    # Rescaling maps the standardized head to raw units exactly.
    head = keras.Model(model.input, model.get_layer("predictions").output)
    raw, standardized = (np.asarray(m(x, training=False))[:, 0] for m in (model, head))
    np.testing.assert_allclose(raw, standardized * std + mean, rtol=1e-5, atol=1e-3)
    error = np.abs(raw - y).mean()
    assert error < 0.2 * std, (error, std)


def test_ptq_int8_full_regression_close_to_keras(tmp_path):
    x = _x(128)
    y = x[:, 0] * 77.0 + 150.0
    model = _fit_regression(x, y, float(y.mean()), float(y.std()), epochs=10)
    path = str(tmp_path / "mlp_reg_int8.tflite")
    export_tflite(model, path, quantization="int8_full", representative_data=x)
    comparison = compare_outputs(model, path, x)
    assert comparison.mean_abs_diff < 0.05 * float(y.std())
    assert comparison.max_abs_diff < 0.15 * float(y.std())
