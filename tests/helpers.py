"""Common checks, so that a new layer, schedule or callback costs a few lines of test.

- `assert_config_round_trip(obj)`: `from_config(get_config())` and Keras
  (de)serialization give an equal config.
- `assert_layer_works(make_layer, input_shape)`: the layer in a Sequential and a
  functional model, one training step, and a save/load round trip in the native
  format of the Keras in use with identical predictions.
- `tiny_classification_data(...)`: fixed-seed random data for smoke training.
"""

import os
import tempfile

import numpy as np

from keras_dnnopt.backend import keras


def assert_config_round_trip(obj):
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(obj)
    assert revived.get_config() == config
    return clone


def tiny_classification_data(input_shape, num_classes=3, n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, size=(n,))
    return x, y


def save_and_load(model, tmp_dir=None):
    """Saves a model in the native `.keras` format and loads it back."""
    tmp_dir = tmp_dir or tempfile.mkdtemp()
    path = os.path.join(tmp_dir, "model.keras")
    model.save(path)
    return keras.models.load_model(path)


def _head(x, num_classes):
    x = keras.layers.GlobalAveragePooling2D()(x) if len(x.shape) == 4 else x
    return keras.layers.Dense(num_classes)(x)


def assert_layer_works(make_layer, input_shape, num_classes=3):
    """Runs a layer in Sequential and functional models, trains a step, and round-trips it.

    Args:
        make_layer: a zero-argument callable returning a new layer.
        input_shape: the per-sample input shape, e.g. (8, 8, 3).
    """
    x, y = tiny_classification_data(input_shape, num_classes)
    layer = make_layer()
    assert_config_round_trip(layer)

    seq = keras.Sequential(
        [keras.Input(shape=input_shape), make_layer(), keras.layers.GlobalAveragePooling2D(),
         keras.layers.Dense(num_classes)]
    )
    inputs = keras.Input(shape=input_shape)
    functional = keras.Model(inputs, _head(make_layer()(inputs), num_classes))

    for model in (seq, functional):
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = model.get_weights()
        changed = [not np.allclose(b, a) for b, a in zip(before, after, strict=True)]
        assert any(changed), "no weight changed"
        expected = model.predict(x, verbose=0)
        restored = save_and_load(model)
        np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    return seq, functional
