"""Tests of `keras_dnnopt.export`: TFLite export in every quantization mode, running the
file (LiteRT, with the tf.lite fallback), evaluation, output comparison, latency and
sizes, on scikit-learn's digits, with the Keras model's own outputs as the reference."""

import gzip
import os
import sys
import types

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.export import (
    QUANTIZATION_MODES,
    ExportResult,
    TFLiteModel,
    benchmark_tflite,
    compare_outputs,
    evaluate_tflite,
    export_tflite,
    file_sizes,
)
from keras_dnnopt.export import tflite as tflite_module
from keras_dnnopt.models import mobilenet_v1

INPUT_SHAPE = (8, 8, 1)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x, data.target.astype("int64")


def _small_cnn():
    # Weights dominate the file (about 25k parameters), as in real models, so that the
    # int8/float size ratio is meaningful.
    return keras.Sequential([
        keras.Input(shape=INPUT_SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(48, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def trained(digits):
    """A small CNN trained on 1000 digits (about 85-90% test accuracy)."""
    x, y = digits
    keras.utils.set_random_seed(0)
    model = _small_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1000], y[:1000], epochs=5, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(trained, digits, tmp_path_factory):
    """The trained CNN exported once in every quantization mode."""
    folder = tmp_path_factory.mktemp("exported")
    x, _ = digits
    return {
        mode: export_tflite(trained, folder / f"{mode}.tflite", quantization=mode,
                            representative_data=x[:100] if "int8" in mode else None)
        for mode in QUANTIZATION_MODES
    }


@pytest.fixture
def test_split(digits):
    x, y = digits
    return x[1400:], y[1400:]


def _fixed_batch_file(model, path, batch_size):
    """A .tflite file of `model` with a fixed batch dimension, converted from a SavedModel
    with a fixed signature (`model.export` makes the batch dynamic)."""
    spec = tf.TensorSpec((batch_size, *INPUT_SHAPE), tf.float32)
    saved_model = os.fspath(path) + ".saved_model"
    if USING_TF_KERAS:
        serve = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        tf.saved_model.save(model, saved_model, signatures=serve.get_concrete_function())
    else:  # Keras 3 variables are tracked by its ExportArchive, not by tf.Module.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
        archive.write_out(saved_model, verbose=False)
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(saved_model).convert())
    return path


def _tiny_dense(units=3):
    return keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(units)])


# ------------------------------------------------------------------ every mode works
@pytest.mark.parametrize("mode", QUANTIZATION_MODES)
def test_every_mode_exports_and_runs(exported, test_split, mode):
    result = exported[mode]
    assert isinstance(result, ExportResult)
    assert result.quantization == mode
    assert os.path.isfile(result.path)
    with open(result.path, "rb") as f:
        content = f.read()
    assert result.size_bytes == len(content)
    assert result.gzipped_size_bytes == len(gzip.compress(content, compresslevel=9))
    assert result.stripped == ()
    runner = TFLiteModel(result.path)
    assert runner.runtime == "litert"
    assert runner.input_shape == (None, *INPUT_SHAPE)
    assert runner.output_shape == (None, 10)
    outputs = runner.predict(test_split[0][:16])
    assert outputs.shape == (16, 10) and outputs.dtype == np.float32
    assert np.all(np.isfinite(outputs))


def test_float_export_matches_keras_model(trained, exported, test_split):
    comparison = compare_outputs(trained, exported["none"].path, test_split[0])
    assert comparison.num_samples == len(test_split[0])
    assert comparison.top1_agreement == 1.0
    assert comparison.max_abs_diff < 1e-5
    assert comparison.mean_abs_diff < 1e-6


@pytest.mark.parametrize("mode, max_diff, min_top1", [
    ("dynamic", 0.05, 0.97),
    ("float16", 5e-3, 0.99),
    ("int8", 0.1, 0.95),
    ("int8_full", 0.1, 0.95),
])
def test_quantized_exports_agree_with_trained_model(trained, exported, test_split, mode,
                                                    max_diff, min_top1):
    comparison = compare_outputs(trained, exported[mode].path, test_split[0])
    assert comparison.top1_agreement >= min_top1
    assert comparison.max_abs_diff < max_diff
    assert comparison.mean_abs_diff < 0.01
    # Quantization changes the outputs: the comparison is not trivially zero.
    assert comparison.max_abs_diff > 1e-6


def test_quantized_files_are_smaller(exported):
    float_size = exported["none"].size_bytes
    assert exported["int8"].size_bytes <= 0.35 * float_size
    assert exported["int8_full"].size_bytes <= 0.35 * float_size
    assert exported["dynamic"].size_bytes <= 0.35 * float_size
    assert 0.4 * float_size <= exported["float16"].size_bytes <= 0.6 * float_size


def test_int8_full_has_int8_input_and_output(exported):
    full = TFLiteModel(exported["int8_full"].path)
    assert full.input_dtype == np.int8 and full.output_dtype == np.int8
    scale, _ = full.input_quantization
    assert scale > 0
    for mode in ("none", "dynamic", "float16", "int8"):
        runner = TFLiteModel(exported[mode].path)
        assert runner.input_dtype == np.float32 and runner.output_dtype == np.float32
        assert runner.input_quantization == (0.0, 0)


@pytest.mark.slow  # about 10 s per conversion of the 90-layer graph on a busy 2-core machine
def test_mobilenet_v1_exports_full_integer(digits, tmp_path):
    x, _ = digits
    model = mobilenet_v1(input_shape=INPUT_SHAPE, num_classes=10, alpha=0.25)
    float_file = export_tflite(model, tmp_path / "float.tflite")
    assert compare_outputs(model, float_file.path, x[:32]).max_abs_diff < 1e-4
    full = export_tflite(model, tmp_path / "full.tflite", quantization="int8_full",
                         representative_data=x[:50])
    runner = TFLiteModel(full.path)
    assert runner.input_dtype == np.int8 and runner.output_dtype == np.int8
    # Measured 0.35-0.36x: in so small a network the per-channel scales, int32 biases and
    # graph structure weigh more than in the 0.24-0.26x of full-size MobileNets.
    assert full.size_bytes <= 0.4 * float_file.size_bytes
    outputs = runner.predict(x[:8])
    np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, atol=0.05)  # dequantized softmax


# -------------------------------------------------------------------------- runner
def test_strip_names_leaves_tensor_names_out_same_outputs_fewer_bytes(digits, tmp_path):
    x, _ = digits
    keras.utils.set_random_seed(0)
    model = mobilenet_v1(input_shape=INPUT_SHAPE, num_classes=10, alpha=0.1)
    named = export_tflite(model, tmp_path / "named.tflite", quantization="int8_full",
                          representative_data=x[:32], calibration_steps=32)
    bare = export_tflite(model, tmp_path / "bare.tflite", quantization="int8_full",
                         representative_data=x[:32], calibration_steps=32, strip_names=True)
    assert bare.names_stripped and not named.names_stripped
    assert "tensor names left out" in str(bare)
    # The fused ops' long tensor names are about a tenth of a small model's file (the
    # rest: weights and the per-channel quantization parameters, kept).
    assert bare.size_bytes < 0.95 * named.size_bytes
    assert os.path.getsize(bare.path) == bare.size_bytes
    content = open(bare.path, "rb").read()
    assert b"block7_pointwise" in open(named.path, "rb").read()
    assert b"block7_pointwise" not in content
    np.testing.assert_array_equal(TFLiteModel(bare.path).predict(x[:50]),
                                  TFLiteModel(named.path).predict(x[:50]))
    # The signature stays: the LiteRT signature runner still finds the input by name.
    interpreter = tflite_module_interpreter(bare.path)
    runner = interpreter.get_signature_runner()
    assert list(runner.get_input_details()) == list(
        tflite_module_interpreter(named.path).get_signature_runner().get_input_details())
    with pytest.raises(TypeError, match=r"`strip_names` must be True or False\. Received: "
                                        r"strip_names='yes'"):
        export_tflite(model, tmp_path / "x.tflite", strip_names="yes")
    assert not os.path.exists(tmp_path / "x.tflite")


def tflite_module_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - LiteRT is a dependency
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def test_runner_quantizes_input_and_dequantizes_output(exported, test_split):
    from ai_edge_litert.interpreter import Interpreter

    path = exported["int8_full"].path
    x = test_split[0][:5]
    # Independent reference: the raw interpreter fed by hand.
    interpreter = Interpreter(model_path=path)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    interpreter.resize_tensor_input(inp["index"], [len(x), *INPUT_SHAPE])
    interpreter.allocate_tensors()
    quantized = np.clip(np.round(x / in_scale + in_zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], quantized)
    interpreter.invoke()
    expected = (interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero) * out_scale

    runner = TFLiteModel(path)
    np.testing.assert_allclose(runner.predict(x), expected, rtol=0, atol=1e-7)
    # An array already of the file's input type is passed as is.
    np.testing.assert_allclose(runner.predict(quantized), expected, rtol=0, atol=1e-7)


def test_runner_batches_dynamic_and_fixed_batch_files(trained, exported, test_split,
                                                      tmp_path):
    x = test_split[0][:5]
    runner = TFLiteModel(exported["none"].path)
    assert runner.fixed_batch_size is None
    whole = runner.predict(x)
    np.testing.assert_allclose(runner.predict(x, batch_size=2), whole, atol=1e-6)
    np.testing.assert_allclose(runner.predict(x[:1]), whole[:1], atol=1e-6)

    fixed = TFLiteModel(_fixed_batch_file(trained, tmp_path / "fixed.tflite", 2))
    assert fixed.fixed_batch_size == 2
    assert fixed.input_shape == (2, *INPUT_SHAPE)
    # 5 samples in chunks of 2, the last one padded.
    np.testing.assert_allclose(fixed.predict(x), whole, atol=1e-5)
    np.testing.assert_allclose(fixed.predict(x, batch_size=4), whole, atol=1e-5)


def test_runner_falls_back_to_tf_lite_without_litert(exported, test_split, monkeypatch):
    x = test_split[0][:4]
    expected = TFLiteModel(exported["int8"].path).predict(x)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.warns(UserWarning, match=r"pip install keras_dnnopt\[litert\]"):
        runner = TFLiteModel(exported["int8"].path)
    assert runner.runtime == "tf.lite"
    assert isinstance(runner._interpreter, tf.lite.Interpreter)
    np.testing.assert_allclose(runner.predict(x), expected, atol=1e-6)


def test_runner_bad_input(exported, tmp_path):
    path = exported["none"].path
    runner = TFLiteModel(path, num_threads=1)  # the smallest valid thread count
    with pytest.raises(ValueError, match=r"`num_threads` must be >= 1. Received: num_threads=0"):
        TFLiteModel(path, num_threads=0)
    with pytest.raises(ValueError, match=r"shape \(None, 8, 8, 1\).*Received: x.shape=\(2, 8, 8\)"):
        runner.predict(np.zeros((2, 8, 8), "float32"))
    with pytest.raises(ValueError, match=r"Received: x.shape=\(2, 8, 8, 3\)"):
        runner.predict(np.zeros((2, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match=r"must hold 1 input array\(s\).*Received: 2"):
        runner.predict([np.zeros((1, *INPUT_SHAPE)), np.zeros((1, *INPUT_SHAPE))])
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        runner.predict(np.zeros((2, *INPUT_SHAPE), "float32"), batch_size=0)
    assert runner.predict(np.zeros((2, *INPUT_SHAPE), "float32"), batch_size=1).shape == (2, 10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TFLiteModel(tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ValueError, match="must be a valid .tflite file"):
        TFLiteModel(garbage)


# ------------------------------------------------------------------------ evaluation
def test_evaluate_tflite_matches_keras_evaluate(trained, exported, test_split):
    x, y = test_split
    keras_loss, keras_accuracy = trained.evaluate(x, y, verbose=0)
    result = evaluate_tflite(exported["none"].path, (x, y))
    assert result["num_samples"] == len(x)
    assert result["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert result["loss"] == pytest.approx(keras_loss, rel=1e-4)
    assert result["accuracy"] > 0.8


def test_evaluate_tflite_label_forms_and_datasets(exported, test_split):
    x, y = test_split
    path = exported["int8"].path
    predictions = TFLiteModel(path).predict(x)
    expected_accuracy = float(np.mean(np.argmax(predictions, axis=-1) == y))
    sparse = evaluate_tflite(path, (x, y))
    one_hot = evaluate_tflite(path, (x, np.eye(10, dtype="float32")[y]))
    batched = evaluate_tflite(path, tf.data.Dataset.from_tensor_slices((x, y)).batch(64))
    unbatched = evaluate_tflite(path, tf.data.Dataset.from_tensor_slices((x, y)))
    named = evaluate_tflite(path, (x, y), loss="sparse_categorical_crossentropy")
    for result in (sparse, one_hot, batched, unbatched, named):
        assert result["accuracy"] == pytest.approx(expected_accuracy)
        # Sparse and categorical cross-entropy clip the (exact) zeros of a quantized
        # softmax slightly differently.
        assert result["loss"] == pytest.approx(sparse["loss"], rel=1e-3)
    # A loss function is applied as given.
    constant = evaluate_tflite(path, (x, y), loss=lambda y_true, y_pred: tf.ones(len(y_true)))
    assert constant["loss"] == pytest.approx(1.0)


def test_evaluate_tflite_bad_data(exported, test_split):
    x, y = test_split
    path = exported["none"].path
    with pytest.raises(ValueError, match="must give labels"):
        evaluate_tflite(path, tf.data.Dataset.from_tensor_slices(x).batch(8))
    with pytest.raises(ValueError, match="as many labels as inputs.*397 inputs and 396 labels"):
        evaluate_tflite(path, (x, y[:-1]))
    with pytest.raises(ValueError, match=r"labels of shape \(397, 3\)"):
        evaluate_tflite(path, (x, np.zeros((len(x), 3))))
    with pytest.raises(ValueError, match="Argument `loss` must be"):
        evaluate_tflite(path, (x, y), loss=3)


def test_compare_outputs_matches_numpy_reference(trained, exported, test_split):
    x = test_split[0][:64]
    path = exported["int8"].path
    expected = trained.predict(x, verbose=0)
    actual = TFLiteModel(path).predict(x)
    diff = np.abs(expected.astype(np.float64) - actual)
    comparison = compare_outputs(trained, path, (x, test_split[1][:64]))
    assert comparison.max_abs_diff == pytest.approx(diff.max())
    assert comparison.mean_abs_diff == pytest.approx(diff.mean())
    agreement = np.mean(np.argmax(expected, -1) == np.argmax(actual, -1))
    assert comparison.top1_agreement == pytest.approx(agreement)
    from_dataset = compare_outputs(trained, path, tf.data.Dataset.from_tensor_slices(x).batch(16))
    assert from_dataset.max_abs_diff == pytest.approx(diff.max())


def test_compare_outputs_rejects_another_model(exported, test_split):
    other = keras.Sequential([keras.Input(shape=INPUT_SHAPE), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="outputs of `model` and of the file"):
        compare_outputs(other, exported["none"].path, test_split[0][:4])
    with pytest.raises(TypeError, match="must be a"):
        compare_outputs("not a model", exported["none"].path, test_split[0][:4])


# --------------------------------------------------------------- latency and sizes
def test_benchmark_tflite_statistics(exported):
    result = benchmark_tflite(exported["int8"].path, threads=1, runs=7, warmup=0)
    assert len(result.times_ms) == 7 and result.runs == 7
    assert result.min_ms <= result.p10_ms <= result.median_ms <= result.p90_ms <= result.max_ms
    assert result.median_ms == pytest.approx(float(np.median(result.times_ms)))
    assert result.mean_ms == pytest.approx(float(np.mean(result.times_ms)))
    assert (result.batch_size, result.threads, result.runtime) == (1, 1, "litert")
    assert result.to_dict()["throughput"] > 0
    batched = benchmark_tflite(exported["int8_full"].path, runs=3, warmup=1, batch_size=4)
    assert batched.batch_size == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(runs=0), "`runs` must be >= 1"),
    (dict(threads=0), "`threads` must be >= 1"),
    (dict(warmup=-1), "`warmup` must be >= 0"),
    (dict(batch_size=0), "`batch_size` must be >= 1"),
])
def test_benchmark_tflite_bad_arguments(exported, kwargs, message):
    with pytest.raises(ValueError, match=message):
        benchmark_tflite(exported["none"].path, **kwargs)


def test_benchmark_tflite_fixed_batch(trained, tmp_path):
    path = _fixed_batch_file(trained, tmp_path / "fixed.tflite", 1)
    assert benchmark_tflite(path, runs=1, warmup=0, batch_size=1).batch_size == 1
    with pytest.raises(ValueError, match="`batch_size` must be 1 .*fixed.*Received: batch_size=4"):
        benchmark_tflite(path, runs=1, batch_size=4)


def test_file_sizes_against_gzip(tmp_path, rng):
    noise = rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    zeros = bytes(4096)
    for name, content in (("noise.bin", noise), ("zeros.bin", zeros)):
        (tmp_path / name).write_bytes(content)
    noisy, flat = file_sizes(tmp_path / "noise.bin"), file_sizes(tmp_path / "zeros.bin")
    assert noisy.size_bytes == flat.size_bytes == 4096
    assert noisy.gzipped_size_bytes == len(gzip.compress(noise, compresslevel=9))
    assert flat.gzipped_size_bytes == len(gzip.compress(zeros, compresslevel=9))
    assert flat.gzipped_size_bytes < 100 < 4096 < noisy.gzipped_size_bytes
    with pytest.raises(FileNotFoundError, match="does not exist"):
        file_sizes(tmp_path / "missing.tflite")


# ------------------------------------------------------------------ export: bad input
def test_unknown_quantization_mode_lists_the_modes(tmp_path):
    with pytest.raises(ValueError, match="must be one of 'none', 'dynamic', 'float16', 'int8', "
                                         "'int8_full'. Received: quantization='int4'"):
        export_tflite(_tiny_dense(), tmp_path / "m.tflite", quantization="int4")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("mode", ["int8", "int8_full"])
def test_int8_needs_representative_data(tmp_path, mode):
    with pytest.raises(ValueError, match=f"`representative_data` is required for "
                                         f"quantization='{mode}'"):
        export_tflite(_tiny_dense(), tmp_path / "m.tflite", quantization=mode)
    assert not os.listdir(tmp_path)


@pytest.fixture
def captured_samples(monkeypatch):
    """Replaces the conversion by a recorder of the calibration samples it would get."""
    calls = []

    def fake_convert(model, quantization, samples):
        calls.append(samples)
        return b"TFL3 fake"

    monkeypatch.setattr(tflite_module, "_convert", fake_convert)
    return calls


def test_representative_data_of_wrong_shape(tmp_path, captured_samples):
    model = _small_cnn()
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"input shape \(8, 8, 1\) \(with or without a leading "
                                         r"batch dimension\). Received: an array of shape "
                                         r"\(10, 8, 8, 3\)"):
        export_tflite(model, path, "int8", representative_data=np.zeros((10, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"Received: an array of shape \(8, 8\)"):
        export_tflite(model, path, "int8_full",
                      representative_data=lambda: iter([[np.zeros((8, 8))]]))
    with pytest.raises(ValueError, match="at least one sample"):
        export_tflite(model, path, "int8", representative_data=np.zeros((0, *INPUT_SHAPE)))
    assert captured_samples == [] and not path.exists()
    # The right shape, with or without the batch dimension, passes.
    export_tflite(model, path, "int8", representative_data=np.zeros((3, *INPUT_SHAPE)))
    export_tflite(model, path, "int8", representative_data=[np.zeros(INPUT_SHAPE)])
    assert [len(s) for s in captured_samples] == [3, 1]


def test_representative_data_forms(digits, tmp_path, captured_samples):
    x, y = digits
    x = x[:10]
    model = _small_cnn()
    path = tmp_path / "m.tflite"
    forms = {
        "array": x,
        "dataset of x": tf.data.Dataset.from_tensor_slices(x),
        "batched dataset of (x, y)": tf.data.Dataset.from_tensor_slices((x, y[:10])).batch(3),
        "generator function (TFLite convention)": lambda: ([x[i:i + 1]] for i in range(10)),
        "generator object": (sample for sample in x),
    }
    for form in forms.values():
        export_tflite(model, path, "int8", representative_data=form)
    for samples in captured_samples:
        assert len(samples) == 10
        for index, sample in enumerate(samples):
            assert len(sample) == 1
            assert sample[0].shape == (1, *INPUT_SHAPE) and sample[0].dtype == np.float32
            np.testing.assert_array_equal(sample[0][0], x[index])
    export_tflite(model, path, "int8", representative_data=x, calibration_steps=4)
    assert len(captured_samples[-1]) == 4
    with pytest.raises(ValueError, match="`calibration_steps` must be >= 1"):
        export_tflite(model, path, "int8", representative_data=x, calibration_steps=0)
    with pytest.raises(ValueError, match="must be a NumPy array of input samples"):
        export_tflite(model, path, "int8", representative_data="digits")


def test_representative_data_ignored_with_warning_for_other_modes(tmp_path, captured_samples):
    with pytest.warns(UserWarning, match="only used by quantization='int8'"):
        export_tflite(_tiny_dense(), tmp_path / "m.tflite", "dynamic",
                      representative_data=np.zeros((2, 4)))
    assert captured_samples == [None]


def test_missing_folder_fails_before_converting(tmp_path, monkeypatch):
    def must_not_convert(*args):
        raise AssertionError("converted before checking the path")

    monkeypatch.setattr(tflite_module, "_convert", must_not_convert)
    missing = tmp_path / "no" / "such" / "folder" / "m.tflite"
    with pytest.raises(FileNotFoundError, match="folder of argument `path` does not exist"):
        export_tflite(_tiny_dense(), missing)
    with pytest.raises(ValueError, match="must name a file .*not a folder"):
        export_tflite(_tiny_dense(), tmp_path)
    with pytest.raises(TypeError, match="must be a file path"):
        export_tflite(_tiny_dense(), 3)
    assert not missing.parent.exists()


def test_model_of_the_wrong_kind(tmp_path, other_keras):
    with pytest.raises(TypeError, match="Argument `model`"):
        export_tflite("model", tmp_path / "m.tflite")
    foreign = other_keras.Sequential([other_keras.Input(shape=(4,)), other_keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="TF_USE_LEGACY_KERAS"):
        export_tflite(foreign, tmp_path / "m.tflite")


# --------------------------------------------------------------------- atomic write
class _Digamma(keras.layers.Layer):
    """An op TFLite has no builtin kernel for: the conversion really fails."""

    def call(self, inputs):
        return tf.math.digamma(inputs)


def test_failed_conversion_leaves_no_file_and_keeps_the_old_one(tmp_path):
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(_Digamma()(inputs)))
    new_path, old_path = tmp_path / "new.tflite", tmp_path / "old.tflite"
    old_path.write_bytes(b"previous export")
    for path in (new_path, old_path):
        with pytest.raises(Exception, match="Digamma"):
            export_tflite(model, path)
    assert not new_path.exists()
    assert old_path.read_bytes() == b"previous export"
    assert sorted(os.listdir(tmp_path)) == ["old.tflite"]  # no temporary file left


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous export")
    monkeypatch.setattr(tflite_module, "_convert", lambda *args: b"x" * 100_000)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(tflite_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export_tflite(_tiny_dense(), path)
    assert path.read_bytes() == b"previous export"
    assert os.listdir(tmp_path) == ["m.tflite"]
    monkeypatch.undo()
    monkeypatch.setattr(tflite_module, "_convert", lambda *args: b"x" * 100_000)
    export_tflite(_tiny_dense(), path)
    assert path.read_bytes() == b"x" * 100_000
    umask = os.umask(0)
    os.umask(umask)
    # The usual mode of a new file, not mkstemp's private 0o600.
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------ wrappers are stripped
def _spy_converted_model(monkeypatch):
    seen = []
    original = tflite_module._make_converter

    def spy(model, saved_model_dir):
        seen.append(model)
        return original(model, saved_model_dir)

    monkeypatch.setattr(tflite_module, "_make_converter", spy)
    return seen


def _constant_tensor(path, name_part, ndim=2):
    """The largest constant tensor of `ndim` dims whose name contains `name_part`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path))
    interpreter.allocate_tensors()
    found = []
    for detail in interpreter.get_tensor_details():
        if name_part in detail["name"] and len(detail["shape"]) == ndim:
            try:
                found.append(interpreter.get_tensor(detail["index"]))
            except ValueError:
                continue
    return max(found, key=lambda t: t.size)


@pytest.mark.skipif(not USING_TF_KERAS, reason="TF-MOT wraps tf_keras models only")
def test_tfmot_pruning_is_stripped_and_sparsity_kept(digits, tmp_path, monkeypatch):
    import tensorflow_model_optimization as tfmot

    x, y = digits
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.75, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(_small_cnn(), pruning_schedule=schedule)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    seen = _spy_converted_model(monkeypatch)
    result = export_tflite(pruned, tmp_path / "pruned.tflite")
    assert result.stripped == ("pruning",)
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
        PruneLowMagnitude as wrapper,
    )

    assert not any(isinstance(layer, wrapper) for layer in seen[0].layers)
    assert compare_outputs(pruned, result.path, x[:32]).max_abs_diff < 1e-5
    kernel = _constant_tensor(result.path, "dense", ndim=2)
    assert kernel.size == 512 * 48
    assert np.mean(kernel == 0) == pytest.approx(0.75, abs=0.01)


@pytest.mark.skipif(not USING_TF_KERAS, reason="TF-MOT wraps tf_keras models only")
def test_tfmot_clustering_is_stripped(digits, tmp_path):
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    clustered = clustering.cluster_weights(
        _small_cnn(), number_of_clusters=8,
        cluster_centroids_init=clustering.CentroidInitialization.LINEAR)
    result = export_tflite(clustered, tmp_path / "clustered.tflite")
    assert result.stripped == ("clustering",)
    assert compare_outputs(clustered, result.path, digits[0][:32]).max_abs_diff < 1e-5
    kernel = _constant_tensor(result.path, "dense", ndim=2)
    assert kernel.size == 512 * 48 and len(np.unique(kernel)) <= 8


@pytest.mark.skipif(not USING_TF_KERAS, reason="TF-MOT QAT works on tf_keras only")
def test_qat_model_converts_to_integer_without_representative_data(digits, exported,
                                                                   tmp_path):
    import tensorflow_model_optimization as tfmot

    x, y = digits
    qat = tfmot.quantization.keras.quantize_model(_small_cnn())
    qat.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    qat.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0)  # learns the ranges
    result = export_tflite(qat, tmp_path / "qat.tflite", quantization="int8")
    assert result.stripped == ()
    assert result.size_bytes <= 0.35 * exported["none"].size_bytes  # same architecture
    comparison = compare_outputs(qat, result.path, x[1400:1600])
    assert comparison.top1_agreement >= 0.95
    full = export_tflite(qat, tmp_path / "qat_full.tflite", quantization="int8_full")
    assert TFLiteModel(full.path).input_dtype == np.int8
    assert TFLiteModel(full.path).output_dtype == np.int8


@pytest.mark.skipif(USING_TF_KERAS, reason="the Keras 3 pruning hook of keras_dnnopt")
def test_keras3_pruning_hook_strips_only_pruned_models(tmp_path, monkeypatch):
    model = _tiny_dense()
    stripped_model = _tiny_dense()
    stripped_model.set_weights([np.ones((4, 3), "float32"), np.zeros(3, "float32")])
    calls = []

    def strip_pruning(m):
        calls.append(m)
        return stripped_model

    fake = types.ModuleType("keras_dnnopt.compression")
    fake.strip_pruning = strip_pruning
    fake.is_pruned = lambda m: True
    monkeypatch.setitem(sys.modules, "keras_dnnopt.compression", fake)
    x = np.arange(8, dtype="float32").reshape(2, 4)
    result = export_tflite(model, tmp_path / "m.tflite")
    assert calls == [model] and result.stripped == ("pruning",)
    # The file is the stripped model, not the original.
    np.testing.assert_allclose(TFLiteModel(result.path).predict(x), stripped_model.predict(x),
                               atol=1e-5)
    # A model that is not pruned is not stripped (strip_pruning would copy it).
    fake.is_pruned = lambda m: False
    seen = _spy_converted_model(monkeypatch)
    assert export_tflite(model, tmp_path / "m2.tflite").stripped == ()
    assert calls == [model] and seen == [model]
    del fake.is_pruned  # without `is_pruned`, a plain model has no compression wrapper
    assert export_tflite(model, tmp_path / "m3.tflite").stripped == ()
    assert calls == [model]


def test_pruned_model_of_this_package_exports_sparse(digits, tmp_path):
    compression = pytest.importorskip("keras_dnnopt.compression")
    x, y = digits
    pruned = compression.prune(_small_cnn(), target_sparsity=0.75, schedule="constant",
                               frequency=1)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0,
               callbacks=[compression.PruningCallback()])
    result = export_tflite(pruned, tmp_path / "pruned.tflite")
    assert result.stripped == ("pruning",)
    reference = compression.strip_pruning(pruned)
    assert compare_outputs(reference, result.path, x[:32]).max_abs_diff < 1e-5
    kernel = _constant_tensor(result.path, "dense", ndim=2)
    assert kernel.size == 512 * 48
    assert np.mean(kernel == 0) == pytest.approx(0.75, abs=0.01)


@pytest.mark.skipif(USING_TF_KERAS, reason="the Keras 3 pruning hook of keras_dnnopt")
def test_keras3_export_without_compression_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_dnnopt.compression", None)
    model = _tiny_dense()
    result = export_tflite(model, tmp_path / "m.tflite")
    assert result.stripped == ()
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(TFLiteModel(result.path).predict(x), model.predict(x, verbose=0),
                               atol=1e-5)
