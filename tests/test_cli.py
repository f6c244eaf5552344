import argparse
import json
import math
import re
import sys

import numpy as np
import pytest

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras
from keras_dnnopt.cli import main as cli
from keras_dnnopt.cli.main import main


def _digits(n=None):
    from sklearn.datasets import load_digits

    x = load_digits().images.astype("float32")[..., None]
    return x if n is None else x[:n]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny digits classifier that normalises inside (raw pixels 0..16 in), saved."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Rescaling(1.0 / 16.0),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def tflite_file(saved_model, tmp_path_factory):
    from keras_dnnopt.export import export_tflite

    model = keras.models.load_model(str(saved_model), compile=False)
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    export_tflite(model, str(path))
    return path


def _usage_error(capsys, argv):
    """Runs `main(argv)`, expects a usage error (exit status 2, one line
    `dnnopt COMMAND: error: ...`) and returns its stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dnnopt {argv[0]}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _runtime_error(capsys, argv):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dnnopt {argv[0]}: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------- info, profile
def test_info_names_the_keras_in_use(capsys):
    assert main(["info"]) == 0
    assert KERAS_NAME in capsys.readouterr().out


def test_profile_builder_json_matches_the_model(capsys):
    from keras_dnnopt import models

    assert main(["profile", "mobilenet_v1", "--input-shape", "32,32,3", "--num-classes", "10",
                 "--alpha", "0.25", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = models.mobilenet_v1(input_shape=(32, 32, 3), num_classes=10, alpha=0.25)
    assert data["params"] == model.count_params()
    assert data["macs"] > 0


def test_profile_saved_model_file(tmp_path, capsys):
    model = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    path = tmp_path / "m.keras"
    model.save(str(path))
    assert main(["profile", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Conv2D" in out and f"{model.count_params():,}" in out


def test_profile_rejects_missing_file_and_bad_shape(capsys):
    err = _usage_error(capsys, ["profile", "nope.keras"])
    assert "argument MODEL" in err and "Received: 'nope.keras'" in err
    err = _usage_error(capsys, ["profile", "mobilenet_v1", "--input-shape", "32,x,3"])
    assert "--input-shape must be comma-separated" in err
    err = _usage_error(capsys, ["profile", "mobilenet_v1", "--alpha", "0"])
    assert "argument --alpha" in err and "Received: '0'" in err


def test_unloadable_model_file_is_a_one_line_usage_error(tmp_path, capsys):
    path = tmp_path / "broken.keras"
    path.write_text("not a model")
    err = _usage_error(capsys, ["profile", str(path)])
    assert "argument MODEL: could not load the model file" in err


# -------------------------------------------------------------------------- export
@pytest.mark.parametrize("mode, tolerance", [("none", 1e-5), ("float16", 1e-2),
                                             ("dynamic", 2e-2)])
def test_export_float_modes_match_the_model(saved_model, tmp_path, capsys, mode, tolerance):
    from keras_dnnopt.export import TFLiteModel

    out = tmp_path / f"m_{mode}.tflite"
    assert main(["export", str(saved_model), str(out), "--quantization", mode]) == 0
    printed = capsys.readouterr().out
    assert f"{out.stat().st_size:,} bytes" in printed and "gzipped" in printed
    x = _digits(64)
    model = keras.models.load_model(str(saved_model), compile=False)
    expected = model.predict(x, verbose=0)
    actual = TFLiteModel(str(out)).predict(x)
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) < tolerance


def test_export_strip_names_writes_the_same_model_in_fewer_bytes(saved_model, tmp_path,
                                                                 capsys):
    from keras_dnnopt.export import TFLiteModel

    named, bare = tmp_path / "named.tflite", tmp_path / "bare.tflite"
    assert main(["export", str(saved_model), str(named)]) == 0
    assert main(["export", str(saved_model), str(bare), "--strip-names"]) == 0
    assert "tensor names left out" in capsys.readouterr().out
    assert bare.stat().st_size < named.stat().st_size
    x = _digits(16)
    np.testing.assert_array_equal(TFLiteModel(str(bare)).predict(x),
                                  TFLiteModel(str(named)).predict(x))


def test_export_int8_calibrates_on_a_dataset_and_evaluates(saved_model, tmp_path, capsys):
    from keras_dnnopt.data import load_dataset
    from keras_dnnopt.export import TFLiteModel

    out = tmp_path / "m_int8.tflite"
    assert main(["export", str(saved_model), str(out), "--quantization", "int8",
                 "--data", "digits", "--calibration-steps", "50", "--evaluate", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quantization"] == "int8" and result["size_bytes"] == out.stat().st_size
    runner = TFLiteModel(str(out))
    assert runner.input_dtype == np.float32  # int8 keeps float input and output
    model = keras.models.load_model(str(saved_model), compile=False)
    x = _digits(200)
    expected = model.predict(x, verbose=0)
    actual = runner.predict(x)
    assert np.mean(np.abs(actual - expected)) < 0.02
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) > 0.9
    # The accuracy is that of the file on the raw test split of digits.
    data = load_dataset("digits", validation_split=0.0, normalize=False)
    reference = np.mean(runner.predict(data.x_test).argmax(-1) == data.y_test)
    evaluation = result["evaluation"]
    assert evaluation["num_samples"] == len(data.y_test)
    assert evaluation["accuracy"] == pytest.approx(reference)
    keras_reference = np.mean(model.predict(data.x_test, verbose=0).argmax(-1) == data.y_test)
    assert evaluation["keras_accuracy"] == pytest.approx(keras_reference)


def test_export_int8_full_from_npy_file(saved_model, tmp_path, capsys):
    from keras_dnnopt.export import TFLiteModel

    samples = tmp_path / "samples.npy"
    np.save(samples, _digits(40))
    out = tmp_path / "m_full.tflite"
    assert main(["export", str(saved_model), str(out), "--quantization", "int8_full",
                 "--data", str(samples)]) == 0
    assert "int8_full" in capsys.readouterr().out
    runner = TFLiteModel(str(out))
    assert runner.input_dtype == np.int8 and runner.output_dtype == np.int8
    x = _digits(64)
    expected = keras.models.load_model(str(saved_model), compile=False).predict(x, verbose=0)
    assert np.mean(np.abs(runner.predict(x) - expected)) < 0.02


def test_export_evaluates_on_a_labelled_npz_file(saved_model, tmp_path, capsys):
    from keras_dnnopt.export import TFLiteModel

    rng = np.random.default_rng(0)
    x, y = _digits(100), rng.integers(0, 10, size=100)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "m.tflite"
    assert main(["export", str(saved_model), str(out), "--data", str(data), "--evaluate",
                 "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)["evaluation"]
    reference = np.mean(TFLiteModel(str(out)).predict(x).argmax(-1) == y)
    assert evaluation["num_samples"] == 100
    assert evaluation["accuracy"] == pytest.approx(reference)
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=x, b=y)
    err = _usage_error(capsys, ["export", str(saved_model), str(out), "--quantization",
                                "int8", "--data", str(bad)])
    assert "must hold its inputs as one of x, inputs, images" in err


def test_export_normalize_feeds_the_normalised_dataset(tmp_path, capsys):
    """With --normalize the evaluation data go through the dataset's normaliser: a
    model that expects normalised inputs gives the same accuracy as Keras on them."""
    from keras_dnnopt.data import load_dataset

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    path = tmp_path / "logits.keras"
    model.save(str(path))
    out = tmp_path / "m.tflite"
    assert main(["export", str(path), str(out), "--data", "digits", "--normalize",
                 "--evaluate", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)["evaluation"]
    data = load_dataset("digits", validation_split=0.0, normalize=True)
    x_test = np.asarray(data.normalizer(data.x_test))
    reference = np.mean(model.predict(x_test, verbose=0).argmax(-1) == data.y_test)
    assert evaluation["keras_accuracy"] == pytest.approx(reference)
    assert evaluation["accuracy"] == pytest.approx(reference, abs=1e-3)


def test_export_pruned_model_file_strips_the_wrappers(tmp_path, capsys):
    from keras_dnnopt.compression import prune
    from keras_dnnopt.export import TFLiteModel

    model = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    pruned = prune(model, target_sparsity=0.5, schedule="constant")
    path = tmp_path / "pruned.keras"
    pruned.save(str(path))  # on tf_keras it reloads only inside TF-MOT's prune_scope
    out = tmp_path / "pruned.tflite"
    assert main(["export", str(path), str(out)]) == 0
    assert "removed training wrappers: pruning" in capsys.readouterr().out
    x = _digits(16)
    np.testing.assert_allclose(TFLiteModel(str(out)).predict(x),
                               pruned.predict(x, verbose=0), atol=1e-4)


@pytest.mark.skipif(not USING_TF_KERAS, reason="QAT (TF-MOT) works on tf_keras only")
def test_export_qat_model_needs_no_data(tmp_path, capsys):
    from keras_dnnopt.compression import quantize
    from keras_dnnopt.export import TFLiteModel

    model = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "qat.h5"  # TF-MOT's QAT models reload from .h5, not from .keras
    quantize(model).save(str(path))
    out = tmp_path / "qat.tflite"
    assert main(["export", str(path), str(out), "--quantization", "int8_full"]) == 0
    assert TFLiteModel(str(out)).input_dtype == np.int8


def test_export_usage_errors(saved_model, tmp_path, capsys):
    out = str(tmp_path / "m.tflite")
    err = _usage_error(capsys, ["export", str(saved_model), out, "--quantization", "int8"])
    assert "argument --data: is required for --quantization int8" in err
    err = _usage_error(capsys, ["export", str(saved_model), out, "--quantization", "int4"])
    assert "argument --quantization: invalid choice: 'int4'" in err
    assert "none" in err and "int8_full" in err
    err = _usage_error(capsys, ["export", str(tmp_path / "missing.keras"), out])
    assert "argument MODEL: must be an existing file" in err and "missing.keras" in err
    err = _usage_error(capsys, ["export", str(saved_model), str(tmp_path / "no" / "m.tflite")])
    assert "argument OUT.tflite: must be in an existing folder" in err
    err = _usage_error(capsys, ["export", str(saved_model), str(tmp_path)])
    assert "argument OUT.tflite: must name a file" in err
    err = _usage_error(capsys, ["export", str(saved_model), out, "--calibration-steps", "0"])
    assert "argument --calibration-steps: must be an integer >= 1. Received: '0'" in err
    err = _usage_error(capsys, ["export", str(saved_model), out, "--data", "imagenet"])
    assert "argument --data: must be a dataset name" in err and "'imagenet'" in err
    err = _usage_error(capsys, ["export", str(saved_model), out, "--evaluate"])
    assert "argument --evaluate: needs labelled --data" in err
    samples = tmp_path / "x.npy"
    np.save(samples, _digits(4))
    err = _usage_error(capsys, ["export", str(saved_model), out, "--data", str(samples),
                                "--evaluate"])
    assert "argument --evaluate: needs labels" in err
    err = _usage_error(capsys, ["export", str(saved_model), out, "--data", str(samples),
                                "--normalize"])
    assert "argument --normalize" in err
    assert not (tmp_path / "m.tflite").exists()


def test_export_wrong_sample_shape_is_a_usage_error(saved_model, tmp_path, capsys):
    samples = tmp_path / "x.npy"
    np.save(samples, np.zeros((4, 28, 28, 1), "float32"))
    out = tmp_path / "m.tflite"
    err = _usage_error(capsys, ["export", str(saved_model), str(out), "--quantization",
                                "int8", "--data", str(samples)])
    assert "(28, 28, 1)" in err and "(8, 8, 1)" in err
    # A named dataset of another shape is refused before it is loaded (no download).
    err = _usage_error(capsys, ["export", str(saved_model), str(out), "--quantization",
                                "int8", "--data", "cifar10"])
    assert "--data: 'cifar10' gives samples of shape (32, 32, 3)" in err
    assert "download" not in err
    assert not out.exists()


# ----------------------------------------------------------------------- benchmark
def test_benchmark_prints_a_table(tflite_file, capsys):
    assert main(["benchmark", str(tflite_file), "--runs", "5", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "5 runs after 1 warm-up" in out
    median = float(re.search(r"\| median latency +\| +([0-9.e+-]+) ms \|", out).group(1))
    assert median > 0
    assert f"{tflite_file.stat().st_size:,} bytes" in out


def test_benchmark_json_has_the_keys(tflite_file, capsys):
    assert main(["benchmark", str(tflite_file), "--runs", "4", "--warmup", "0", "--threads",
                 "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
                "throughput", "size_bytes", "gzipped_size_bytes", "compression_ratio"):
        assert key in data
    assert data["runs"] == 4 and len(data["times_ms"]) == 4 and data["threads"] == 2
    assert data["min_ms"] <= data["median_ms"] <= data["max_ms"]
    assert data["size_bytes"] == tflite_file.stat().st_size
    assert 0 < data["gzipped_size_bytes"] < data["size_bytes"]


def test_benchmark_errors(tmp_path, tflite_file, capsys):
    err = _usage_error(capsys, ["benchmark", str(tmp_path / "none.tflite")])
    assert "argument FILE.tflite: must be an existing file" in err
    err = _usage_error(capsys, ["benchmark", str(tflite_file), "--runs", "0"])
    assert "argument --runs: must be an integer >= 1. Received: '0'" in err
    err = _usage_error(capsys, ["benchmark", str(tflite_file), "--warmup", "-1"])
    assert "argument --warmup: must be an integer >= 0" in err
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a flatbuffer")
    err = _usage_error(capsys, ["benchmark", str(bogus), "--runs", "1"])
    assert "argument FILE.tflite" in err and "valid .tflite file" in err


# ------------------------------------------------------------------------ lr-find
def test_lr_find_model_file_writes_a_plot(saved_model, tmp_path, capsys):
    plot = tmp_path / "lr.png"
    assert main(["lr-find", "--dataset", "digits", "--model", str(saved_model),
                 "--no-normalize", "--batch-size", "16", "--steps", "6", "--min-lr", "1e-4",
                 "--max-lr", "1", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    suggested = float(re.search(r"Suggested learning rate \(steepest\): (\S+)", out).group(1))
    assert 1e-4 <= suggested <= 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # builds and traces a MobileNet: about 15 s on a shared CPU
def test_lr_find_builder_on_normalised_digits(capsys):
    assert main(["lr-find", "--model", "mobilenet_v1", "--alpha", "0.25", "--batch-size",
                 "16", "--steps", "6", "--min-lr", "1e-4", "--max-lr", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == 6 and all(math.isfinite(v) for v in data["losses"])
    assert 1e-4 <= data["suggested_learning_rate"] <= 1.0


def test_lr_find_model_file_json(saved_model, capsys):
    assert main(["lr-find", "--model", str(saved_model), "--no-normalize", "--optimizer",
                 "adam", "--steps", "5", "--min-lr", "1e-3", "--max-lr", "1e-1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == len(data["losses"]) == len(data["smoothed_losses"]) == 5
    # The sweep follows LRFinder's exponential closed form.
    expected = [1e-3 * 100 ** (i / 4) for i in range(5)]
    np.testing.assert_allclose(data["learning_rates"], expected, rtol=1e-6)
    assert all(math.isfinite(v) and v > 0 for v in data["losses"])
    assert data["suggested_learning_rate"] in data["learning_rates"]


def test_lr_find_errors(saved_model, tmp_path, capsys, monkeypatch):
    err = _usage_error(capsys, ["lr-find", "--min-lr", "1", "--max-lr", "0.1"])
    assert "argument --max-lr: must be > --min-lr" in err
    err = _usage_error(capsys, ["lr-find", "--steps", "2"])
    assert "argument --steps: must be >= 3" in err
    err = _usage_error(capsys, ["lr-find", "--dataset", "imagenet"])
    assert "argument --dataset: must be a dataset name" in err
    err = _usage_error(capsys, ["lr-find", "--optimizer", "rmsprop"])
    assert "argument --optimizer: invalid choice: 'rmsprop'" in err
    err = _usage_error(capsys, ["lr-find", "--plot", str(tmp_path / "lr.xyz")])
    assert "argument --plot" in err and "lr.xyz" in err
    err = _usage_error(capsys, ["lr-find", "--plot", str(tmp_path / "no" / "lr.png")])
    assert "argument --plot: must be in an existing folder" in err
    # A model file of another input shape than the dataset's.
    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input(shape=(4, 4, 1)), keras.layers.Flatten(),
                      keras.layers.Dense(10)]).save(str(other))
    err = _usage_error(capsys, ["lr-find", "--model", str(other), "--steps", "3"])
    assert "(4, 4, 1)" in err and "(8, 8, 1)" in err
    # matplotlib missing: the error names the extra, before any training.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    err = _runtime_error(capsys, ["lr-find", "--plot", str(tmp_path / "lr.png")])
    assert "pip install keras_dnnopt[viz]" in err


# ------------------------------------------------------------------------- help
def _subparsers():
    parser = cli._build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_optimize_is_listed_first():
    parser, choices = _subparsers()
    assert list(choices)[0] == "optimize"
    assert {"info", "profile", "export", "benchmark", "lr-find"} <= set(choices)
    listing = parser.format_help()
    assert listing.index("optimize") < listing.index("profile")


def test_every_help_documents_every_option():
    _, choices = _subparsers()
    for name, subparser in choices.items():
        text = subparser.format_help()
        for action in subparser._actions:
            for option in action.option_strings:
                assert option in text, f"dnnopt {name} --help lacks {option}"
            if not action.option_strings:
                assert (action.metavar or action.dest) in text
            if name != "optimize" and not isinstance(action, argparse._HelpAction):
                assert action.help, f"dnnopt {name}: {action.dest} has no help text"
        if name not in ("optimize",):
            assert "Example" in text and f"dnnopt {name}" in text
    export_help = choices["export"].format_help()
    for mode in cli.QUANTIZATION_MODES:
        assert mode in export_help
    assert "(default: 100)" in export_help  # --calibration-steps


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["benchmark", "--help"])
    assert info.value.code == 0
    assert "--threads" in capsys.readouterr().out


def test_cli_lists_match_the_package():
    from keras_dnnopt.callbacks.lr_finder import SUGGESTION_METHODS
    from keras_dnnopt.data.datasets import DATASET_NAMES
    from keras_dnnopt.export import QUANTIZATION_MODES

    assert cli.QUANTIZATION_MODES == QUANTIZATION_MODES
    assert cli.DATASETS == DATASET_NAMES
    assert cli.SUGGESTION_METHODS == SUGGESTION_METHODS
