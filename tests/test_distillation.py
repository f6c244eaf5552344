"""Tests of keras_dnnopt.distillation, on the Keras in use (the suite runs once per Keras).

References: NumPy closed forms of the soft-target losses (single teacher and ensemble), a
plain `student.fit` for the sample/class-weight semantics, the same run without the
zero-weighted half of the data, a single-device run for `tf.distribute`, and the teacher's
own weights before `fit`. Models are tiny plain-Keras MLPs/CNNs.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf
from keras_dnnopt.distillation import (
    Distiller,
    FeatureMatch,
    cache_teacher_outputs,
    kl_distillation_loss,
    mse_distillation_loss,
    soft_targets,
)
from keras_dnnopt.distillation.losses import KLDistillationLoss, MSEDistillationLoss
from tests.helpers import assert_config_round_trip, save_and_load

SCCE = dict(from_logits=True)


# --------------------------------------------------------------------------- helpers


def mlp(hidden, name, classes=3, dim=6, batch_norm=False, dropout=0.0, activation=None):
    inputs = keras.Input((dim,))
    h = keras.layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(inputs)
    if batch_norm:
        h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    outputs = keras.layers.Dense(classes, activation=activation, name=f"{name}_logits")(h)
    return keras.Model(inputs, outputs, name=name)


def cnn(filters, name, classes=3):
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                            name=f"{name}_conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(classes, name=f"{name}_logits")(h)
    return keras.Model(inputs, outputs, name=name)


def data(n=32, dim=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)).astype("float32"),
            rng.integers(0, classes, size=(n,)).astype("int64"))


def clone(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def compiled(distiller, lr=0.1, metrics=None):
    distiller.compile(optimizer=keras.optimizers.SGD(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(**SCCE), metrics=metrics)
    return distiller


def np_softmax(z):
    z = np.asarray(z, "float64")
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def np_kl_loss(teacher_logits_list, student_logits, temperature):
    """Hinton's soft-target loss per sample, in NumPy: T^2 KL(mean_i p_i || q)."""
    p = np.mean([np_softmax(t / temperature) for t in teacher_logits_list], axis=0)
    log_q = np.log(np_softmax(student_logits / temperature))
    return temperature**2 * np.sum(p * (np.log(p) - log_q), axis=-1)


def np_cross_entropy(logits, labels):
    return -np.log(np_softmax(logits)[np.arange(len(labels)), labels])


def weights_equal(a, b, atol=0.0):
    return all(np.allclose(x, y, atol=atol, rtol=0) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- losses


def test_soft_targets_average_the_teachers_softened_outputs(rng):
    logits = [rng.normal(size=(5, 4)).astype("float32") for _ in range(3)]
    expected = np.mean([np_softmax(t / 3.0) for t in logits], axis=0)
    np.testing.assert_allclose(soft_targets(logits, 3.0).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(soft_targets(logits[0], 3.0).numpy(), np_softmax(logits[0] / 3.0),
                               rtol=1e-6)


@pytest.mark.parametrize("num_teachers", [1, 3])
def test_kl_loss_is_t_squared_kl_to_the_soft_targets(rng, num_teachers):
    teachers = [rng.normal(size=(5, 4)).astype("float32") for _ in range(num_teachers)]
    student = rng.normal(size=(5, 4)).astype("float32")
    got = kl_distillation_loss(teachers, student, 2.5).numpy()
    np.testing.assert_allclose(got, np_kl_loss(teachers, student, 2.5), rtol=1e-5)
    assert got.shape == (5,)
    if num_teachers == 1:  # a student equal to its teacher has nothing left to learn
        np.testing.assert_allclose(kl_distillation_loss(teachers, teachers[0], 2.5).numpy(),
                                   0.0, atol=1e-6)


def test_mse_loss_matches_mean_teacher_logits(rng):
    teachers = [rng.normal(size=(5, 4)).astype("float32") for _ in range(2)]
    student = rng.normal(size=(5, 4)).astype("float32")
    expected = np.mean((student - np.mean(teachers, axis=0)) ** 2, axis=-1)
    np.testing.assert_allclose(mse_distillation_loss(teachers, student).numpy(), expected,
                               rtol=1e-5)


@pytest.mark.parametrize("cls, closed_form", [
    (KLDistillationLoss, lambda t, s: np_kl_loss([t], s, 2.5)),
    (MSEDistillationLoss, lambda t, s: np.mean((s - t) ** 2, axis=-1)),
])
def test_distillation_loss_objects_reduce_the_closed_form(rng, cls, closed_form):
    teacher = rng.normal(size=(5, 4)).astype("float32")
    student = rng.normal(size=(5, 4)).astype("float32")
    weights = rng.uniform(0.0, 2.0, size=5).astype("float32")
    loss = cls(temperature=2.5)
    expected = closed_form(teacher, student)
    np.testing.assert_allclose(float(loss(teacher, student)), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss(teacher, student, sample_weight=weights)),
                               (expected * weights).sum() / 5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"Argument `temperature` must be > 0"):
        cls(temperature=0.0)


def test_distiller_with_a_distillation_loss_object_matches_kl_and_saves(tmp_path):
    from keras_dnnopt.export.saving import load_model, save_model

    x, y = data()
    teacher, student = mlp(8, "teacher"), mlp(4, "student")
    results = {}
    for loss in ("kl", KLDistillationLoss(temperature=2.0)):
        distiller = compiled(Distiller(teacher, student, temperature=2.0, alpha=0.3,
                                       distillation_loss=loss))
        results[type(loss).__name__] = distiller.evaluate(x, y, verbose=0, return_dict=True)
    for key, value in results["str"].items():
        np.testing.assert_allclose(results["KLDistillationLoss"][key], value, rtol=1e-5)
    restored = load_model(save_model(distiller, str(tmp_path / "distiller.keras")))
    assert type(restored.distillation_loss) is KLDistillationLoss
    assert restored.distillation_loss.temperature == 2.0
    got = restored.evaluate(x, y, verbose=0, return_dict=True)
    for key, value in results["KLDistillationLoss"].items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)


# --------------------------------------------------------------------------- the Distiller


@pytest.mark.parametrize("num_teachers", [1, 3])
def test_evaluate_reports_the_closed_form_losses(num_teachers):
    x, y = data()
    teachers = [mlp(8, f"teacher_{i}") for i in range(num_teachers)]
    student = mlp(4, "student")
    distiller = compiled(Distiller(teachers if num_teachers > 1 else teachers[0], student,
                                   temperature=2.0, alpha=0.3), metrics=["accuracy"])
    logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)

    t_logits = [t.predict(x, verbose=0) for t in teachers]
    s_logits = student.predict(x, verbose=0)
    student_loss = np_cross_entropy(s_logits, y).mean()
    distill_loss = np_kl_loss(t_logits, s_logits, 2.0).mean()
    np.testing.assert_allclose(logs["student_loss"], student_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], distill_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.3 * student_loss + 0.7 * distill_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], np.mean(s_logits.argmax(-1) == y))


def test_fit_logs_every_loss_and_metric_and_validation():
    x, y = data()
    distiller = compiled(Distiller(mlp(8, "teacher"), mlp(4, "student")), metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_data=(x, y))
    logs = history.history
    for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert key in logs and f"val_{key}" in logs
        assert np.all(np.isfinite(logs[key]))
    assert all(v > 0 for v in logs["distillation_loss"] + logs["student_loss"])
    assert logs["loss"][-1] < logs["loss"][0]
    np.testing.assert_allclose(distiller.predict(x, verbose=0),
                               distiller.student.predict(x, verbose=0), rtol=1e-6)


def test_the_teacher_is_frozen_batch_norm_statistics_included():
    x, y = data()
    teacher = mlp(8, "teacher", batch_norm=True, dropout=0.5)
    teacher.layers[2].moving_mean.assign(np.full(8, 0.3, "float32"))  # not the default 0
    before = [w.copy() for w in teacher.get_weights()]
    distiller = compiled(Distiller(teacher, mlp(4, "student", batch_norm=True)))
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y))
    assert weights_equal(before, teacher.get_weights())
    assert teacher.trainable  # the user's model is not mutated


@pytest.mark.parametrize("weighting", ["sample_weight", "class_weight"])
def test_alpha_one_trains_exactly_like_a_plain_fit(rng, weighting):
    x, y = data()
    student = mlp(4, "student")
    reference = clone(student)
    kwargs = ({"sample_weight": rng.uniform(0.0, 2.0, size=len(y)).astype("float32")}
              if weighting == "sample_weight" else {"class_weight": {0: 0.2, 1: 1.0, 2: 3.0}})
    reference.compile(keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(**SCCE))
    expected = reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, **kwargs)
    distiller = compiled(Distiller(mlp(8, "teacher"), student, alpha=1.0))
    got = distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, **kwargs)
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-5)
    assert weights_equal(student.get_weights(), reference.get_weights(), atol=1e-5)


def test_zero_sample_weights_equal_dropping_those_samples():
    """Weights (2, 0, 2, 0, ...) on batches of 8 give exactly the batches of 4 kept samples:
    `sum(loss * w) / 8 == mean over the 4 kept`, for every loss term and the gradients."""
    x, y = data(n=32)
    teacher, student = mlp(8, "teacher"), mlp(4, "student")
    student_kept = clone(student)
    weights = np.tile(np.array([2.0, 0.0], "float32"), 16)
    full = compiled(Distiller(teacher, student, alpha=0.5, temperature=2.0))
    kept = compiled(Distiller(teacher, student_kept, alpha=0.5, temperature=2.0))
    h_full = full.fit(x, y, sample_weight=weights, batch_size=8, epochs=2, shuffle=False,
                      verbose=0)
    h_kept = kept.fit(x[::2], y[::2], batch_size=4, epochs=2, shuffle=False, verbose=0)
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(h_full.history[key], h_kept.history[key], rtol=1e-5)
    assert weights_equal(student.get_weights(), student_kept.get_weights(), atol=1e-6)


def test_mse_and_callable_distillation_losses():
    x, y = data()
    teacher, student = mlp(8, "teacher"), mlp(4, "student")

    def my_mse(teacher_logits, student_logits):
        return tf.reduce_mean(tf.square(teacher_logits - student_logits), axis=-1)

    logs = {}
    for loss in ("mse", my_mse):
        distiller = compiled(Distiller(teacher, student, alpha=0.0, distillation_loss=loss))
        logs[str(loss)] = distiller.evaluate(x, y, verbose=0, return_dict=True)
    expected = np.mean((teacher.predict(x, verbose=0) - student.predict(x, verbose=0)) ** 2)
    for result in logs.values():
        np.testing.assert_allclose(result["distillation_loss"], expected, rtol=1e-5)
        np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)


def test_probability_outputs_with_from_logits_false():
    x, y = data()
    teacher, student = mlp(8, "teacher"), mlp(4, "student")
    soft_teacher, soft_student = (mlp(8, "soft_teacher", activation="softmax"),
                                  mlp(4, "soft_student", activation="softmax"))
    soft_teacher.set_weights(teacher.get_weights())
    soft_student.set_weights(student.get_weights())
    logits_logs = compiled(Distiller(teacher, student, alpha=0.0)).evaluate(
        x, y, verbose=0, return_dict=True)
    probs_logs = compiled(Distiller(soft_teacher, soft_student, alpha=0.0, from_logits=False)
                          ).evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(probs_logs["distillation_loss"], logits_logs["distillation_loss"],
                               rtol=1e-4)


def test_student_saves_and_loads_after_distillation(tmp_path):
    x, y = data()
    distiller = compiled(Distiller(mlp(8, "teacher"), mlp(4, "student", batch_norm=True)))
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    expected = distiller.student.predict(x, verbose=0)
    restored = save_and_load(distiller.student, str(tmp_path))
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)


def test_distiller_weights_checkpoint_and_restore(tmp_path):
    # `save_weights` / ModelCheckpoint(save_weights_only=True) / keras-tuner need it built.
    x, y = data()
    distiller = compiled(Distiller(mlp(8, "teacher"), mlp(4, "student")))
    assert distiller.built
    path = str(tmp_path / "distiller.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[checkpoint])
    expected = distiller.student.predict(x, verbose=0)
    fresh = Distiller(mlp(8, "teacher"), mlp(4, "student"))
    fresh.load_weights(path)
    np.testing.assert_allclose(fresh.student.predict(x, verbose=0), expected, atol=1e-6)


def test_get_config_round_trip():
    distiller = Distiller([mlp(8, "t1"), mlp(8, "t2")], mlp(4, "student"), temperature=3.0,
                          alpha=0.25, distillation_loss="mse")
    clone_ = assert_config_round_trip(distiller)
    assert (clone_.temperature, clone_.alpha, clone_.distillation_loss) == (3.0, 0.25, "mse")
    assert len(clone_.teachers) == 2
    features = Distiller(cnn(8, "teacher"), cnn(4, "student"),
                         feature_matches=[("student_conv", "teacher_conv", 0.5)])
    assert assert_config_round_trip(features).feature_matches[0].weight == 0.5


@pytest.mark.parametrize("distillation_loss, metrics", [("kl", ["accuracy"]), ("mse", None)])
def test_loaded_distiller_is_compiled_as_saved(tmp_path, distillation_loss, metrics):
    """`load_model` of a `.keras` Distiller: compiled with the same student loss, metrics and
    optimizer (its state too), so `evaluate` and `fit` run at once and match the original.
    Before `get_compile_config`/`compile_from_config`, both Kerases loaded it uncompiled
    ("`compile()` was not called as part of model loading")."""
    from keras_dnnopt.export.saving import load_model, save_model

    x, y = data()
    distiller = Distiller(mlp(8, "teacher"), mlp(4, "student"), temperature=2.0, alpha=0.3,
                          distillation_loss=distillation_loss)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                      ignore_class=2),
                      metrics=metrics)
    distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    expected = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)

    restored = load_model(save_model(distiller, str(tmp_path / "distiller.keras")))
    assert type(restored) is Distiller
    assert restored.get_compile_config() == distiller.get_compile_config()
    got = restored.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # One more epoch of each: the same losses, so the momentum slots were restored too.
    fits = [model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
            for model in (distiller, restored)]
    for key in fits[0]:
        np.testing.assert_allclose(fits[1][key], fits[0][key], rtol=1e-5, err_msg=key)


def test_uncompiled_distiller_saves_and_loads_uncompiled(tmp_path):
    from keras_dnnopt.export.saving import load_model, save_model

    distiller = Distiller(mlp(8, "teacher"), mlp(4, "student"))
    assert not distiller.get_compile_config()
    restored = load_model(save_model(distiller, str(tmp_path / "distiller.keras")))
    assert getattr(restored, "optimizer", None) is None
    x, _ = data()
    np.testing.assert_allclose(restored.predict(x, verbose=0), distiller.predict(x, verbose=0),
                               rtol=1e-6)


# --------------------------------------------------------------------------- features


def test_feature_matching_trains_the_projection_and_lowers_the_feature_loss(rng):
    x = rng.normal(size=(32, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, size=(32,))
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    distiller = compiled(Distiller(teacher, student, alpha=0.5, feature_matches=[
        FeatureMatch("student_conv", "teacher_conv", weight=2.0)]), lr=0.05)
    projection = distiller.projections[0]
    assert isinstance(projection, keras.layers.Conv2D) and projection.filters == 8
    before = [w.copy() for w in projection.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=8, verbose=0)
    losses = history.history["feature_loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert not weights_equal(before, projection.get_weights())

    # The logged feature loss is weight * MSE(projection(student conv), teacher conv).
    s_feat = keras.Model(student.inputs, student.get_layer("student_conv").output)(x)
    t_feat = keras.Model(teacher.inputs, teacher.get_layer("teacher_conv").output)(x)
    expected = 2.0 * np.mean((projection(s_feat).numpy() - t_feat.numpy()) ** 2)
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["feature_loss"], expected, rtol=1e-4)


def test_feature_matching_without_projection_when_channels_agree():
    distiller = Distiller(cnn(4, "teacher"), cnn(4, "student"),
                          feature_matches=[("student_conv", "teacher_conv")])
    assert distiller.projections == [None]


def test_feature_matching_errors():
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        Distiller(cnn(8, "teacher"), cnn(4, "student"), feature_matches=[("nope", "teacher_conv")])
    with pytest.raises(ValueError, match="may differ only in the last"):
        Distiller(cnn(8, "teacher"), cnn(4, "student"),
                  feature_matches=[("student_logits", "teacher_conv")])
    with pytest.raises(ValueError, match="single teacher"):
        Distiller([cnn(8, "t1"), cnn(8, "t2")], cnn(4, "student"),
                  feature_matches=[("student_conv", "t1_conv")])
    with pytest.raises(ValueError, match="Argument `weight` must be >= 0"):
        FeatureMatch("a", "b", weight=-1.0)
    assert FeatureMatch("a", "b", weight=0).weight == 0


# --------------------------------------------------------------------------- caching


def test_cached_outputs_train_exactly_like_the_live_teacher():
    x, y = data()
    teacher, student = mlp(8, "teacher", batch_norm=True), mlp(4, "student")
    student_live = clone(student)
    cached = cache_teacher_outputs(teacher, x, y, batch_size=8, shuffle=False)
    live = compiled(Distiller(teacher, student_live, alpha=0.3))
    h_live = live.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    # Break the live teacher: training on the cache must not call it.
    teacher.set_weights([np.zeros_like(w) for w in teacher.get_weights()])
    distiller = compiled(Distiller(teacher, student, alpha=0.3))
    h_cached = distiller.fit(cached, epochs=2, verbose=0)
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(h_cached.history[key], h_live.history[key], rtol=1e-5)
    assert weights_equal(student.get_weights(), student_live.get_weights(), atol=1e-6)


def test_cache_of_a_shuffled_dataset_keeps_inputs_and_outputs_paired():
    x, y = data(n=40)
    teachers = [mlp(8, "t1"), mlp(8, "t2")]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(40, seed=1).batch(8)
    cached = cache_teacher_outputs(teachers, dataset, seed=0)
    seen = 0
    for features, labels in cached:
        inputs, outputs = features["inputs"].numpy(), features["teacher_outputs"].numpy()
        assert outputs.shape == (len(inputs), 2, 3)
        for i, teacher in enumerate(teachers):
            np.testing.assert_allclose(outputs[:, i], teacher(inputs, training=False).numpy(),
                                       rtol=1e-5, atol=1e-6)
        rows = [np.flatnonzero((x == row).all(axis=1))[0] for row in inputs]
        np.testing.assert_array_equal(labels.numpy(), y[rows])
        seen += len(inputs)
    assert seen == 40
    distiller = compiled(Distiller(teachers, mlp(4, "student")))
    assert np.isfinite(distiller.fit(cached, epochs=1, verbose=0).history["loss"][0])


@pytest.mark.parametrize("augment", ["tf_random", "keras_layer"])
def test_cache_refuses_random_augmentation(augment):
    x, y = data()
    images = x.reshape(32, 6, 1, 1).repeat(6, axis=2)
    if augment == "tf_random":
        generator = tf.random.Generator.from_seed(3)  # advances from one pass to the next

        def aug(a, b):
            return a + generator.uniform(tf.shape(a)), b
    else:
        flip = keras.layers.RandomFlip("horizontal_and_vertical", seed=3)

        def aug(a, b):
            return flip(a, training=True), b
    dataset = tf.data.Dataset.from_tensor_slices((images, y)).batch(8).map(aug)
    with pytest.raises(ValueError, match="different inputs on two passes"):
        cache_teacher_outputs(cnn(4, "teacher"), dataset)
    # Without augmentation the same pipeline is accepted.
    plain = tf.data.Dataset.from_tensor_slices((images, y)).batch(8)
    assert cache_teacher_outputs(cnn(4, "teacher"), plain).cardinality() == 4


def test_cache_errors():
    x, y = data()
    teacher = mlp(8, "teacher")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match="must be None when `x` is a tf.data.Dataset"):
        cache_teacher_outputs(teacher, dataset, y)
    with pytest.raises(ValueError, match="finite dataset"):
        cache_teacher_outputs(teacher, dataset.repeat())
    with pytest.raises(ValueError, match=r"Argument `batch_size` must be > 0. Received: "
                                         r"batch_size=0"):
        cache_teacher_outputs(teacher, x, y, batch_size=0)
    cached = cache_teacher_outputs(teacher, x, y, batch_size=8)
    two = compiled(Distiller([teacher, mlp(8, "t2")], mlp(4, "student")))
    with pytest.raises(ValueError, match="one slot per teacher"):
        two.fit(cached, epochs=1, verbose=0)
    features = compiled(Distiller(cnn(8, "teacher"), cnn(4, "student"),
                                  feature_matches=[("student_conv", "teacher_conv")]))
    images = np.zeros((8, 6, 6, 1), "float32")
    with pytest.raises(ValueError, match="Feature matching needs the live teacher"):
        features.fit(cache_teacher_outputs(cnn(8, "teacher"), images, y[:8]), verbose=0)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("alpha", [-0.1, 1.1])
def test_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match=rf"Argument `alpha` must be in \[0, 1\]. "
                                         rf"Received: alpha={alpha}"):
        Distiller(mlp(8, "teacher"), mlp(4, "student"), alpha=alpha)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_at_the_bounds_is_accepted(alpha):
    assert Distiller(mlp(8, "teacher"), mlp(4, "student"), alpha=alpha).alpha == alpha


@pytest.mark.parametrize("temperature", [0, -1.0])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match=rf"Argument `temperature` must be > 0. "
                                         rf"Received: temperature={temperature}"):
        Distiller(mlp(8, "teacher"), mlp(4, "student"), temperature=temperature)


def test_small_positive_temperature_is_accepted():
    assert Distiller(mlp(8, "teacher"), mlp(4, "student"), temperature=1e-3).temperature == 1e-3


def test_incompatible_output_shapes():
    with pytest.raises(ValueError, match=r"same output shape.*\(None, 3\).*\(None, 4\)"):
        Distiller(mlp(8, "teacher"), mlp(4, "student", classes=4))
    Distiller(mlp(8, "teacher", classes=4), mlp(4, "student", classes=4))


def test_teacher_must_be_built():
    unbuilt = keras.Sequential([keras.layers.Dense(3)], name="lazy_teacher")
    with pytest.raises(ValueError, match=r"`teacher` must be a built model.*'lazy_teacher'"):
        Distiller(unbuilt, mlp(4, "student"))
    with pytest.raises(ValueError, match=r"`teacher` must be a built model"):
        cache_teacher_outputs(unbuilt, np.zeros((2, 6), "float32"))
    unbuilt.build((None, 6))
    Distiller(unbuilt, mlp(4, "student"))


def test_unknown_distillation_loss():
    with pytest.raises(ValueError, match=r"Received: distillation_loss='kld'"):
        Distiller(mlp(8, "teacher"), mlp(4, "student"), distillation_loss="kld")


def test_compile_needs_a_student_loss_unless_alpha_is_zero():
    with pytest.raises(ValueError, match=r"Argument `loss`.*Received: loss=None, alpha=0.1"):
        Distiller(mlp(8, "teacher"), mlp(4, "student")).compile("sgd")
    Distiller(mlp(8, "teacher"), mlp(4, "student"), alpha=0.0).compile("sgd")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_model_of_the_other_keras(other_keras, role):
    foreign = other_keras.Sequential([other_keras.Input((6,)), other_keras.layers.Dense(3)])
    models = {"teacher": mlp(8, "teacher"), "student": mlp(4, "student"), role: foreign}
    with pytest.raises(TypeError, match=rf"Argument `{role}` is a model of"):
        Distiller(**models)


# --------------------------------------------------------------------------- tf.distribute

_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from keras_dnnopt.backend import keras
    from keras_dnnopt.distillation import Distiller, cache_teacher_outputs

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    w = rng.uniform(0.0, 2.0, size=64).astype("float32")

    def mlp(hidden, name, bn):
        i = keras.Input((6,))
        h = keras.layers.Dense(hidden, activation="relu")(i)
        if bn:
            h = keras.layers.BatchNormalization()(h)
        return keras.Model(i, keras.layers.Dense(3)(h), name=name)

    keras.utils.set_random_seed(0)
    teacher_weights = mlp(16, "teacher", True).get_weights()
    student_weights = mlp(4, "student", False).get_weights()

    def run(cached):
        teacher, student = mlp(16, "teacher", True), mlp(4, "student", False)
        teacher.set_weights(teacher_weights)
        student.set_weights(student_weights)
        d = Distiller(teacher, student, alpha=0.3, temperature=2.0)
        d.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
        if cached:
            data = cache_teacher_outputs(teacher, x, y, w, batch_size=16, shuffle=False)
            h = d.fit(data, epochs=3, verbose=0, validation_data=(x, y))
        else:
            h = d.fit(x, y, sample_weight=w, batch_size=16, epochs=3, shuffle=False,
                      verbose=0, validation_data=(x, y))
        return {k: [float(v) for v in vals] for k, vals in h.history.items()}

    out = {"single": run(False), "single_cached": run(True)}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out["replicas"] = strategy.num_replicas_in_sync
    with strategy.scope():
        out["mirrored"] = run(False)
        out["mirrored_cached"] = run(True)
    print("JSON" + json.dumps(out))
""")


def test_mirrored_strategy_logs_match_a_single_device_run():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], env=env, cwd=root,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("JSON")]
    assert lines, result.stderr[-3000:]
    out = json.loads(lines[-1][4:])
    assert out["replicas"] == 2
    single = out["single"]
    for key in ("loss", "student_loss", "distillation_loss", "val_loss",
                "val_distillation_loss"):
        assert min(single[key]) > 0.01, (key, single[key])  # not the logged-zeros failure
        for run in ("mirrored", "single_cached", "mirrored_cached"):
            np.testing.assert_allclose(out[run][key], single[key], atol=1e-4, rtol=0,
                                       err_msg=f"{run} {key}")
    np.testing.assert_allclose(out["mirrored"]["accuracy"], single["accuracy"], atol=1e-6)


# --------------------------------------------------------------------------- compression


def _tfmot():
    if not USING_TF_KERAS:
        pytest.skip("TF-MOT wraps tf_keras models only and rejects Keras 3 models; the "
                    "package's own Keras 3 pruning comes with issue 4")
    return pytest.importorskip("tensorflow_model_optimization")


def test_distilling_a_tfmot_pruned_student_keeps_its_sparsity():
    tfmot = _tfmot()
    x, y = data(n=64)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    student = tfmot.sparsity.keras.prune_low_magnitude(mlp(16, "student"),
                                                       pruning_schedule=schedule)
    distiller = compiled(Distiller(mlp(16, "teacher"), student), lr=0.05)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0,
                            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    assert np.isfinite(history.history["loss"]).all()
    stripped = tfmot.sparsity.keras.strip_pruning(distiller.student)
    for name in ("student_hidden", "student_logits"):
        kernel = stripped.get_layer(name).get_weights()[0]
        assert abs(np.mean(kernel == 0) - 0.5) < 0.05, (name, np.mean(kernel == 0))
    np.testing.assert_allclose(stripped.predict(x, verbose=0),
                               distiller.student.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_distilling_a_quantization_aware_student_keeps_its_fake_quant():
    tfmot = _tfmot()
    x, y = data(n=64)
    student = tfmot.quantization.keras.quantize_model(mlp(16, "student"))
    distiller = compiled(Distiller(mlp(16, "teacher"), student), lr=0.05)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    wrappers = [layer for layer in distiller.student.layers
                if "QuantizeWrapper" in type(layer).__name__]
    assert len(wrappers) == 2
    # The output quantizer's range was learned during distillation, and the outputs lie
    # on its 8-bit grid: the gaps between distinct outputs are whole multiples of a step.
    last = wrappers[-1]
    low = [float(v.numpy()) for v in last.weights if "post_activation_min" in v.name]
    high = [float(v.numpy()) for v in last.weights if "post_activation_max" in v.name]
    assert low and high and high[0] > low[0], (low, high)
    step = (high[0] - low[0]) / 255.0
    values = np.unique(distiller.student.predict(x, verbose=0))
    gaps = np.diff(values) / step
    assert len(values) > 10
    np.testing.assert_allclose(gaps, np.round(gaps), atol=1e-2)
