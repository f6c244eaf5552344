"""Round trips for every registered object, found automatically, on both Kerases.

The registry walk: every object keras_dnnopt registers with Keras serialization (names
`keras_dnnopt>...` in Keras' global custom-object registry) is built from a small table of
factories keyed by the object's kind (layer, wrapper, model, schedule, loss, metric,
callback, function, plain config object), checked for a `get_config`/`from_config` round
trip, and, for what lives in a model, put in a tiny model, saved as `.keras`, loaded back in
safe mode and compared output for output. A new registered object is covered without a new
test; one the generic rules cannot build fails here until a rule (or an `ARG_VALUES` entry)
covers it, or it is listed in `EXCLUSIONS` with a one-line reason. The other way round, every
public object of a serializable kind (a layer, loss, metric, schedule, callback, ... class,
or a `*_loss` function) that is *not* registered must be in `NOT_REGISTERED`, with the reason.

Then every kind of model the package makes (plain, pruned, clustered, quantized, pruned and
quantized) through `keras_dnnopt.export.saving.save_model` / `load_model`.
"""

import importlib
import inspect
import os
import pkgutil
import textwrap

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.export.saving import load_model, save_model
from tests.subprocess_helpers import json_result, run_python

SUBPACKAGES = ("layers", "models", "schedules", "callbacks", "distillation", "compression",
               "evaluation", "export", "data", "profiling", "distribute", "tuning",
               "visualization", "pipeline")
for _name in SUBPACKAGES:
    _package = importlib.import_module(f"keras_dnnopt.{_name}")
    for _module in pkgutil.walk_packages(_package.__path__, f"{_package.__name__}."):
        importlib.import_module(_module.name)

PREFIX = "keras_dnnopt>"

# What is registered today; a broken import that registers nothing (or less) fails below.
KNOWN = {
    "ConvBlock", "SeparableConvBlock", "InvertedResidualBlock", "SqueezeExcite",
    "CyclicalLearningRate", "OneCycle", "StepDecay", "WarmupCosineDecay",
    "WarmupCosineRestarts", "WarmupExponentialDecay", "WarmupPolynomialDecay",
    "Distiller", "FeatureMatch", "F1Score", "RootMeanSquaredError", "PruneLowMagnitude",
    "hard_sigmoid", "hard_swish", "KLDistillationLoss", "MSEDistillationLoss",
}
if not USING_TF_KERAS:
    # The layers of the native quantization-aware training (Keras 3 only: TF-MOT's on tf_keras).
    import keras_dnnopt.compression._qat_layers  # noqa: F401

    KNOWN |= {"MovingAverageQuantizer", "QuantizedConv2D", "QuantizedDepthwiseConv2D",
              "QuantizedDense"}

# name -> one-line reason. Keep it short; every entry is a hole in the coverage.
EXCLUSIONS = {}

_CALLBACK = "a callback is not saved with a model in Keras; its constructor args are its config"
# Public objects of a serializable kind that are deliberately not registered: name -> reason.
NOT_REGISTERED = {
    "GradientNormMonitor": _CALLBACK,
    "LearningRateMonitor": _CALLBACK,
    "LRFinder": _CALLBACK,
    "OneCycleMomentum": _CALLBACK,
    "ThroughputMonitor": _CALLBACK,
    "PruningCallback": _CALLBACK,
    "BaseBlock": "abstract base of the blocks (no `call`); every block on it is registered",
    "WarmupSchedule": "abstract base of the warmup schedules (`_decay` is the subclass's)",
    "kl_distillation_loss": "a function of (teacher, student, T), not a Keras loss: see "
                            "KLDistillationLoss",
    "mse_distillation_loss": "a function of (teacher, student, T), not a Keras loss: see "
                             "MSEDistillationLoss",
    "per_sample_loss": "a helper calling a given loss unreduced, not a loss",
}
NOT_REGISTERED["QuantizedLayer"] = ("abstract base of the Keras 3 quantized layers (no "
                                    "`_apply`); every layer on it is registered")
if USING_TF_KERAS:
    for _name in ("MovingAverageQuantizer", "QuantizedConv2D", "QuantizedDepthwiseConv2D",
                  "QuantizedDense"):
        NOT_REGISTERED[_name] = "Keras 3's native QAT layer; on tf_keras QAT is TF-MOT's"

# Kinds of objects Keras serializes: a public class of one of them must be registered.
SERIALIZABLE_KINDS = (
    keras.layers.Layer, keras.losses.Loss, keras.metrics.Metric,
    keras.optimizers.schedules.LearningRateSchedule, keras.callbacks.Callback,
    keras.constraints.Constraint, keras.regularizers.Regularizer,
    keras.initializers.Initializer, keras.optimizers.Optimizer,
)

# Values for required constructor arguments, by argument name.
ARG_VALUES = {
    "filters": 4,
    "learning_rate": 0.1,
    "initial_learning_rate": 0.1,
    "max_learning_rate": 0.1,
    "maximal_learning_rate": 0.5,
    "decay_steps": 10,
    "first_decay_steps": 10,
    "decay_rate": 0.5,
    "step_size": 5,
    "total_steps": 20,
    "boundaries": [5, 10],
    "num_classes": 3,
    "student_layer": "student_dense",
    "teacher_layer": "teacher_dense",
}

INPUT_SHAPE = (8, 8, 4)
X = np.random.default_rng(0).normal(size=(4, *INPUT_SHAPE)).astype("float32")
Y = np.array([0, 1, 2, 1])


def registry():
    """keras_dnnopt's entries of Keras' global custom-object registry, `{name: object}`."""
    if USING_TF_KERAS:
        objects = keras.utils.get_custom_objects()
    else:
        from keras.src.saving import object_registration

        objects = dict(object_registration.GLOBAL_CUSTOM_OBJECTS)
        objects.update(keras.saving.get_custom_objects())
    return {k[len(PREFIX):]: v for k, v in objects.items() if k.startswith(PREFIX)}


def construct(cls, **given):
    """`cls(...)` with its required arguments from `ARG_VALUES` (and `given`)."""
    kwargs = dict(given)
    for name, param in inspect.signature(cls).parameters.items():
        if name in kwargs or param.default is not inspect.Parameter.empty:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name not in ARG_VALUES:
            pytest.fail(f"{cls.__name__}: no generic value for its required argument {name!r}; "
                        "add one to ARG_VALUES, a rule to FACTORIES, or an EXCLUSIONS entry")
        kwargs[name] = ARG_VALUES[name]
    return cls(**kwargs)


def _head(x):
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.layers.Dense(3, name="head")(x)


def _model_around(layer):
    inputs = keras.Input(INPUT_SHAPE)
    return keras.Model(inputs, _head(layer(inputs)))


def _small_model(prefix):
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(5, name=f"{prefix}_dense")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{prefix}_logits")(x), name=prefix)


def _compiled(model, y=Y, **compile_kwargs):
    compile_kwargs.setdefault("optimizer", keras.optimizers.SGD(0.01))
    compile_kwargs.setdefault(
        "loss", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(**compile_kwargs)
    model.fit(X, y, batch_size=4, epochs=1, verbose=0)
    return model


def assert_same_config(obj, clone):
    assert type(clone) is type(obj)
    assert clone.get_config() == obj.get_config()


def assert_config_round_trip(obj):
    config = obj.get_config()
    assert_same_config(obj, type(obj).from_config(config))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert_same_config(obj, revived)


def assert_model_round_trip(model, tmp_path, x=X):
    expected = model.predict(x, verbose=0)
    path = save_model(model, str(tmp_path / "model.keras"))
    restored = load_model(path, safe_mode=True)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    return restored


# ----------------------------------------------------------------- checks by kind


def check_wrapper(cls, tmp_path):
    wrapper = construct(cls, layer=keras.layers.Dense(3))
    assert_config_round_trip(wrapper)
    inputs = keras.Input(INPUT_SHAPE)
    model = _compiled(keras.Model(inputs, wrapper(keras.layers.Flatten()(inputs))))
    restored = assert_model_round_trip(model, tmp_path)
    assert any(type(layer) is cls for layer in restored.layers)


# The inner float layer of each quantization-aware layer (Keras 3 native QAT).
_QUANTIZED_INNER = {
    "QuantizedConv2D": lambda: keras.layers.Conv2D(4, 3, padding="same"),
    "QuantizedDepthwiseConv2D": lambda: keras.layers.DepthwiseConv2D(3, padding="same"),
    "QuantizedDense": lambda: keras.layers.Dense(3),
}


def check_quantized_layer(cls, tmp_path):
    inner = _QUANTIZED_INNER[cls.__name__]()
    batch_norm = None if cls.__name__ == "QuantizedDense" else keras.layers.BatchNormalization()
    layer = cls(inner, batch_norm=batch_norm, activation="relu6")
    inputs = keras.Input(INPUT_SHAPE)
    x = inputs if cls.__name__ != "QuantizedDense" else keras.layers.Flatten()(inputs)
    model = _compiled(keras.Model(inputs, _head(layer(x))))
    assert_config_round_trip(layer)
    restored = assert_model_round_trip(model, tmp_path)
    assert any(type(layer) is cls for layer in restored.layers)


def check_layer(cls, tmp_path):
    layer = construct(cls)
    model = _compiled(_model_around(layer))
    assert_config_round_trip(layer)
    restored = assert_model_round_trip(model, tmp_path)
    assert any(type(layer) is cls for layer in restored.layers)


def check_distiller(cls, tmp_path):
    teacher = _compiled(_small_model("teacher"))
    fm = registry().get("FeatureMatch")
    matches = [construct(fm)] if fm is not None else None
    distiller = cls(teacher=teacher, student=_small_model("student"), feature_matches=matches)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    config = distiller.get_config()
    clone = cls.from_config(config)
    assert type(clone) is cls
    assert keras.saving.serialize_keras_object(clone)["config"].keys() == config.keys()
    restored = assert_model_round_trip(distiller, tmp_path)
    assert type(restored) is cls
    np.testing.assert_allclose(restored.student.predict(X, verbose=0),
                               distiller.student.predict(X, verbose=0), rtol=1e-5, atol=1e-6)


def check_schedule(cls, tmp_path):
    schedule = construct(cls)
    assert_config_round_trip(schedule)
    steps = [0, 1, 3, 7, 12, 25]
    clone = type(schedule).from_config(schedule.get_config())
    np.testing.assert_allclose([float(clone(s)) for s in steps],
                               [float(schedule(s)) for s in steps], rtol=1e-6)
    model = _compiled(_small_model("m"), optimizer=keras.optimizers.SGD(schedule))
    restored = assert_model_round_trip(model, tmp_path)
    revived = restored.optimizer._learning_rate  # noqa: SLF001 (the schedule, both Kerases)
    assert type(revived) is cls
    np.testing.assert_allclose([float(revived(s)) for s in steps],
                               [float(schedule(s)) for s in steps], rtol=1e-6)


def _logits_and_labels():
    rng = np.random.default_rng(1)
    return (rng.normal(size=(4, 3)).astype("float32"),
            keras.utils.to_categorical(Y, 3).astype("float32"))


def check_loss(cls, tmp_path):
    loss = construct(cls)
    assert_config_round_trip(loss)
    logits, labels = _logits_and_labels()
    clone = type(loss).from_config(loss.get_config())
    np.testing.assert_allclose(float(clone(labels, logits)), float(loss(labels, logits)),
                               rtol=1e-6)
    # Targets of the output's shape: class probabilities, or a teacher's logits for a
    # distillation loss, both (batch, 3).
    one_hot = keras.utils.to_categorical(Y, 3).astype("float32")
    model = _compiled(_small_model("m"), y=one_hot, loss=loss)
    expected = model.evaluate(X, one_hot, verbose=0)
    restored = assert_model_round_trip(model, tmp_path)
    assert type(restored.loss) is cls  # compiled back with the loss, its config included
    assert restored.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(restored.evaluate(X, one_hot, verbose=0), expected, rtol=1e-5)


def check_metric(cls, tmp_path):
    metric = construct(cls)
    assert_config_round_trip(metric)
    logits, labels = _logits_and_labels()
    clone = type(metric).from_config(metric.get_config())
    for m in (metric, clone):
        m.update_state(labels, logits)
    np.testing.assert_allclose(float(clone.result()), float(metric.result()), rtol=1e-6)
    one_hot = keras.utils.to_categorical(Y, 3)
    model = _compiled(_small_model("m"), y=one_hot, loss="categorical_crossentropy",
                      metrics=[construct(cls)])
    expected = model.evaluate(X, one_hot, verbose=0)
    restored = assert_model_round_trip(model, tmp_path)
    got = restored.evaluate(X, one_hot, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def check_callback(cls, tmp_path):
    callback = construct(cls)
    assert_config_round_trip(callback)


def check_function(fn, tmp_path):
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fn)) is fn
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Dense(3, activation=fn)(keras.layers.Flatten()(inputs))
    model = _compiled(keras.Model(inputs, x))
    restored = assert_model_round_trip(model, tmp_path)
    assert restored.layers[-1].activation is fn


def check_config_object(cls, tmp_path):
    obj = construct(cls)
    assert_config_round_trip(obj)


# (predicate, check), first match wins. A new kind of object gets a row here.
FACTORIES = [
    (lambda o: isinstance(o, type) and issubclass(o, keras.Model) and "teacher"
     in inspect.signature(o).parameters, check_distiller),
    (lambda o: isinstance(o, type) and issubclass(o, keras.layers.Wrapper), check_wrapper),
    (lambda o: isinstance(o, type) and issubclass(o, keras.metrics.Metric), check_metric),
    (lambda o: isinstance(o, type) and o.__name__ in _QUANTIZED_INNER, check_quantized_layer),
    (lambda o: isinstance(o, type) and issubclass(o, keras.layers.Layer)
     and not issubclass(o, keras.Model), check_layer),
    (lambda o: isinstance(o, type)
     and issubclass(o, keras.optimizers.schedules.LearningRateSchedule), check_schedule),
    (lambda o: isinstance(o, type) and issubclass(o, keras.losses.Loss), check_loss),
    (lambda o: isinstance(o, type) and issubclass(o, keras.callbacks.Callback), check_callback),
    (lambda o: inspect.isfunction(o), check_function),
    (lambda o: isinstance(o, type) and hasattr(o, "get_config") and hasattr(o, "from_config"),
     check_config_object),
]


def test_registry_holds_the_known_objects():
    names = set(registry())
    assert KNOWN <= names, f"not registered: {sorted(KNOWN - names)}"


@pytest.mark.parametrize("name", sorted(set(registry()) | KNOWN))
def test_registered_object_round_trips(name, tmp_path):
    if name in EXCLUSIONS:
        pytest.skip(f"excluded: {EXCLUSIONS[name]}")
    obj = registry().get(name)
    assert obj is not None, f"{name} is no longer registered"
    for matches, check in FACTORIES:
        if matches(obj):
            check(obj, tmp_path)
            return
    pytest.fail(f"{name} ({obj!r}) fits no rule of FACTORIES: add one, or an EXCLUSIONS entry")


def public_serializable_objects():
    """`{name: object}` of every public class of a serializable kind (or with `get_config`)
    and every public `*_loss` function defined in a keras_dnnopt module."""
    import sys

    found = {}
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("keras_dnnopt.") or module is None:
            continue
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if isinstance(obj, type) and (issubclass(obj, SERIALIZABLE_KINDS)
                                          or hasattr(obj, "get_config")):
                found[name] = obj
            elif inspect.isfunction(obj) and name.endswith("_loss"):
                found[name] = obj
    return found


def test_every_public_serializable_object_is_registered_or_listed():
    registered = {id(obj) for obj in registry().values()}
    unregistered = {name for name, obj in public_serializable_objects().items()
                    if id(obj) not in registered}
    assert unregistered - set(NOT_REGISTERED) == set(), (
        "public but not registered: register it (`register_serializable`) or add it to "
        "NOT_REGISTERED with a one-line reason")
    assert set(NOT_REGISTERED) - unregistered == set(), "stale NOT_REGISTERED entries"
    for name, reason in NOT_REGISTERED.items():
        assert reason and "\n" not in reason and len(reason) <= 100, name


def test_callbacks_are_left_out_as_callbacks():
    objects = public_serializable_objects()
    callbacks = {name for name, obj in objects.items()
                 if isinstance(obj, type) and issubclass(obj, keras.callbacks.Callback)}
    assert callbacks and callbacks <= set(NOT_REGISTERED)
    assert all(NOT_REGISTERED[name] == _CALLBACK for name in callbacks)


def test_distillation_losses_are_registered_keras_losses():
    from keras_dnnopt.distillation import losses

    names = set(registry())
    for cls in (losses.KLDistillationLoss, losses.MSEDistillationLoss):
        assert cls.__name__ in names and issubclass(cls, keras.losses.Loss)
        assert cls(temperature=2.5).get_config()["temperature"] == 2.5


# ----------------------------------------------------------------- every model kind


def _base():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _make(kind):
    from keras_dnnopt.compression import cluster, prune, quantize

    if kind == "plain":
        return _base()
    if kind == "pruned":
        return prune(_base(), 0.5, schedule="constant")
    if kind == "clustered":
        return cluster(_base(), 4)
    if kind == "quantized":
        return quantize(_base())
    if kind == "pruned+quantized":
        return quantize(prune(_base(), 0.5, schedule="constant"))
    raise AssertionError(kind)


MODEL_KINDS = ["plain", "pruned", "clustered", "quantized", "pruned+quantized"]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_model_kind_round_trips(kind, tmp_path):
    if "quantized" in kind and not USING_TF_KERAS:
        pytest.skip("QAT runs through TF-MOT, tf_keras only; `quantize` raises on Keras 3")
    model = _make(kind)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    from keras_dnnopt.compression import PruningCallback

    callbacks = [PruningCallback()] if kind == "pruned" else []
    model.fit(x, Y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
    restored = assert_model_round_trip(model, tmp_path, x=x)
    assert [type(layer).__name__ for layer in restored.layers] == [
        type(layer).__name__ for layer in model.layers]
    # It still trains (compiled from the saved configuration).
    restored.fit(x, Y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
    if kind == "clustered":
        # Still clustered after training (on Keras 3 a constraint `load_model` re-attaches).
        from keras_dnnopt.compression import strip_clustering

        kernels = [layer.kernel for layer in strip_clustering(restored).layers
                   if hasattr(layer, "kernel")]
        assert kernels and all(len(np.unique(np.asarray(k))) <= 4 for k in kernels)


@pytest.mark.skipif(not USING_TF_KERAS, reason="QAT (TF-MOT) runs on tf_keras only")
def test_qat_checkpoint_from_plain_model_save_loads(tmp_path):
    """A `.keras` file written by `model.save` (not `save_model`): the user's checkpoint."""
    model = _make("quantized")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, Y, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "qat.keras")
    model.save(path)
    restored = load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert len(restored.weights) == len(model.weights)
    restored.fit(x, Y, batch_size=4, epochs=1, verbose=0)


def test_save_model_is_atomic_and_replaces(tmp_path):
    path = str(tmp_path / "m.keras")
    save_model(_base(), path)
    save_model(_base(), path)
    assert os.listdir(tmp_path) == ["m.keras"]


def test_load_model_in_a_fresh_process(tmp_path):
    """Only `keras_dnnopt.export.saving` is imported: it registers what the file needs."""
    from keras_dnnopt.layers import ConvBlock
    from keras_dnnopt.schedules import WarmupCosineDecay

    inputs = keras.Input(INPUT_SHAPE)
    model = keras.Model(inputs, _head(ConvBlock(4, activation="hard_swish")(inputs)))
    _compiled(model, optimizer=keras.optimizers.SGD(WarmupCosineDecay(0.1, 10)))
    path = save_model(model, str(tmp_path / "m.keras"))
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", model.predict(X, verbose=0))
    code = textwrap.dedent(f"""
        import json, numpy as np
        from keras_dnnopt.export.saving import load_model
        model = load_model({path!r})
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        err = float(np.abs(got - np.load({str(tmp_path / "y.npy")!r})).max())
        from keras_dnnopt.backend import keras
        names = sorted(k for k in keras.saving.get_custom_objects() if k.startswith({PREFIX!r}))
        print("JSON" + json.dumps({{"err": err, "names": names}}))
    """)
    result = json_result(run_python(code))
    assert result["err"] < 1e-5
    # `load_model` imported every module that registers something, not only what it needed.
    assert {n[len(PREFIX):] for n in result["names"]} == set(registry())


def test_bad_paths_name_the_argument(tmp_path):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(FileNotFoundError, match=r"Argument `path`.*Received: path='.*nope.keras'"):
        load_model(missing)
    with pytest.raises(ValueError, match=r"Argument `path` must end in '.keras'.*path='m.h5'"):
        load_model("m.h5")
    with pytest.raises(ValueError, match=r"Argument `path` must end in '.keras'.*path='m.h5'"):
        save_model(_base(), "m.h5")
    with pytest.raises(TypeError, match="Argument `path`"):
        load_model(3)
    with pytest.raises(FileNotFoundError, match=r"Argument `path`.*does not exist"):
        save_model(_base(), str(tmp_path / "no" / "m.keras"))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"Argument `path` is not a Keras.*corrupt.keras"):
        load_model(str(corrupt))
    truncated = tmp_path / "truncated.keras"
    good = save_model(_base(), str(tmp_path / "good.keras"))
    with open(good, "rb") as f:
        truncated.write_bytes(f.read()[:200])
    with pytest.raises(ValueError, match=r"Argument `path`.*truncated.keras"):
        load_model(str(truncated))
