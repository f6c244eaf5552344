"""`dnnopt optimize` on the user's own data and model, and regression end to end: a `.npz`
file (`--data`), a trained `.keras` model (`--model`, the baseline, compressed itself),
`--task regression` on scikit-learn's bundled diabetes set (an MLP, MSE/RMSE/MAE in the
report, `--max-rmse` as a budget), and the one-line errors (exit 2, OUT untouched) for
bad files, shapes and contradictory settings, under the Keras in use."""

import json
import os

import numpy as np
import pytest

from keras_dnnopt.backend import keras
from keras_dnnopt.cli.main import main
from keras_dnnopt.evaluation import evaluate_report
from keras_dnnopt.export import TFLiteModel
from keras_dnnopt.pipeline import Budget, ConfigError, load_config, optimize
from keras_dnnopt.pipeline.budget import describe_violation

# A short chain: every stage runs, each for an epoch or two.
SHORT = {
    "export": {"latency_runs": 3},
    "quantize": {"calibration_steps": 2, "epochs": 1},
    "report": {"gradcam_images": 2},
    "baseline": {"epochs": 3, "learning_rate": 0.05},
    "student": {"epochs": 1},
    "distill": {"epochs": 2, "learning_rate": 0.05},
    "prune": {"epochs": 1},
}


def _config(overrides):
    merged = json.loads(json.dumps(SHORT))
    for key, value in overrides.items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    return load_config(None, merged)


def _tree(folder):
    """Every file under `folder` with its bytes, to prove a folder untouched."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


# -- regression on tabular data, the fixed chain ------------------------------------------

@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("regression")
    config = _config({"dataset": "diabetes", "task": "regression"})
    card = optimize(config, str(out), log=lambda text: None)
    return out, config, card


def test_regression_runs_every_stage_with_an_mlp_and_reports_rmse(regression_run):
    out, config, card = regression_run
    stages = {stage["name"]: stage for stage in card["stages"]}
    assert list(stages) == ["data", "baseline", "student", "distill", "prune", "quantize",
                            "export"]
    from keras_dnnopt.backend import USING_TF_KERAS

    # On tf_keras `quantize.method: auto` takes PTQ for regression, and says why.
    quantized = not USING_TF_KERAS
    assert ("post-training" in stages["quantize"]["summary"]) != quantized
    if not quantized:
        assert "TF-MOT's QAT starts its activation ranges" in stages["quantize"]["summary"]
    for name in ("baseline", "student", "distill", "prune", "export") + (
            ("quantize",) if quantized else ()):
        metrics = stages[name]["metrics"]
        assert "accuracy" not in metrics
        assert metrics["rmse"] == pytest.approx(np.sqrt(metrics["mse"]))
        assert metrics["mae"] <= metrics["rmse"] + 1e-9
    baseline = keras.models.load_model(str(out / "stages" / "2_baseline" / "model.keras"),
                                       compile=False)
    assert any(isinstance(layer, keras.layers.Dense) for layer in baseline.layers)
    assert not any(isinstance(layer, keras.layers.Conv2D) for layer in baseline.layers)
    # The baseline learned something: better than predicting the training mean.
    dataset = card["dataset"]
    assert dataset["task"] == "regression" and dataset["input_shape"] == [10]
    assert stages["baseline"]["metrics"]["r2"] > 0.2
    report = (out / "report.md").read_text()
    assert "| RMSE | MAE | R² |" in report and "Accuracy" not in report.split("## ")[1]
    assert "Confusion" not in report and "confusion.png" not in os.listdir(out / "plots")


def test_regression_file_predicts_targets_in_their_own_units(regression_run):
    out, config, card = regression_run
    from keras_dnnopt.data import load_dataset

    data = load_dataset("diabetes", task="regression", validation_split=0.1, test_split=0.2,
                        seed=0)
    x = np.asarray(data.normalizer(data.x_test), dtype="float32")
    # The final int8 file, checked against the targets independently of the pipeline.
    predicted = TFLiteModel(str(out / "model.tflite")).predict(x).reshape(-1)
    rmse = float(np.sqrt(np.mean((predicted - data.y_test.reshape(-1)) ** 2)))
    final = next(s for s in card["stages"] if s["name"] == "export")["metrics"]
    assert rmse == pytest.approx(final["rmse"], rel=1e-4)
    assert rmse < float(np.std(data.y_test)) * 0.95  # better than the mean, in raw units


def test_export_strip_names_redoes_only_the_export_with_the_same_outputs(regression_run,
                                                                        tmp_path):
    import shutil

    out, config, card = regression_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    stripped = _config({"dataset": "diabetes", "task": "regression",
                        "export": {"strip_names": True}})
    lines = []
    new_card = optimize(stripped, str(again), overwrite=True, log=lines.append)
    export = next(s for s in new_card["stages"] if s["name"] == "export")
    assert "tensor names left out" in export["summary"]
    # Only the export stage ran again (its configuration changed).
    before = {s["name"]: s for s in card["stages"]}
    for stage in new_card["stages"]:
        if stage["name"] != "export":
            assert stage["metrics"] == before[stage["name"]]["metrics"]
    assert export["metrics"]["size_bytes"] < before["export"]["metrics"]["size_bytes"]
    assert export["metrics"]["rmse"] == before["export"]["metrics"]["rmse"]
    x = np.random.default_rng(0).standard_normal((8, 10)).astype("float32")
    np.testing.assert_array_equal(TFLiteModel(str(again / "model.tflite")).predict(x),
                                  TFLiteModel(str(out / "model.tflite")).predict(x))


# -- regression under a budget ------------------------------------------------------------

def test_regression_search_meets_max_rmse_and_size(tmp_path, monkeypatch):
    from keras_dnnopt.pipeline import search as search_module

    # One candidate's file does not run (as when XNNPACK refuses an int8 file): it is
    # dropped with the reason, and the search goes on.
    evaluate = search_module._Search.evaluate

    def failing(self, candidate, epochs, folder):
        if candidate.alpha == 0.25 and candidate.depth == 2:
            raise ValueError("failed to create XNNPACK runtime")
        return evaluate(self, candidate, epochs, folder)

    monkeypatch.setattr(search_module._Search, "evaluate", failing)
    config = load_config(None, {
        "dataset": "diabetes", "task": "regression", "baseline": {"epochs": 3},
        "export": {"latency_runs": 3}, "quantize": {"calibration_steps": 2},
        "budget": {"max_size": "20KB", "max_rmse": 80.0},
        "search": {"alphas": [0.25, 1.0], "depths": [1, 2], "prune_ratios": [0.0],
                   "quantizations": ["int8_ptq"], "distill": [True], "trials": 4,
                   "epochs": 3, "rungs": 2, "eta": 2}})
    assert config["stages"] == ["data", "baseline", "search"]
    card = optimize(config, str(tmp_path), log=lambda text: None)
    search = card["search"]
    chosen = next(row for row in search["trials"] if row["key"] == search["chosen"])
    assert chosen["rmse"] <= 80.0 and chosen["size_bytes"] <= 20000
    assert chosen["describe"].startswith("MLP width")
    trained = [row for row in search["trials"] if row.get("val_rmse") is not None]
    assert len(trained) >= 2 and all(row.get("val_accuracy") is None for row in trained)
    # The chosen file, measured again here.
    assert os.path.getsize(tmp_path / "model.tflite") == chosen["size_bytes"]
    assert "Val. RMSE" in (tmp_path / "report.md").read_text()
    failed = rows_by_key(search)["a0.25-r10-d2-p0-int8_ptq-kd"]
    assert failed["dropped"] == "failed: failed to create XNNPACK runtime"
    assert failed.get("val_rmse") is None and search["chosen"] != failed["key"]


def rows_by_key(search):
    return {row["key"]: row for row in search["trials"]}


def test_max_rmse_is_a_budget_for_regression_only():
    budget = Budget(max_rmse=50.0)
    assert budget.violations({"rmse": 50.0}) == []
    assert budget.violations({"rmse": 50.01}) == [("max_rmse", 50.01, 50.0)]
    assert describe_violation("max_rmse", 51.0, 50.0) == "RMSE 51 > 50"
    assert Budget.from_dict(budget.to_dict()) == budget
    with pytest.raises(ValueError, match=r"`max_rmse` must be a number > 0.*max_rmse=-1"):
        Budget(max_rmse=-1)
    with pytest.raises(ConfigError, match=r"`budget.min_accuracy` \(--min-accuracy\) applies "
                                          r"to classification"):
        load_config(None, {"task": "regression", "budget": {"min_accuracy": 0.9}})
    with pytest.raises(ConfigError, match=r"`budget.max_rmse` \(--max-rmse\) applies to "
                                          r"regression"):
        load_config(None, {"budget": {"max_rmse": 3.0}})


# -- the user's data and model -----------------------------------------------------------

@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Digits as the user's .npz file, and a small CNN of theirs trained on it (raw pixels,
    their own scaling inside the model)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("own")
    digits = load_digits()
    x = digits.images.astype("float32")[..., None]
    y = digits.target.astype("int64")
    data = folder / "digits.npz"
    np.savez(data, x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 16),
        keras.layers.Conv2D(16, 3, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.Conv2D(24, 3, strides=2, padding="same"),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")],
        name="users_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=64, verbose=0)
    path = folder / "mine.keras"
    model.save(path)
    accuracy = float(evaluate_report(model, (x[1400:], y[1400:]))["accuracy"])
    return folder, data, path, accuracy


def test_own_model_is_the_baseline_and_is_compressed_itself(own, tmp_path):
    folder, data, path, accuracy = own
    config = _config({"dataset": str(data), "model": str(path)})
    assert config["stages"] == ["data", "baseline", "prune", "quantize", "export"]
    card = optimize(config, str(tmp_path), log=lambda text: None)
    stages = {stage["name"]: stage for stage in card["stages"]}
    # Its score is the reference, measured on the data as given (no normalisation).
    assert stages["baseline"]["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert "your model mine.keras" in stages["baseline"]["summary"]
    final = keras.models.load_model(str(tmp_path / "stages" / "5_prune" / "model.keras"),
                                    compile=False)
    # The pruned model is the user's architecture, not a MobileNet.
    assert [type(layer).__name__ for layer in final.layers] == [
        type(layer).__name__ for layer in keras.models.load_model(path).layers]
    assert stages["export"]["metrics"]["accuracy"] > accuracy - 0.1
    assert os.path.isfile(tmp_path / "model.tflite")


def test_own_model_search_prunes_its_channels_under_a_size_budget(own, tmp_path):
    folder, data, path, accuracy = own
    user = keras.models.load_model(path)
    config = load_config(None, {
        "dataset": str(data), "model": str(path),
        "export": {"latency_runs": 3}, "quantize": {"calibration_steps": 2},
        "budget": {"max_macs": 0.8 * _macs(user)},
        "search": {"prune_ratios": [0.0, 0.5], "quantizations": ["int8_ptq"],
                   "distill": [True], "trials": 2, "epochs": 2, "rungs": 1}})
    card = optimize(config, str(tmp_path), log=lambda text: None)
    search = card["search"]
    rows = {row["key"]: row for row in search["trials"]}
    assert set(rows) == {"user-p0-int8_ptq-kd", "user-p0.5-int8_ptq-kd"}
    assert rows["user-p0-int8_ptq-kd"]["dropped"].startswith("cannot fit before training")
    assert search["chosen"] == "user-p0.5-int8_ptq-kd"
    chosen = rows[search["chosen"]]
    assert chosen["describe"].startswith("your model, 50% channels pruned")
    assert chosen["accuracy"] > accuracy - 0.1  # started from the trained weights
    unchanged = keras.models.load_model(path)
    np.testing.assert_array_equal(unchanged.get_weights()[2], user.get_weights()[2])


def _macs(model):
    from keras_dnnopt.profiling import profile

    return int(profile(model).macs)


# -- bad input: one line, exit 2, nothing written -----------------------------------------

def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["optimize", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dnnopt optimize: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture()
def earlier_out(tmp_path):
    """An output folder of an earlier run (any files), to prove it untouched."""
    out = tmp_path / "out"
    (out / "stages").mkdir(parents=True)
    (out / "report.md").write_text("an earlier report")
    (out / "model.tflite").write_bytes(b"earlier")
    return out


def test_bad_data_files_are_one_line_errors_and_leave_out_alone(tmp_path, earlier_out,
                                                                  capsys):
    before = _tree(earlier_out)
    rng = np.random.default_rng(0)
    wrong_key = tmp_path / "wrong_key.npz"
    np.savez(wrong_key, x=rng.normal(size=(20, 4)), y=np.arange(20) % 2)
    err = _cli_error(["--data", str(wrong_key), "--out", str(earlier_out),
                      "--overwrite"], capsys)
    assert "x_train" in err and "wrong_key.npz" in err
    lengths = tmp_path / "lengths.npz"
    np.savez(lengths, x_train=rng.normal(size=(20, 4)), y_train=np.arange(19) % 2)
    err = _cli_error(["--data", str(lengths), "--out", str(earlier_out), "--overwrite"],
                     capsys)
    assert "20" in err and "19" in err
    floats = tmp_path / "floats.npz"
    np.savez(floats, x_train=rng.normal(size=(40, 4)), y_train=rng.normal(size=40))
    err = _cli_error(["--data", str(floats), "--out", str(earlier_out), "--overwrite"],
                     capsys)
    assert "regression" in err
    err = _cli_error(["--data", str(tmp_path / "missing.npz"), "--out", str(earlier_out)],
                     capsys)
    assert "--data: must be an existing .npz file" in err
    err = _cli_error(["--data", str(floats), "--dataset", "digits", "--out",
                      str(earlier_out)], capsys)
    assert "either --dataset or --data" in err
    err = _cli_error(["--dataset", "digits", "--task", "regression", "--out",
                      str(earlier_out), "--overwrite"], capsys)
    assert "regression" in err
    err = _cli_error(["--dataset", "diabetes", "--task", "regression", "--min-accuracy",
                      "0.9", "--out", str(earlier_out), "--overwrite"], capsys)
    assert "--max-rmse" in err
    assert _tree(earlier_out) == before


def test_bad_models_are_one_line_errors_and_leave_out_alone(own, tmp_path, earlier_out,
                                                            capsys):
    folder, data, path, _ = own
    before = _tree(earlier_out)
    wrong_shape = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(),
                                    keras.layers.Dense(10, activation="softmax")])
    wrong_shape.save(tmp_path / "wrong_shape.keras")
    err = _cli_error(["--data", str(data), "--model", str(tmp_path / "wrong_shape.keras"),
                      "--out", str(earlier_out), "--overwrite"], capsys)
    assert "`model` takes inputs of shape (16, 16, 1)" in err and "(8, 8, 1)" in err
    wrong_classes = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                      keras.layers.Dense(3, activation="softmax")])
    wrong_classes.save(tmp_path / "wrong_classes.keras")
    err = _cli_error(["--data", str(data), "--model", str(tmp_path / "wrong_classes.keras"),
                      "--out", str(earlier_out), "--overwrite"], capsys)
    assert "10 classes" in err
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    err = _cli_error(["--data", str(data), "--model", str(broken), "--out",
                      str(earlier_out), "--overwrite"], capsys)
    assert "`model` could not be loaded" in err and "Keras in use" in err
    err = _cli_error(["--model", str(tmp_path / "none.keras"), "--out", str(earlier_out)],
                     capsys)
    assert "--model: must be an existing .keras file" in err
    assert _tree(earlier_out) == before


def test_fold_output_rescaling_keeps_the_function_and_removes_the_layer():
    from keras_dnnopt.models import fold_output_rescaling, mlp

    keras.utils.set_random_seed(0)
    model = mlp((6,), depth=2, width=8, task="regression", target_mean=150.0,
                target_std=70.0)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    folded = fold_output_rescaling(model)
    assert isinstance(model.layers[-1], keras.layers.Rescaling)
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-3)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # the given model is unchanged
    plain = mlp((6,), 3, depth=1, width=4)
    assert fold_output_rescaling(plain) is plain  # nothing to fold
