import os

import pytest

from keras_dnnopt import backend
from keras_dnnopt.backend import keras
from keras_dnnopt.utils import validation


def test_backend_follows_tf_keras():
    import tensorflow as tf

    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True")
    assert backend.USING_TF_KERAS is legacy
    assert backend.keras_flavour() == ("tf_keras" if legacy else "keras3")
    # A model built with tf.keras is a model of the Keras in use.
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(1)])
    assert backend.check_model(model) is model


def test_check_model_rejects_other_keras_with_switch_hint(other_keras):
    foreign = other_keras.Sequential([other_keras.Input(shape=(2,)), other_keras.layers.Dense(1)])
    expected_other = "Keras 3" if backend.USING_TF_KERAS else "tf_keras"
    with pytest.raises(TypeError, match=f"`model` is a model of {expected_other}") as info:
        backend.check_model(foreign)
    assert "TF_USE_LEGACY_KERAS" in str(info.value)
    assert backend.KERAS_NAME in str(info.value)
    # Both Kerases are named, and the way to use this model says which way to switch.
    assert "Keras 3" in str(info.value) and "tf_keras" in str(info.value)
    switch = "without TF_USE_LEGACY_KERAS" if backend.USING_TF_KERAS else "TF_USE_LEGACY_KERAS=1"
    assert switch in str(info.value)


def test_check_number_refuses_nan_whatever_the_bounds():
    with pytest.raises(ValueError, match=r"`lr` must be a finite number. Received: lr=nan"):
        validation.check_number("lr", float("nan"), low=0, low_inclusive=False)


def test_check_model_rejects_non_models():
    with pytest.raises(TypeError, match="Argument `net` must be a .* model.*Received: net='x'"):
        backend.check_model("x", arg_name="net")
    with pytest.raises(TypeError, match="Argument `layer` must be"):
        backend.check_layer(3)
    assert backend.check_layer(keras.layers.Dense(1))


def test_optimizer_variables_is_a_list_on_both_kerases():
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    assert isinstance(backend.optimizer_variables(opt), list)


@pytest.mark.parametrize(
    "kwargs, value, ok",
    [
        (dict(low=0, low_inclusive=False), 0, False),
        (dict(low=0, low_inclusive=False), 1e-9, True),
        (dict(low=0, high=1, high_inclusive=True), 1.0, True),
        (dict(low=0, high=1, high_inclusive=False), 1.0, False),
        (dict(integer=True), 2.0, False),
        (dict(integer=True), 2, True),
        (dict(), True, False),
        (dict(), "3", False),
        (dict(), float("nan"), False),
        (dict(low=0), float("inf"), False),
        (dict(high=0), float("-inf"), False),
        (dict(low=0, finite=False), float("inf"), True),
    ],
)
def test_check_number_boundaries(kwargs, value, ok):
    if ok:
        assert validation.check_number("x", value, **kwargs) == value
    else:
        with pytest.raises(ValueError, match=r"Argument `x` must .*Received: x="):
            validation.check_number("x", value, **kwargs)


def test_check_choice_lists_allowed_values():
    assert validation.check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"one of 'a', 'b'. Received: mode='c'"):
        validation.check_choice("mode", "c", ("a", "b"))


def test_check_shape():
    assert validation.check_shape("input_shape", [8, 8, 1], rank=3) == (8, 8, 1)
    with pytest.raises(ValueError, match="input_shape"):
        validation.check_shape("input_shape", (8, 0, 1))
    with pytest.raises(ValueError, match="must have 3 dimensions"):
        validation.check_shape("input_shape", (8, 8), rank=3)
