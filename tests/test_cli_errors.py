"""The command line's contract for bad input, internal errors, `--help` and TensorFlow's logs.

- Bad input: one line `dnnopt COMMAND: error: ...` on stderr, no traceback, exit status 2.
- An internal error: one line `dnnopt COMMAND: internal error: ...`, exit status 1; the
  traceback with `--debug`.
- `--help` imports no TensorFlow; TensorFlow's start-up lines are hidden unless the user
  set `TF_CPP_MIN_LOG_LEVEL` (kept) or gave `--verbose`.

Most cases call `main(argv)` in-process; a few run the real entry point in a child process
(each one that reaches TensorFlow costs an import of it).
"""

import subprocess
import sys

import numpy as np
import pytest

from keras_dnnopt.backend import keras
from keras_dnnopt.cli import info
from keras_dnnopt.cli.main import main
from tests.subprocess_helpers import ROOT, child_env

HELP_ARGVS = [["--help"], *([name, "--help"] for name in
                            ("optimize", "info", "profile", "export", "benchmark", "lr-find"))]


def _child_env(**extra):
    env = child_env(extra)
    if "TF_CPP_MIN_LOG_LEVEL" not in extra:
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user who never set it
    return env


def _run_cli(args, **env):
    return subprocess.run([sys.executable, "-m", "keras_dnnopt.cli.main", *args], cwd=ROOT,
                          env=_child_env(**env), capture_output=True, text=True, timeout=120)


def _assert_usage_line(stderr, command):
    assert stderr.startswith(f"dnnopt {command}: error: "), stderr
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as info_:
        main(argv)
    assert info_.value.code == 2
    err = capsys.readouterr().err
    _assert_usage_line(err, argv[0])
    return err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = keras.Sequential([keras.Input(shape=(8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def garbage(tmp_path_factory):
    """Files of garbage bytes with the names of a model and of a .tflite file."""
    folder = tmp_path_factory.mktemp("garbage")
    data = np.random.default_rng(0).bytes(512)
    for name in ("bad.keras", "bad.h5", "bad.tflite"):
        (folder / name).write_bytes(data)
    return folder


# ------------------------------------------------------- bad input, in the real script
def test_console_script_bad_input_is_one_line_and_status_2(tmp_path, garbage):
    """Through `python -m keras_dnnopt.cli.main`, as a user runs it: parse-time errors
    (no TensorFlow) and a corrupt .tflite file found when the command runs."""
    cases = [
        (["lr-find", "--dataset", "imagenet"], "lr-find", "argument --dataset"),
        (["benchmark", str(tmp_path / "none.tflite")], "benchmark", "argument FILE.tflite"),
        (["benchmark", str(garbage / "bad.tflite"), "--threads", "-1"], "benchmark",
         "argument --threads"),
        (["export", str(garbage / "bad.keras"), "/proc/nope/m.tflite"], "export",
         "argument OUT.tflite"),
        (["benchmark", str(garbage / "bad.tflite"), "--runs", "2"], "benchmark",
         "not a valid .tflite file"),
    ]
    for args, command, expected in cases:
        completed = _run_cli(args)
        assert completed.returncode == 2, (args, completed.stderr)
        _assert_usage_line(completed.stderr, command)
        assert expected in completed.stderr, (args, completed.stderr)


# ------------------------------------------------------------- bad input, in-process
@pytest.mark.parametrize("name", ["bad.keras", "bad.h5"])
def test_corrupt_model_file_names_the_argument(capsys, garbage, tmp_path, name):
    err = _usage_error(capsys, ["profile", str(garbage / name)])
    assert "argument MODEL: could not load the model file" in err and name in err
    err = _usage_error(capsys, ["export", str(garbage / name), str(tmp_path / "m.tflite")])
    assert "argument MODEL: could not load the model file" in err
    assert not (tmp_path / "m.tflite").exists()


def test_missing_files(capsys, tmp_path):
    err = _usage_error(capsys, ["profile", str(tmp_path / "none.keras")])
    assert "argument MODEL" in err and "none.keras" in err
    err = _usage_error(capsys, ["export", str(tmp_path / "none.keras"),
                                str(tmp_path / "m.tflite")])
    assert "argument MODEL: must be an existing file" in err


def test_unwritable_outputs_name_the_flag(capsys, model_file, tmp_path):
    err = _usage_error(capsys, ["export", str(model_file), "/proc/nope.tflite"])
    assert "argument OUT.tflite: cannot write into the folder '/proc'" in err
    err = _usage_error(capsys, ["export", str(model_file), "/proc/nope/m.tflite"])
    assert "argument OUT.tflite: must be in an existing folder" in err
    err = _usage_error(capsys, ["lr-find", "--plot", "/proc/lr.png"])
    assert "argument --plot: cannot write into the folder '/proc'" in err


def test_unknown_datasets(capsys, model_file, tmp_path):
    err = _usage_error(capsys, ["export", str(model_file), str(tmp_path / "m.tflite"),
                                "--data", "imagenet"])
    assert "argument --data" in err and "'imagenet'" in err
    err = _usage_error(capsys, ["lr-find", "--dataset", "imagenet"])
    assert "argument --dataset" in err and "'imagenet'" in err
    # A ValueError of the package (here the configuration's) is bad input too.
    err = _usage_error(capsys, ["optimize", "--dataset", "imagenet", "--print-config"])
    assert "imagenet" in err


@pytest.mark.parametrize("argv, expected", [
    (["benchmark", "F", "--threads", "-1"], "argument --threads: must be an integer >= 1"),
    (["benchmark", "F", "--runs", "0"], "argument --runs: must be an integer >= 1"),
    (["benchmark", "F", "--warmup", "x"], "argument --warmup"),
    (["profile", "mobilenet_v1", "--alpha", "-1"], "argument --alpha"),
    (["profile", "mobilenet_v1", "--num-classes", "0"], "argument --num-classes"),
    (["lr-find", "--smoothing", "1.5"], "argument --smoothing"),
    (["lr-find", "--min-lr", "nan"], "argument --min-lr"),
])
def test_bad_numbers(capsys, garbage, argv, expected):
    argv = [str(garbage / "bad.tflite") if a == "F" else a for a in argv]
    assert expected in _usage_error(capsys, argv)


def test_contradictory_flags(capsys, model_file, tmp_path):
    out = str(tmp_path / "m.tflite")
    err = _usage_error(capsys, ["export", str(model_file), out, "--evaluate"])
    assert "argument --evaluate: needs labelled --data" in err
    err = _usage_error(capsys, ["export", str(model_file), out, "--normalize"])
    assert "argument --normalize" in err
    err = _usage_error(capsys, ["lr-find", "--min-lr", "1", "--max-lr", "0.1"])
    assert "argument --max-lr: must be > --min-lr" in err
    err = _usage_error(capsys, ["info", "--bogus"])
    assert "unrecognized arguments: --bogus" in err


# ---------------------------------------------------------------- internal errors
def _boom(args):
    raise RuntimeError("boom in the command")


def test_internal_error_is_one_line_and_status_1(capsys, monkeypatch):
    monkeypatch.setattr(info, "run", _boom)
    monkeypatch.delenv("DNNOPT_TRACEBACK", raising=False)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err == ("dnnopt info: internal error: RuntimeError: boom in the command "
                   "(run with --debug for the traceback)\n")


@pytest.mark.parametrize("argv, env", [(["--debug", "info"], {}), (["info", "--debug"], {}),
                                       (["info"], {"DNNOPT_TRACEBACK": "1"})])
def test_debug_prints_the_traceback(capsys, monkeypatch, argv, env):
    monkeypatch.setattr(info, "run", _boom)
    monkeypatch.delenv("DNNOPT_TRACEBACK", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in _boom" in err and "RuntimeError: boom in the command" in err
    assert err.splitlines()[-1].startswith("dnnopt info: internal error: RuntimeError")


def test_debug_shows_the_traceback_of_bad_input_too(capsys, garbage):
    with pytest.raises(SystemExit) as info_:
        main(["--debug", "profile", str(garbage / "bad.keras")])
    assert info_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.splitlines()[-1].startswith("dnnopt profile: error: argument MODEL")


# ------------------------------------------------------ help without TensorFlow
def test_help_and_import_do_not_import_tensorflow():
    code = f"""
import sys
import keras_dnnopt
assert "tensorflow" not in sys.modules, "import keras_dnnopt"
assert {{"models", "profile", "load_model", "__version__"}} <= set(dir(keras_dnnopt))
from keras_dnnopt.cli.main import main
for argv in {HELP_ARGVS!r}:
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, argv
    assert "tensorflow" not in sys.modules, argv
    assert "keras" not in sys.modules and "tf_keras" not in sys.modules, argv
print("NO-TF", keras_dnnopt.__version__)
keras_dnnopt.models  # the lazy root still gives the subpackages
assert "tensorflow" in sys.modules
print("LAZY-OK")
"""
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_child_env(),
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "NO-TF 0.1.0" in completed.stdout and "LAZY-OK" in completed.stdout
    assert "optimize" in completed.stdout and "--threads" in completed.stdout


def test_lazy_root_unknown_name():
    import keras_dnnopt

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        keras_dnnopt.nope  # noqa: B018


# ------------------------------------------------------- TensorFlow's start-up logs
_NOISE = ("oneDNN", "cpu_feature_guard", "cudart_stub", "absl::InitializeLog", "cuInit")
_REPORT_LEVEL = ("import os, sys; from keras_dnnopt.cli.main import main; rc = main({argv!r}); "
                 "print('LEVEL', os.environ.get('TF_CPP_MIN_LOG_LEVEL')); sys.exit(rc)")


def test_tensorflow_start_up_logs_are_hidden_by_default():
    completed = subprocess.run([sys.executable, "-c", _REPORT_LEVEL.format(argv=["info"])],
                               cwd=ROOT,
                               env=_child_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Keras in use" in completed.stdout and "LEVEL 2" in completed.stdout
    found = [word for word in _NOISE if word in completed.stderr]
    assert not found, completed.stderr


@pytest.mark.parametrize("argv, env, level", [
    (["info"], {"TF_CPP_MIN_LOG_LEVEL": "0"}, "0"),  # the user's choice, kept
    (["--verbose", "info"], {}, "None"),  # --verbose: TensorFlow's own default
])
def test_a_user_set_log_level_or_verbose_shows_the_logs(argv, env, level):
    completed = subprocess.run([sys.executable, "-c", _REPORT_LEVEL.format(argv=argv)],
                               cwd=ROOT, env=_child_env(**env), capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"LEVEL {level}" in completed.stdout
    # Nothing filtered: TensorFlow's INFO lines are there, as the user asked.
    assert any(line[:1] in "IW" and "] " in line for line in completed.stderr.splitlines()), \
        completed.stderr
