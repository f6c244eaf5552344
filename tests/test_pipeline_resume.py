"""`dnnopt optimize` is reproducible and survives interruption: the same seed gives the same
numbers, Ctrl-C says where it stopped (exit 130), a run killed in a training stage or in
the export resumes and ends with the numbers of an uninterrupted run, and a rerun with other
settings is refused unless `--overwrite` is given. Each run is a real `dnnopt optimize` in a
child process, on a tiny configuration."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest

from keras_dnnopt.backend import keras
from keras_dnnopt.pipeline import stages
from tests.subprocess_helpers import ROOT, child_env

# A training stage and the export are what resuming is about; the stages between them
# train the same way (`stages._fit`) and are left out to keep the file fast.
TINY = """\
batch_size: 128
verbose: lines
stages: [data, baseline, export]
data: {augment: true}
baseline: {alpha: 0.25, epochs: 3, warmup_epochs: 1, dropout: 0.1}
quantize: {calibration_steps: 2}
export: {latency_runs: 2}
report: {gradcam_images: 1, plots: false}
"""

# Numbers that are timings, and the fields that say when or how long: left out of the
# comparison (everything else in metrics.json must be equal, exactly).
TIMING_KEYS = ("latency", "seconds", "created", "command")


def _command(out, config, *extra):
    code = "import sys; from keras_dnnopt.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "optimize", "--dataset", "digits", "--seed", "0",
            "--config", str(config), "--out", str(out), *extra]


def _run(out, config, *extra):
    return subprocess.run(_command(out, config, *extra), env=child_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _run_until(out, config, ready, sig):
    """Starts a run, sends `sig` as soon as `ready()` is true, and waits for the end."""
    process = subprocess.Popen(_command(out, config), env=child_env(), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                out_text, err_text = process.communicate()
                pytest.fail(f"the run ended before the signal:\n{out_text}\n{err_text}")
            time.sleep(0.05)
        process.send_signal(sig)
        out_text, err_text = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out_text, err_text


def _without_timings(value):
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items()
                if not any(word in key for word in TIMING_KEYS)}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def _metrics(out):
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as handle:
        return _without_timings(json.load(handle))


def _epoch_done(out, stage):
    """True once the stage's `BackupAndRestore` folder holds a finished epoch (its
    metadata on Keras 3, its checkpoint index on tf_keras; both written last)."""
    backup = os.path.join(out, ".partial", stage, "backup")
    return lambda: (os.path.isfile(os.path.join(backup, "training_metadata.json"))
                    or os.path.isfile(os.path.join(backup, "chief", "checkpoint")))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config):
    """One uninterrupted run, shared by the tests."""
    out = tmp_path_factory.mktemp("reference")
    completed = _run(out, config)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out


class _StopAtEpoch(keras.callbacks.Callback):
    """Ctrl-C as the second epoch begins: the first one is finished and backed up."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_between_epochs_names_the_epoch_it_resumes_at(tmp_path):
    # The race of a Ctrl-C after an epoch's backup, before the next epoch's start: the
    # run must name the next epoch (the one it resumes at), not the finished one.
    import numpy as np

    backup = str(tmp_path / "backup")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[stages._backup_callback(backup), _StopAtEpoch()])
    assert stages.backup_epoch(backup) == 1
    run = types.SimpleNamespace(current_epoch=0, current_backup=backup, current_epochs=3)
    assert stages.interrupted_epoch(run) == 2
    run.current_epoch = 1  # the second epoch had begun
    assert stages.interrupted_epoch(run) == 2
    run.current_epoch = None
    assert stages.interrupted_epoch(run) is None


def test_same_seed_gives_the_same_numbers(reference, config, tmp_path):
    completed = _run(tmp_path, config)
    assert completed.returncode == 0, completed.stderr
    first, second = _metrics(reference), _metrics(tmp_path)
    assert [row["accuracy"] for row in first["stages"]] == [
        row["accuracy"] for row in second["stages"]]
    assert first == second


def test_killed_in_a_training_stage_resumes_from_its_last_epoch(reference, config, tmp_path):
    code, _, _ = _run_until(tmp_path, config, _epoch_done(tmp_path, "2_baseline"),
                            signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert os.path.isdir(tmp_path / ".partial" / "2_baseline" / "backup")
    completed = _run(tmp_path, config)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert any(re.search(r"\[1/3\] data +reused", line) for line in lines)
    assert any(re.search(r"resuming at epoch [23]/3", line) for line in lines), completed.stdout
    assert _metrics(tmp_path) == _metrics(reference)
    assert not os.listdir(tmp_path / ".partial")


def test_ctrl_c_says_where_and_the_rerun_resumes(reference, config, tmp_path):
    code, _, err = _run_until(tmp_path, config, _epoch_done(tmp_path, "2_baseline"),
                              signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err
    assert re.search(r"^interrupted during baseline, epoch [23]; run the same command again "
                     r"to resume$", err.strip().splitlines()[-1]), err
    completed = _run(tmp_path, config)
    assert completed.returncode == 0, completed.stderr
    assert sum("reused" in line for line in completed.stdout.splitlines()) == 1
    assert _metrics(tmp_path) == _metrics(reference)


@pytest.mark.slow
def test_killed_during_export_redoes_only_the_export(reference, config, tmp_path):
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "stages" / "7_export")
    os.remove(tmp_path / "metrics.json")
    code, _, _ = _run_until(tmp_path, config,
                            lambda: os.path.isdir(tmp_path / ".partial" / "7_export"),
                            signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (tmp_path / "stages" / "7_export").exists()
    completed = _run(tmp_path, config)
    assert completed.returncode == 0, completed.stderr
    assert sum("reused" in line for line in completed.stdout.splitlines()) == 2
    assert _metrics(tmp_path) == _metrics(reference)


def test_changed_settings_are_refused_unless_overwrite(reference, config, tmp_path):
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    changed = tmp_path / "changed.yaml"
    changed.write_text(TINY.replace("latency_runs: 2", "latency_runs: 3"))
    before = (tmp_path / "metrics.json").read_text()
    refused = _run(tmp_path, changed)
    assert refused.returncode == 2
    assert re.search(r"^dnnopt optimize: error: --out: .*another configuration \(changed: "
                     r"export.latency_runs 2 -> 3\).*--overwrite", refused.stderr.strip(),
                     re.M), refused.stderr
    assert (tmp_path / "metrics.json").read_text() == before
    accepted = _run(tmp_path, changed, "--overwrite")
    assert accepted.returncode == 0, accepted.stderr
    lines = accepted.stdout.splitlines()
    assert sum("reused" in line for line in lines) == 2  # only the export is redone
    assert any("[3/3] export" in line and "done in" in line for line in lines)
    # The folder now belongs to the new settings: the old ones are refused in turn.
    assert _run(tmp_path, config).returncode == 2
