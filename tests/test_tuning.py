"""Tests of keras_dnnopt.tuning, on the Keras in use (the suite runs once per Keras).

Data: small subsets of scikit-learn's digits (8x8x1). References: the MobileNet builders
(a full-depth hypermodel is exactly the builder's model), the tuner's own trial scores (the
returned best model reproduces the best score), the batches counted by a callback,
the closed-form schedule sizes, and NumPy predictions for the cross-validation metrics.
Models are tiny, trained one epoch; the tuning ones run eagerly (a few steps are cheaper
eager than traced).
"""

import keras_tuner as kt
import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras
from keras_dnnopt.models import mobilenet_v1, mobilenet_v2
from keras_dnnopt.schedules import OneCycle, StepDecay, WarmupCosineDecay
from keras_dnnopt.tuning import (
    BayesianOptimization,
    CrossValidationResult,
    Hyperband,
    MobileNetHyperModel,
    RandomSearch,
    TuneResult,
    cross_validate,
    tune,
)

EAGER = {"run_eagerly": True}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[..., None] / 16.0).astype("float32")
    return x[:240], data.target[:240].astype("int64")


def tiny_hypermodel(**overrides):
    """A small MobileNetV1 space (1-2 blocks, alpha 0.25) searching the learning rate."""
    kwargs = dict(architecture="mobilenet_v1", alpha=0.25, num_blocks=[1, 2], dropout=0.0,
                  activation="relu", l2=0.0, optimizer="adam", learning_rate=[1e-2, 3e-3],
                  schedule="constant", batch_size=32, epochs=1, compile_kwargs=EAGER)
    kwargs.update(overrides)
    return MobileNetHyperModel((8, 8, 1), 10, **kwargs)


def completed(tuner):
    return [t for t in tuner.oracle.trials.values()
            if t.status == kt.engine.trial.TrialStatus.COMPLETED]


def schedule_of(model):
    """The learning rate schedule of a compiled model's optimizer (via its config)."""
    config = model.optimizer.get_config()["learning_rate"]
    return keras.optimizers.schedules.deserialize(config)


# ---------------------------------------------------------------------- tune, each tuner


@pytest.mark.parametrize("kind", ["random", "hyperband", "bayesian"])
def test_tune_returns_the_trained_best_model_for_each_tuner(kind, digits, tmp_path):
    x, y = digits
    extra = {"factor": 2} if kind == "hyperband" else {}
    result = tune(x[:160], y[:160], validation_data=(x[160:], y[160:]), tuner=kind,
                  max_trials=2, hypermodel=tiny_hypermodel(), seed=0,
                  directory=str(tmp_path), project_name=kind, **extra)
    assert isinstance(result, TuneResult)
    model, best_hp, tuner = result
    expected = {"random": RandomSearch, "hyperband": Hyperband,
                "bayesian": BayesianOptimization}[kind]
    assert isinstance(tuner, expected)
    assert isinstance(model, keras.Model)  # a model of the Keras in use
    trials = completed(tuner)
    assert len(trials) == 2
    assert best_hp.values["mobilenet_v1_num_blocks"] in (1, 2)
    assert best_hp.values["learning_rate"] in (1e-2, 3e-3)
    best_score = max(t.score for t in trials)
    assert tuner.oracle.get_best_trials(1)[0].score == best_score
    # The returned model is the best trial's trained model: it reproduces the best score.
    accuracy = model.evaluate(x[160:], y[160:], verbose=0, return_dict=True)["accuracy"]
    np.testing.assert_allclose(accuracy, best_score, atol=1e-6)
    depth = best_hp.values["mobilenet_v1_num_blocks"]
    names = {layer.name for layer in model.layers}
    assert f"block{depth}_pointwise" in names and f"block{depth + 1}_pointwise" not in names


@pytest.mark.skipif(not USING_TF_KERAS, reason="the limitation bridged is tf_keras'")
def test_plain_keras_tuner_rejects_tf_keras_models_which_the_bridge_accepts(tmp_path):
    def build(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("u", 2, 3)),
                                  keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        return model

    class Plain(kt.RandomSearch):
        # Only the Keras-independent fix (tensorboard, which TF 2.21 does not install, is
        # imported by every trial upstream), so that the Keras check is reached.
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            pass

    plain = Plain(build, objective="loss", max_trials=1, directory=str(tmp_path),
                  project_name="plain")
    x, y = np.ones((4, 4), "float32"), np.ones((4, 2), "float32")
    with pytest.raises(TypeError, match="valid Keras Model"):
        plain.search(x, y, epochs=1, verbose=0)
    bridged = RandomSearch(build, objective="loss", max_trials=1, directory=str(tmp_path),
                           project_name="bridged")
    bridged.search(x, y, epochs=1, verbose=0)
    assert len(completed(bridged)) == 1


def test_tune_max_trials_one_is_the_smallest_search(tmp_path):
    def build(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(hp.Choice("lr", [0.1, 0.01])), "mse",
                      run_eagerly=True)
        return model

    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    result = tune(x, y, max_trials=1, hypermodel=build, objective="loss",
                  directory=str(tmp_path), fit_kwargs={"epochs": 1})
    assert len(completed(result.tuner)) == 1
    with pytest.raises(ValueError, match=r"Argument `max_trials` must be >= 1\. "
                                         r"Received: max_trials=0"):
        tune(x, y, max_trials=0, hypermodel=build, objective="loss")


# ------------------------------------------------------- tuning distillation and pruning


def test_tune_distillation_temperature(digits, tmp_path):
    from keras_dnnopt.distillation import Distiller

    x, y = digits
    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(10)], name="teacher")
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=2, verbose=0)
    built = []

    def build(hp):
        student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                    keras.layers.Dense(10)], name="student")
        distiller = Distiller(teacher, student, alpha=0.5,
                              temperature=hp.Choice("temperature", [1.0, 4.0]))
        distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"], run_eagerly=True)
        # A Distiller is not marked built by `fit` (reported to the distillation owner);
        # keras-tuner saves the best epoch's weights, which needs a built model.
        distiller(x[:1])
        built.append(distiller.temperature)
        return distiller

    model, best_hp, tuner = tune(x[:160], y[:160], validation_data=(x[160:], y[160:]),
                                 max_trials=2, hypermodel=build, seed=0,
                                 directory=str(tmp_path), fit_kwargs={"epochs": 1,
                                                                      "batch_size": 32})
    trials = completed(tuner)
    assert sorted(t.hyperparameters.values["temperature"] for t in trials) == [1.0, 4.0]
    assert {1.0, 4.0} <= set(built)  # each trial's Distiller got its trial's temperature
    assert isinstance(model, Distiller)
    assert model.temperature == best_hp.values["temperature"]
    accuracy = model.evaluate(x[160:], y[160:], verbose=0, return_dict=True)["accuracy"]
    np.testing.assert_allclose(accuracy, max(t.score for t in trials), atol=1e-6)


def test_tune_pruning_target_sparsity(digits, tmp_path):
    compression = pytest.importorskip("keras_dnnopt.compression")
    x, y = digits

    class PrunedDense(kt.HyperModel):
        def build(self, hp):
            base = keras.Sequential([
                keras.Input((8, 8, 1)), keras.layers.Flatten(),
                keras.layers.Dense(16, activation="relu", name="hidden"),
                keras.layers.Dense(10, activation="softmax", name="out")])
            pruned = compression.prune(base, hp.Choice("target_sparsity", [0.25, 0.75]),
                                       schedule="constant", frequency=1)
            pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"],
                           run_eagerly=True)
            return pruned

        def fit(self, hp, model, *args, callbacks=(), **kwargs):
            # A fresh PruningCallback per trial (keras-tuner deep-copies the callbacks it
            # is given, which PruningCallback does not support).
            callbacks = [*callbacks, compression.PruningCallback()]
            return model.fit(*args, callbacks=callbacks, **kwargs)

    model, best_hp, tuner = tune(
        x[:160], y[:160], validation_data=(x[160:], y[160:]), max_trials=2,
        hypermodel=PrunedDense(), seed=0, directory=str(tmp_path),
        fit_kwargs={"epochs": 1, "batch_size": 32})
    trials = completed(tuner)
    assert sorted(t.hyperparameters.values["target_sparsity"] for t in trials) == [0.25, 0.75]
    # The best model carries its trial's sparsity: count the zeros of its stripped kernel.
    stripped = compression.strip_pruning(model)
    kernel = stripped.get_layer("hidden").get_weights()[0]
    np.testing.assert_allclose(np.mean(kernel == 0), best_hp.values["target_sparsity"],
                               atol=0.02)


# --------------------------------------------------------------- MobileNetHyperModel


def test_default_search_space_covers_every_dimension():
    hp = kt.HyperParameters()
    model = MobileNetHyperModel((8, 8, 1), 10).build(hp)
    assert isinstance(model, keras.Model)
    space = {p.name: p for p in hp.space}
    assert set(space) == {
        "architecture", "mobilenet_v1_num_blocks", "mobilenet_v2_num_blocks", "alpha",
        "dropout", "activation", "l2", "optimizer", "learning_rate", "schedule",
        "batch_size", "epochs"}
    assert list(space["architecture"].values) == ["mobilenet_v1", "mobilenet_v2"]
    assert list(space["alpha"].values) == [0.25, 0.5, 0.75, 1.0]
    assert list(space["optimizer"].values) == ["sgd", "adam", "adamw"]
    assert list(space["schedule"].values) == ["constant", "warmup_cosine", "step",
                                               "one_cycle"]
    assert list(space["batch_size"].values) == [16, 32, 64, 128]
    assert (space["mobilenet_v1_num_blocks"].min_value,
            space["mobilenet_v1_num_blocks"].max_value) == (7, 13)
    assert (space["mobilenet_v2_num_blocks"].min_value,
            space["mobilenet_v2_num_blocks"].max_value) == (9, 17)
    learning_rate = space["learning_rate"]
    assert (learning_rate.min_value, learning_rate.max_value,
            learning_rate.sampling) == (1e-4, 1e-1, "log")


def test_arguments_fix_or_restrict_dimensions():
    hp = kt.HyperParameters()
    MobileNetHyperModel(
        (8, 8, 1), 10, architecture="mobilenet_v2", alpha=0.5, num_blocks=[1, 2],
        optimizer=["adam", "adamw"],
        learning_rate={"min_value": 1e-3, "max_value": 1e-2, "sampling": "log"},
        batch_size={"min_value": 8, "max_value": 32, "step": 8}, epochs=3,
    ).build(hp)
    space = {p.name: p for p in hp.space}
    assert isinstance(space["architecture"], kt.engine.hyperparameters.Fixed)
    assert isinstance(space["alpha"], kt.engine.hyperparameters.Fixed)
    assert hp.values["alpha"] == 0.5 and hp.values["epochs"] == 3
    assert "mobilenet_v1_num_blocks" not in space
    assert list(space["mobilenet_v2_num_blocks"].values) == [1, 2]
    assert list(space["optimizer"].values) == ["adam", "adamw"]
    assert (space["learning_rate"].min_value, space["learning_rate"].max_value) == (1e-3, 1e-2)
    assert (space["batch_size"].min_value, space["batch_size"].max_value,
            space["batch_size"].step) == (8, 32, 8)


@pytest.mark.parametrize("builder, arch, depth", [(mobilenet_v1, "mobilenet_v1", 13),
                                                  (mobilenet_v2, "mobilenet_v2", 17)])
def test_full_depth_is_the_builders_model(builder, arch, depth):
    hm = MobileNetHyperModel((8, 8, 1), 10, architecture=arch, alpha=0.25, num_blocks=depth,
                             dropout=0.2, activation="relu", l2=1e-4)
    model = hm.build(kt.HyperParameters())
    reference = builder((8, 8, 1), 10, alpha=0.25, dropout=0.2, activation="relu",
                        kernel_regularizer=1e-4)
    assert model.count_params() == reference.count_params()
    assert [layer.name for layer in model.layers][1:] == [
        layer.name for layer in reference.layers][1:]
    assert len(model.losses) == len(reference.losses) > 0  # the L2 terms


@pytest.mark.parametrize("arch, depth, kept, dropped", [
    ("mobilenet_v1", 3, "block3_pointwise", "block4_depthwise"),
    ("mobilenet_v2", 2, "block1_project", "block2_expand"),
])
def test_num_blocks_truncates_the_builders_model(arch, depth, kept, dropped):
    hm = MobileNetHyperModel((8, 8, 1), 10, architecture=arch, alpha=0.25, num_blocks=depth,
                             dropout=0.2)
    model = hm.build(kt.HyperParameters())
    names = [layer.name for layer in model.layers]
    assert kept in names and dropped not in names
    assert names[-3:] == ["avg_pool", "dropout", "predictions"]
    assert model.output_shape == (None, 10)
    full = ARCH_BUILDERS[arch]((8, 8, 1), 10, alpha=0.25)
    assert model.count_params() < full.count_params()


ARCH_BUILDERS = {"mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2}


@pytest.mark.parametrize("name, cls, check", [
    ("sgd", "SGD", lambda opt: np.isclose(float(opt.get_config()["momentum"]), 0.9)),
    ("adam", "Adam", lambda opt: True),
    ("adamw", "AdamW", lambda opt: np.isclose(float(opt.get_config()["weight_decay"]), 1e-3)),
])
def test_optimizers(name, cls, check):
    hm = tiny_hypermodel(optimizer=name, learning_rate=0.05, num_blocks=1, weight_decay=1e-3)
    model = hm.build(kt.HyperParameters())
    assert type(model.optimizer).__name__ == cls
    assert check(model.optimizer)
    np.testing.assert_allclose(float(model.optimizer.get_config()["learning_rate"]), 0.05,
                               rtol=1e-6)


def test_schedules_span_the_whole_training():
    # 100 samples, batch 32 -> 4 steps per epoch; 2 epochs -> 8 steps.
    expected = {
        "warmup_cosine": (WarmupCosineDecay, {"decay_steps": 8, "warmup_steps": 0}),
        "step": (StepDecay, {"boundaries": [4, 6]}),
        "one_cycle": (OneCycle, {"total_steps": 8}),
    }
    for name, (cls, fields) in expected.items():
        hm = tiny_hypermodel(schedule=name, num_blocks=1, learning_rate=0.1, epochs=2,
                             num_train_samples=100)
        schedule = schedule_of(hm.build(kt.HyperParameters()))
        assert isinstance(schedule, cls), name
        config = schedule.get_config()
        for field, value in fields.items():
            assert list(np.atleast_1d(config[field])) == list(np.atleast_1d(value)), name


def test_fit_takes_batch_size_and_epochs_from_hp(digits):
    x, y = digits

    class CountBatches(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            CountBatches.batches += 1

    hm = tiny_hypermodel(num_blocks=1, batch_size=16, epochs=2, schedule="warmup_cosine")
    hp = kt.HyperParameters()
    model = hm.build(hp)
    history = hm.fit(hp, model, x[:64], y[:64], batch_size=64, epochs=5, verbose=0,
                     callbacks=[CountBatches()])
    assert len(history.history["loss"]) == 2
    assert CountBatches.batches == 2 * 4  # 64 samples / 16 per batch, 2 epochs
    # num_train_samples=None: fit sized the schedule for 64 samples (8 steps, 10% warm-up).
    config = schedule_of(model).get_config()
    assert (config["decay_steps"], config["warmup_steps"]) == (8, 0)

    # Under Hyperband the tuner's epochs win over the `epochs` hyperparameter.
    hp.Fixed("tuner/epochs", 1)
    history = hm.fit(hp, hm.build(hp), x[:64], y[:64], epochs=1, initial_epoch=0, verbose=0)
    assert len(history.history["loss"]) == 1


# ------------------------------------------------------------------------- bad input


def test_unknown_tuner_name_lists_the_valid_ones(digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"Argument `tuner` must be one of 'random', "
                                         r"'hyperband', 'bayesian'\. Received: tuner='grid'"):
        tune(x, y, validation_data=(x, y), tuner="grid")


def test_build_returning_a_non_model_is_a_clear_error(tmp_path):
    x, y = np.ones((4, 4), "float32"), np.ones((4,), "float32")
    with pytest.raises(TypeError, match=r"must return a .* model.*Received: model='nope'"):
        tune(x, y, max_trials=1, hypermodel=lambda hp: "nope", objective="loss",
             directory=str(tmp_path))
    with pytest.raises(TypeError, match=r"Argument `hypermodel` must be a "
                                        r"keras_tuner.HyperModel"):
        tune(x, y, hypermodel=3, objective="loss")


def test_build_returning_a_model_of_the_other_keras(other_keras, tmp_path):
    def build(hp):
        model = other_keras.Sequential([other_keras.Input((4,)), other_keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        return model

    x, y = np.ones((4, 4), "float32"), np.ones((4,), "float32")
    other = "Keras 3" if USING_TF_KERAS else "tf_keras"
    with pytest.raises(TypeError, match=f"is a model of {other}.*TF_USE_LEGACY_KERAS"):
        tune(x, y, max_trials=1, hypermodel=build, objective="loss", directory=str(tmp_path))


def test_tune_input_errors(digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"Argument `validation_data` is needed for "
                                         r"objective='val_accuracy'"):
        tune(x, y)
    with pytest.raises(ValueError, match=r"add a channel axis.*x\.shape=\(240, 8, 8\)"):
        tune(x[..., 0], y, validation_data=(x, y))
    with pytest.raises(ValueError, match=r"Argument `max_trials` must be an integer"):
        tune(x, y, validation_data=(x, y), max_trials=1.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0), r"Argument `alpha` must be > 0\. Received: alpha=0"),
    (dict(alpha=[0.5, -1]), r"Argument `alpha` must be > 0\. Received: alpha=-1"),
    (dict(optimizer="rmsprop"), r"Argument `optimizer` must be one of 'sgd', 'adam', "
                                r"'adamw'\. Received: optimizer='rmsprop'"),
    (dict(schedule="cosine"), r"Argument `schedule` must be one of 'constant'"),
    (dict(architecture="mobilenet_v3"), r"Argument `architecture` must be one of"),
    (dict(architecture="mobilenet_v1", num_blocks=14),
     r"Argument `num_blocks` must be <= 13, the number of blocks of mobilenet_v1\. "
     r"Received: num_blocks=14"),
    (dict(num_blocks=0), r"Argument `num_blocks` must be > 0"),
    (dict(dropout=1.0), r"Argument `dropout` must be in \[0, 1\)\. Received: dropout=1.0"),
    (dict(l2=-1e-4), r"Argument `l2` must be >= 0"),
    (dict(batch_size=[32, 0]), r"Argument `batch_size` must be > 0\. Received: batch_size=0"),
    (dict(epochs=0), r"Argument `epochs` must be > 0"),
    (dict(learning_rate=[]), r"Argument `learning_rate` must list at least one value"),
    (dict(learning_rate={"min_value": 1e-2}), r"must be a dict with 'min_value' and "
                                              r"'max_value'"),
    (dict(learning_rate={"min_value": 1e-2, "max_value": 1e-3}), r"min_value <= max_value"),
    (dict(activation="nope"), r"Argument `activation` must be one of"),
    (dict(num_classes=0), r"Argument `num_classes` must be > 0"),
    (dict(input_shape=(8, 8)), r"Argument `input_shape` must have 3 dimensions"),
])
def test_hypermodel_rejects_bad_values(kwargs, message):
    args = {"input_shape": (8, 8, 1), "num_classes": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MobileNetHyperModel(**args)


def test_hypermodel_boundaries_that_are_valid():
    # The valid side of the boundaries above: 13 blocks of V1, dropout 0, l2 0, 1 epoch.
    hm = MobileNetHyperModel((8, 8, 1), 10, architecture="mobilenet_v1", num_blocks=13,
                             dropout=0.0, l2=0.0, epochs=1, batch_size=1)
    assert hm.max_epochs == 1


# ------------------------------------------------------------------- cross_validate


def dense_classifier():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=True)
    return model


def test_cross_validate_metrics_match_an_independent_computation(digits):
    x, y = digits[0][:150], digits[1][:150]
    result = cross_validate(dense_classifier, x, y, k=3, epochs=1, batch_size=32, seed=0,
                            return_models=True)
    assert isinstance(result, CrossValidationResult)
    assert len(result.fold_metrics) == len(result.folds) == len(result.models) == 3
    # The validation folds partition the data, each disjoint from its training part.
    all_val = np.sort(np.concatenate([val for _, val in result.folds]))
    np.testing.assert_array_equal(all_val, np.arange(150))
    for train, val in result.folds:
        assert not set(train) & set(val) and len(train) + len(val) == 150
        # Stratified: each class keeps its share of the fold, to within one sample.
        for label in np.unique(y):
            assert abs(np.sum(y[val] == label) - np.sum(y == label) / 3) <= 1
    accuracies, losses = [], []
    for model, (_, val), metrics in zip(result.models, result.folds, result.fold_metrics,
                                        strict=True):
        probs = model.predict(x[val], verbose=0)
        accuracies.append(np.mean(probs.argmax(axis=1) == y[val]))
        losses.append(np.mean(-np.log(probs[np.arange(len(val)), y[val]])))
        np.testing.assert_allclose(metrics["accuracy"], accuracies[-1], atol=1e-6)
        np.testing.assert_allclose(metrics["loss"], losses[-1], rtol=1e-4)
    np.testing.assert_allclose(result.mean["accuracy"], np.mean(accuracies), atol=1e-6)
    np.testing.assert_allclose(result.std["accuracy"], np.std(accuracies), atol=1e-6)
    np.testing.assert_allclose(result.mean["loss"], np.mean(losses), rtol=1e-4)
    # A fresh model per fold: distinct variables, different trained weights.
    kernels = [m.layers[-1].kernel for m in result.models]
    assert len({id(k) for k in kernels}) == 3
    assert not np.allclose(np.asarray(kernels[0]), np.asarray(kernels[1]))


def test_cross_validate_rejects_a_model_shared_between_folds(digits):
    x, y = digits[0][:60], digits[1][:60]
    shared = dense_classifier()
    with pytest.raises(ValueError, match=r"must return a new model for each fold.*fold 1"):
        cross_validate(lambda: shared, x, y, k=2, stratified=False)


def test_cross_validate_plain_kfold_for_regression(rng):
    x = rng.normal(size=(20, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5], "float32"))[:, None]

    def build():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"], run_eagerly=True)
        return model

    result = cross_validate(build, x, y, k=2, stratified=False, epochs=1, batch_size=5,
                            seed=1, return_models=True)
    assert [len(val) for _, val in result.folds] == [10, 10]
    for model, (_, val), metrics in zip(result.models, result.folds, result.fold_metrics,
                                        strict=True):
        error = model.predict(x[val], verbose=0) - y[val]
        np.testing.assert_allclose(metrics["mae"], np.mean(np.abs(error)), rtol=1e-5)
        np.testing.assert_allclose(metrics["loss"], np.mean(error**2), rtol=1e-5)
    assert result.models[0] is not result.models[1]


def test_cross_validate_bad_input(digits, other_keras):
    x, y = digits[0][:60], digits[1][:60]
    with pytest.raises(ValueError, match=r"Argument `k` must be >= 2\. Received: k=1"):
        cross_validate(dense_classifier, x, y, k=1)
    with pytest.raises(ValueError, match=r"Argument `k` must be an integer"):
        cross_validate(dense_classifier, x, y, k=2.5)
    y_rare = y.copy()
    y_rare[y_rare == 7] = 0
    y_rare[:2] = 7  # class 7 now has 2 samples
    with pytest.raises(ValueError, match=r"class 7 has 2 sample\(s\)\. Received: k=3"):
        cross_validate(dense_classifier, x, y_rare, k=3)
    with pytest.raises(ValueError, match=r"Argument `k` must be <= the number of samples "
                                         r"\(4\)"):
        cross_validate(dense_classifier, x[:4], y[:4], k=5, stratified=False)
    with pytest.raises(ValueError, match=r"same number of samples"):
        cross_validate(dense_classifier, x, y[:10])
    with pytest.raises(TypeError, match=r"Argument `build_fn` must be a function"):
        cross_validate("model", x, y)
    with pytest.raises(TypeError, match=r"Argument `build_fn` must return a model.*"
                                        r"Received: model=42"):
        cross_validate(lambda: 42, x, y, k=2)
    other = "Keras 3" if USING_TF_KERAS else "tf_keras"
    with pytest.raises(TypeError, match=f"is a model of {other}"):
        cross_validate(lambda: other_keras.Sequential([other_keras.Input((2,))]), x, y, k=2)

    def uncompiled():
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(10)])

    with pytest.raises(ValueError, match=r"must return a compiled model"):
        cross_validate(uncompiled, x, y, k=2)


def test_cross_validate_k_equal_to_the_smallest_class_is_accepted(digits):
    # The other side of the boundary above: class 7 with 2 samples and k=2.
    x, y = digits[0][:60], digits[1][:60].copy()
    y[y == 7] = 0
    y[:2] = 7
    result = cross_validate(dense_classifier, x, y, k=2, seed=0)
    for _, val in result.folds:
        assert np.sum(y[val] == 7) == 1
    assert set(result.mean) == {"loss", "accuracy"}


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_batch_norm_momentum_reaches_every_batch_norm_layer(momentum):
    model = MobileNetHyperModel((8, 8, 1), 10, batch_norm_momentum=momentum).build(
        kt.HyperParameters())
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == pytest.approx(momentum) for layer in norms)


@pytest.mark.parametrize("momentum", [-0.1, 1.0])
def test_batch_norm_momentum_outside_0_1_is_refused(momentum):
    with pytest.raises(ValueError, match=r"batch_norm_momentum.*Received: "
                                         rf"batch_norm_momentum={momentum}"):
        MobileNetHyperModel((8, 8, 1), 10, batch_norm_momentum=momentum)
