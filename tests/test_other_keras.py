"""A model of the other Keras, passed to any public entry point, gets the error of
`keras_dnnopt.backend.check_model`: one message naming both Kerases and
`TF_USE_LEGACY_KERAS`, instead of whatever breaks first inside.

The other Keras is built in the same process: under Keras 3, `import tf_keras` gives a
tf_keras model; under tf_keras, `import keras` gives a Keras 3 model. `ENTRY_POINTS` lists
every public callable taking a model (a parameter named `model`, `teacher`, `student` or
`teachers`), and `test_every_entry_point_taking_a_model_is_listed` walks the package so
that a new one cannot be forgotten (or must say in `EXCLUDED` why it is left out).
"""

import importlib
import inspect
import os
import pkgutil

import numpy as np
import pytest

import keras_dnnopt
from keras_dnnopt import (
    callbacks,
    compression,
    distillation,
    distribute,
    evaluation,
    export,
    models,
    profiling,
    tuning,
    visualization,
)
from keras_dnnopt.backend import USING_TF_KERAS, keras, tf

MODEL_PARAMETERS = {"model", "teacher", "student", "teachers"}


@pytest.fixture
def foreign(other_keras):
    """A small image classifier of the Keras *not* in use."""
    return other_keras.Sequential([
        other_keras.Input((8, 8, 1)),
        other_keras.layers.Conv2D(2, 3, name="conv"),
        other_keras.layers.GlobalAveragePooling2D(),
        other_keras.layers.Dense(3, name="dense"),
    ])


def ours():
    """The same classifier, of the Keras in use."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(2, 3, name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="dense"),
    ])


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 8, 8, 1)).astype("float32"), np.arange(8) % 3


def _tflite_path(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"")
    return str(path)


def _hp():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Fixed("epochs", 1)
    hp.Fixed("batch_size", 4)
    hp.Fixed("schedule", "constant")
    hp.Fixed("learning_rate", 0.01)
    hp.Fixed("optimizer", "sgd")
    return hp


def _tune(m, tmp_path):
    x, y = _data()
    return tuning.tune(x, y, validation_data=(x, y), hypermodel=lambda hp: m, max_trials=1,
                       directory=str(tmp_path), overwrite=True,
                       fit_kwargs={"epochs": 1, "verbose": 0})


# "dotted.name": [call(foreign_model, tmp_path), ...], one call per way of passing the model
# Several rows for one callable check each of its model parameters.
ENTRY_POINTS = {
    "keras_dnnopt.profiling.profile": [lambda m, t: profiling.profile(m)],
    "keras_dnnopt.profiling.measure_latency": [
        lambda m, t: profiling.measure_latency(m, warmup=0, runs=1)],
    "keras_dnnopt.distillation.Distiller": [
        lambda m, t: distillation.Distiller(teacher=m, student=ours()),
        lambda m, t: distillation.Distiller(teacher=ours(), student=m),
        lambda m, t: distillation.Distiller(teacher=[ours(), m], student=ours()),
        lambda m, t: distillation.Distiller(
            teacher=m, student=ours(),
            feature_matches=[distillation.FeatureMatch("conv", "conv")]),
    ],
    "keras_dnnopt.distillation.cache_teacher_outputs": [
        lambda m, t: distillation.cache_teacher_outputs(m, _data()[0]),
        lambda m, t: distillation.cache_teacher_outputs([ours(), m], _data()[0]),
    ],
    "keras_dnnopt.compression.prune": [
        lambda m, t: compression.prune(m, 0.5, end_step=2, frequency=1)],
    "keras_dnnopt.compression.PruningCallback": [lambda m, t: compression.PruningCallback(m)],
    "keras_dnnopt.compression.strip_pruning": [lambda m, t: compression.strip_pruning(m)],
    "keras_dnnopt.compression.sparsity_report": [lambda m, t: compression.sparsity_report(m)],
    "keras_dnnopt.compression.cluster": [lambda m, t: compression.cluster(m, 4)],
    "keras_dnnopt.compression.strip_clustering": [lambda m, t: compression.strip_clustering(m)],
    "keras_dnnopt.compression.quantize": [lambda m, t: compression.quantize(m)],
    "keras_dnnopt.compression.prune_channels": [
        lambda m, t: compression.prune_channels(m, ratio=0.5)],
    "keras_dnnopt.compression.channel_pruning_plan": [
        lambda m, t: compression.channel_pruning_plan(m, ratio=0.5)],
    "keras_dnnopt.compression.remove_blocks": [
        lambda m, t: compression.remove_blocks(m, n=0)],
    "keras_dnnopt.compression.residual_blocks": [
        lambda m, t: compression.residual_blocks(m)],
    "keras_dnnopt.compression.removable_blocks": [
        lambda m, t: compression.removable_blocks(m, criterion="repeats")],
    "keras_dnnopt.compression.with_channel_sparsity": [
        lambda m, t: compression.with_channel_sparsity(m)],
    "keras_dnnopt.compression.prune_channels_iteratively": [
        lambda m, t: compression.prune_channels_iteratively(m, *_data(), target_macs=0.5)],
    "keras_dnnopt.export.export_tflite": [
        lambda m, t: export.export_tflite(m, str(t / "m.tflite"))],
    "keras_dnnopt.export.compare_outputs": [
        lambda m, t: export.compare_outputs(m, _tflite_path(t), _data()[0])],
    "keras_dnnopt.export.saving.save_model": [
        lambda m, t: importlib.import_module("keras_dnnopt.export.saving").save_model(
            m, str(t / "m.keras"))],
    "keras_dnnopt.models.separable_variant": [lambda m, t: models.separable_variant(m)],
    "keras_dnnopt.models.fold_output_rescaling": [
        lambda m, t: models.fold_output_rescaling(m)],
    "keras_dnnopt.tuning.tune": [_tune],
    "keras_dnnopt.tuning.cross_validate": [
        lambda m, t: tuning.cross_validate(lambda: m, *_data(), k=2)],
    "keras_dnnopt.tuning.MobileNetHyperModel.compile_model": [
        lambda m, t: tuning.MobileNetHyperModel((8, 8, 1), 3).compile_model(_hp(), m, 2)],
    "keras_dnnopt.tuning.MobileNetHyperModel.fit": [
        lambda m, t: tuning.MobileNetHyperModel((8, 8, 1), 3).fit(_hp(), m, *_data())],
    "keras_dnnopt.distribute.fit_distributed": [
        lambda m, t: distribute.fit_distributed(
            m, tf.data.Dataset.from_tensor_slices(_data()).batch(4))],
    "keras_dnnopt.distribute.float32_output": [lambda m, t: distribute.float32_output(m)],
    "keras_dnnopt.evaluation.evaluate_report": [
        lambda m, t: evaluation.evaluate_report(m, _data())],
    "keras_dnnopt.visualization.grad_cam": [
        lambda m, t: visualization.grad_cam(m, _data()[0][:2])],
    "keras_dnnopt.visualization.saliency_map": [
        lambda m, t: visualization.saliency_map(m, _data()[0][:2])],
    "keras_dnnopt.visualization.find_last_conv_layer": [
        lambda m, t: visualization.find_last_conv_layer(m)],
    "keras_dnnopt.callbacks.LRFinder.find": [
        lambda m, t: callbacks.LRFinder(num_steps=2).find(m, *_data())],
}

# Public callables with a model parameter that are not entry points, one line each.
EXCLUDED = {
    "keras_dnnopt.backend.check_model": "the check itself (tests/test_backend.py)",
    "keras_dnnopt.tuning.TuneResult": "the record `tune` returns, holding the model it built",
}

CASES = [(name, i) for name, calls in ENTRY_POINTS.items() for i in range(len(calls))]


def _resolve(dotted):
    """The object named `dotted`, attribute by attribute from the package (so that
    `keras_dnnopt.models.separable_variant` is the function, not its module), importing a
    submodule where no attribute has the name; None if there is none."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[:i + 1]))
        except ImportError:
            return None
    return obj


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_entry_point_rejects_a_model_of_the_other_keras(name, index, foreign, tmp_path):
    if _resolve(name) is None:
        pytest.skip(f"{name} is not in this checkout")
    with pytest.raises(TypeError, match="TF_USE_LEGACY_KERAS") as info:
        ENTRY_POINTS[name][index](foreign, tmp_path)
    message = str(info.value)
    assert "Keras 3" in message and "tf_keras" in message, message
    assert "keras_dnnopt is running on" in message, message  # check_model's, not another


def _public_modules():
    yield keras_dnnopt
    for info in pkgutil.walk_packages(keras_dnnopt.__path__, "keras_dnnopt."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        yield importlib.import_module(info.name)


def _takes_a_model(obj):
    try:
        return bool(MODEL_PARAMETERS & set(inspect.signature(obj).parameters))
    except (TypeError, ValueError):
        return False


def _public_callables():
    """`{object's qualified name: dotted public name}` of every public function, class and
    public method (defined in the package) that takes a model."""
    found = {}
    for module in _public_modules():
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr, None)
            if not callable(obj) or not (getattr(obj, "__module__", "") or "").startswith(
                    "keras_dnnopt"):
                continue
            dotted = f"{module.__name__}.{attr}"
            if _takes_a_model(obj):
                found.setdefault(f"{obj.__module__}.{obj.__qualname__}", dotted)
            if inspect.isclass(obj):
                for method_name, method in vars(obj).items():
                    if method_name.startswith("_") or not inspect.isfunction(method):
                        continue
                    if _takes_a_model(method):
                        found.setdefault(f"{obj.__module__}.{method.__qualname__}",
                                         f"{dotted}.{method_name}")
    return found


def _qualified(dotted):
    obj = _resolve(dotted)
    if obj is None:
        return None
    return f"{obj.__module__}.{obj.__qualname__}"


def test_every_entry_point_taking_a_model_is_listed():
    listed = {_qualified(name) for name in [*ENTRY_POINTS, *EXCLUDED]} - {None}
    missing = {dotted for qualified, dotted in _public_callables().items()
               if qualified not in listed}
    assert not missing, (
        f"public callables taking a model but not in ENTRY_POINTS (or EXCLUDED, with a "
        f"reason) of tests/test_other_keras.py: {sorted(missing)}")


def test_the_table_names_public_callables():
    for name in [*ENTRY_POINTS, *EXCLUDED]:
        if name == "keras_dnnopt.export.saving.save_model" and _resolve(name) is None:
            continue  # added by another change; checked once it is there
        assert _resolve(name) is not None, name
        assert not any(part.startswith("_") for part in name.split(".")), name


def test_the_other_keras_is_the_other_one(foreign):
    """The fixture really builds a model of the other Keras (and both are installed)."""
    module = type(foreign).__module__
    assert module.startswith("keras." if USING_TF_KERAS else "tf_keras."), module
    assert not isinstance(foreign, keras.Model)
    assert os.environ.get("TF_USE_LEGACY_KERAS", "") in (("1", "true", "True")
                                                          if USING_TF_KERAS else ("", "0"))
