"""Models built outside a strategy scope, used inside a 2-replica MirroredStrategy (issue 15).

The common order of work: a teacher (or a model to compress) is built and trained on one
device; later it is handed to the package inside `MirroredStrategy(["/cpu:0", "/cpu:1"])`.
One child process (tests/workers/outside_scope.py; the CPU is split before TensorFlow
initialises) runs every check on one device and on two from the same weights and batches;
the tests compare the logs. Before the fix, every Distiller check failed on both Kerases
(Keras 3: "`colocate_vars_with` must only be passed a variable created in this
tf.distribute.Strategy.scope()"; tf_keras: "... was not created in the distribution
strategy scope"), and `tune` of Distillers failed on tf_keras while loading the best model.

A plain model built outside the scope cannot train under it (its variables are not mirrored):
`fit_distributed` and `cross_validate` now refuse it with a ValueError naming the argument
(`model`, `build_fn`) and the fix. Before, both failed deep inside, naming neither (Keras 3:
"Mixing different tf.distribute.Strategy objects", or a bare AssertionError in the
optimizer's distributed update; tf_keras: a ValueError traced from `optimizer.minimize`).
"""

import os
import re

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS
from tests.subprocess_helpers import ROOT, json_result, run_python

CHECKS = ["distiller", "multi_teacher", "feature_match", "cached", "distiller_loop", "prune",
          "cluster", "tune", "cross_validate", "fit_distributed_scope_check",
          "cross_validate_scope_check"] + (["quantize"] if USING_TF_KERAS else [])
LOSSES = ("loss", "student_loss", "distillation_loss")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("outside_scope"))
    return json_result(run_python(path=os.path.join(ROOT, "tests", "workers",
                                                    "outside_scope.py"),
                                  args=[",".join(CHECKS), out], timeout=500))


def result_of(runs, check):
    result = runs[check]
    assert "error" not in result, f"{check}: {result.get('error')}\n{result.get('traceback')}"
    return result


def assert_same_logs(result, keys, rtol=1e-3):
    assert result["replicas"] == 2
    for key in keys:
        assert np.all(np.isfinite(result["one"][key])), key
        np.testing.assert_allclose(result["two"][key], result["one"][key], rtol=rtol,
                                   err_msg=key)


@pytest.mark.parametrize("check, keys", [
    ("distiller", (*LOSSES, "accuracy", "val_loss", "val_student_loss",
                   "val_distillation_loss")),
    ("multi_teacher", (*LOSSES, "val_loss")),
    ("feature_match", (*LOSSES, "feature_loss", "val_feature_loss")),
    ("cached", LOSSES),
    ("distiller_loop", LOSSES),  # fit_distributed
])
def test_distilling_a_teacher_trained_outside_the_scope_logs_the_same_losses(runs, check,
                                                                             keys):
    assert_same_logs(result_of(runs, check), keys)


@pytest.mark.parametrize("check", ["prune", "cluster"])
def test_compressing_a_model_built_outside_the_scope(runs, check):
    assert_same_logs(result_of(runs, check), ("loss",))


@pytest.mark.skipif(not USING_TF_KERAS, reason="the worker's quantize scenario is TF-MOT's "
                    "(tf_keras); Keras 3's native QAT is tested in test_qat_keras3.py")
def test_quantizing_a_model_built_outside_the_scope(runs):
    # The fake-quant activation ranges are statistics of each replica's half batch (like
    # batch norm), so two replicas differ from one device slightly (7e-4 relative here).
    assert_same_logs(result_of(runs, "quantize"), ("loss",), rtol=1e-2)


def test_tune_distillers_of_a_teacher_trained_outside_the_scope(runs):
    result = result_of(runs, "tune")
    assert result["two"]["replicas"][-1] == 2  # keras-tuner built the trials in the scope
    assert [t for t, _ in result["two"]["scores"]] == [1.0, 4.0]
    np.testing.assert_allclose([s for _, s in result["two"]["scores"]],
                               [s for _, s in result["one"]["scores"]], rtol=1e-3)
    for key in LOSSES:
        np.testing.assert_allclose(result["two"]["evaluate"][key],
                                   result["one"]["evaluate"][key], rtol=1e-3, err_msg=key)


def test_cross_validate_distillers_of_a_teacher_trained_outside_the_scope(runs):
    result = result_of(runs, "cross_validate")
    for one, two in zip(result["one"]["folds"], result["two"]["folds"], strict=True):
        for key in LOSSES:
            np.testing.assert_allclose(two[key], one[key], rtol=1e-3, err_msg=key)


SCOPE_ERROR = (r"^ValueError: Argument `{argument}` must give a model built inside the scope of "
               r"the MirroredStrategy .*{fix}.*clone_model.*set_weights.* Received: model "
               r"'{name}' with 6 of 6 variables created outside the scope")


@pytest.mark.parametrize("how", ["given", "current"])  # strategy=TWO, or inside its scope
def test_fit_distributed_refuses_a_model_built_outside_the_scope(runs, how):
    result = result_of(runs, "fit_distributed_scope_check")
    pattern = SCOPE_ERROR.format(argument="model", name="built_outside",
                                 fix=r"build and compile it inside `with strategy.scope\(\):`")
    assert result[how] is not None and re.match(pattern, result[how]), result[how]


def test_fit_distributed_trains_the_same_model_built_inside_the_scope(runs):
    loss = result_of(runs, "fit_distributed_scope_check")["inside"]["loss"]
    assert len(loss) == 1 and np.isfinite(loss[0])


def test_cross_validate_refuses_a_build_fn_returning_a_model_built_outside_the_scope(runs):
    result = result_of(runs, "cross_validate_scope_check")
    pattern = SCOPE_ERROR.format(argument="build_fn", name="prebuilt",
                                 fix="build and compile the model inside build_fn")
    assert result["prebuilt"] is not None and re.match(pattern, result["prebuilt"]), (
        result["prebuilt"])
    folds = result["inside"]  # a build_fn building in the scope cross-validates
    assert len(folds) == 2 and all(np.isfinite(fold["loss"]) for fold in folds)
