"""The examples run end to end, so that they cannot rot (slow: `pytest -m slow`).

Each script runs in a child process under the Keras of this test run
(`TF_USE_LEGACY_KERAS` passes through), with small but real arguments; the test checks the
exit code, the final `Result:` line (accuracies above a floor far above chance, 0.1) and
the files the script writes.
"""

import os
import re

import pytest

from tests.subprocess_helpers import ROOT, run_python

EXAMPLES = os.path.join(ROOT, "examples")


def run_example(name, args, timeout=300):
    completed = run_python(path=os.path.join(EXAMPLES, name), args=[str(a) for a in args],
                           timeout=timeout)
    output = f"--- stdout:\n{completed.stdout[-4000:]}\n--- stderr:\n{completed.stderr[-4000:]}"
    assert completed.returncode == 0, output
    lines = [line for line in completed.stdout.splitlines() if line.startswith("Result:")]
    assert lines, output
    # `Result: key=value key=value ...`; values are numbers, `mean+-std` or paths.
    fields = dict(item.split("=", 1) for item in lines[-1][len("Result:"):].split())
    return fields, completed.stdout


def number(text):
    return float(re.match(r"[-+]?[0-9.]+(e[-+]?\d+)?", text).group(0))


@pytest.mark.slow
def test_train_digits():
    # Batch 16: enough steps in 5 epochs for batch norm's moving statistics to settle on
    # weights that change more slowly; 3 epochs of batch 64 still evaluate near chance.
    fields, stdout = run_example("train_digits.py",
                                 ["--epochs", 5, "--batch-size", 16, "--alpha", 0.25])
    assert "Test accuracy on digits" in stdout
    assert number(fields["test_accuracy"]) > 0.5, stdout


@pytest.mark.slow
def test_structure_separable():
    fields, stdout = run_example("structure_separable.py",
                                 ["--epochs", 4, "--finetune-epochs", 2, "--batch-size", 32,
                                  "--alpha", 0.25, "--latency-runs", 5])
    assert set(fields) == {"mobilenet_v1", "plain_cnn", "user_cnn", "separable"}
    for name in ("mobilenet_v1", "plain_cnn", "user_cnn"):
        assert number(fields[name]) > 0.5, (name, stdout)
    # Two short fine-tuning epochs after the rewrite: well above chance (0.1), not more.
    assert number(fields["separable"]) > 0.3, stdout
    assert "| separable |" in stdout and "| plain_cnn |" in stdout


@pytest.mark.slow
def test_schedules_and_callbacks(tmp_path):
    fields, stdout = run_example("schedules_and_callbacks.py",
                                 ["--epochs", 6, "--out", tmp_path])
    assert number(fields["suggested_lr"]) > 0
    assert number(fields["one_cycle"]) > 0.5, stdout
    assert number(fields["warmup_cosine"]) > 0.5, stdout
    pngs = {"lr_finder.png", "schedule_one_cycle.png", "schedule_warmup_cosine.png",
            "history_one_cycle.png", "history_warmup_cosine.png"}
    assert pngs <= set(os.listdir(tmp_path))
    for png in pngs:
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_distillation_digits():
    fields, stdout = run_example("distillation_digits.py",
                                 ["--epochs", 20, "--teacher-epochs", 4])
    for name in ("teacher", "student_alone", "student_distilled"):
        assert number(fields[name]) > 0.5, (name, stdout)


@pytest.mark.slow
def test_pruning_digits(tmp_path):
    fields, stdout = run_example("pruning_digits.py",
                                 ["--epochs", 3, "--prune-epochs", 3, "--width", 16,
                                  "--out", tmp_path])
    assert number(fields["dense_accuracy"]) > 0.5, stdout
    assert number(fields["pruned_accuracy"]) > 0.5, stdout
    # The target sparsity is reached (over the pruned kernels) and gzip sees it.
    assert number(fields["sparsity"]) > 0.7, stdout
    assert number(fields["gzip_ratio"]) > 1.5, stdout
    # Channel pruning: the MAC budget met, the raw file smaller, still a digit classifier.
    assert 0.45 <= number(fields["channels_macs_ratio"]) <= 0.5, stdout
    assert number(fields["channels_size_ratio"]) < 0.75, stdout
    assert number(fields["channels_accuracy"]) > 0.5, stdout
    assert {"dense.tflite", "pruned.tflite", "channels.tflite"} <= set(os.listdir(tmp_path))


@pytest.mark.slow
def test_quantization_export(tmp_path):
    fields, stdout = run_example("quantization_export.py",
                                 ["--epochs", 4, "--qat-epochs", 1, "--alpha", 0.25,
                                  "--benchmark-runs", 5, "--out", tmp_path])
    modes = ["keras", "none", "dynamic", "float16", "int8_full"]
    expected = modes + ["qat_int8"]  # QAT on both Kerases
    assert list(fields) == expected
    for name in expected:
        assert number(fields[name]) > 0.5, (name, stdout)
    # A float export reproduces the Keras model's accuracy (within one of 359 images).
    assert abs(number(fields["none"]) - number(fields["keras"])) < 0.003, stdout
    written = set(os.listdir(tmp_path))
    assert {f"mobilenet_{m}.tflite" for m in modes[1:]} <= written


@pytest.mark.slow
def test_tuning_digits(tmp_path):
    fields, stdout = run_example("tuning_digits.py",
                                 ["--trials", 2, "--epochs", 5, "--folds", 2,
                                  "--out", tmp_path])
    assert number(fields["best_val_accuracy"]) > 0.5, stdout
    assert number(fields["cv_accuracy"]) > 0.5, stdout
    assert number(fields["test_accuracy"]) > 0.5, stdout
    assert os.path.isdir(tmp_path / "mobilenet_digits")


@pytest.mark.slow
def test_gradcam_digits(tmp_path):
    fields, stdout = run_example("gradcam_digits.py",
                                 ["--images", 3, "--out", tmp_path])
    assert number(fields["test_accuracy"]) > 0.5, stdout
    # Blanking the pixels Grad-CAM points at hurts the prediction more than random ones
    # (on a trained model: the default 10 epochs; after 4 it need not hold).
    assert number(fields["drop_gradcam"]) > number(fields["drop_random"]), stdout
    path = tmp_path / "gradcam_saliency_grid.png"
    assert fields["png"] == str(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_distributed_digits():
    # Two logical CPU devices under MirroredStrategy: the distributed path, on one machine.
    fields, stdout = run_example("distributed_digits.py",
                                 ["--strategy", "mirrored", "--split-cpu", 2, "--epochs", 10])
    assert "MirroredStrategy, 2 replica(s)" in stdout
    assert number(fields["test_accuracy"]) > 0.5, stdout
