"""MirroredStrategy on 2 logical CPUs vs. one device, run by tests/test_distribute.py.

The CPU is split first (before TensorFlow initialises its devices); then each scenario is
trained twice from the same initial weights on the same global batches: on one device (the
default strategy) and under `get_strategy("mirrored")` (2 replicas), and, for the model
scenarios, a third time with `fit_distributed` under the same strategy. Deterministic
models only: no dropout, no batch norm (whose statistics are per replica), no shuffling.
Prints `JSON{scenario: {run: history}}`.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_dnnopt.distribute import (  # noqa: E402
    fit_distributed,
    get_strategy,
    global_batch_size,
    per_replica_batch_size,
    split_cpu,
)

DEVICES = split_cpu(2)

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_dnnopt import callbacks as dnn_callbacks  # noqa: E402
from keras_dnnopt import layers as dnn_layers  # noqa: E402
from keras_dnnopt.backend import keras, tf  # noqa: E402
from keras_dnnopt.distillation import Distiller  # noqa: E402
from keras_dnnopt.schedules import WarmupCosineDecay  # noqa: E402

SCENARIOS = sys.argv[1].split(",") if len(sys.argv) > 1 else ["blocks", "distiller", "prune"]
EPOCHS, BATCH = 2, 32
digits = load_digits()
x = (digits.data[:128] / 16.0).astype("float32").reshape(-1, 8, 8, 1)
y = digits.target[:128].astype("int64")


def blocks_model():
    inputs = keras.Input((8, 8, 1))
    h = dnn_layers.ConvBlock(8, use_batch_norm=False)(inputs)
    h = dnn_layers.SeparableConvBlock(8, strides=2, use_batch_norm=False)(h)
    h = dnn_layers.InvertedResidualBlock(8, expansion=2, use_batch_norm=False,
                                         se_ratio=0.25)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h), name="blocks")


def mlp(hidden, name):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dense(hidden, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(h), name=name)


def optimizer():
    schedule = WarmupCosineDecay(0.3, decay_steps=8, warmup_steps=2)
    return keras.optimizers.SGD(schedule, momentum=0.9)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
keras.utils.set_random_seed(0)
INITIAL = {"blocks": blocks_model().get_weights(), "teacher": mlp(32, "teacher").get_weights(),
           "student": mlp(8, "student").get_weights()}


def with_weights(make, key, *args):
    model = make(*args)
    model.set_weights(INITIAL[key])
    return model


def build(scenario):
    """The model to train and the extra callbacks, built in the current strategy scope."""
    if scenario == "blocks":
        model = with_weights(blocks_model, "blocks")
        model.compile(optimizer(), LOSS, metrics=["accuracy"])
        return model, [dnn_callbacks.LearningRateMonitor()]
    if scenario == "distiller":
        model = Distiller(with_weights(mlp, "teacher", 32, "teacher"),
                          with_weights(mlp, "student", 8, "student"), temperature=2.0, alpha=0.3)
        model.compile(optimizer(), LOSS)
        return model, [dnn_callbacks.LearningRateMonitor()]
    from keras_dnnopt.compression import PruningCallback, prune

    model = prune(with_weights(mlp, "student", 8, "student"), 0.5, begin_step=0, end_step=6,
                  frequency=2)
    model.compile(optimizer(), LOSS)
    return model, [PruningCallback()]


def dataset():
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True)


def history_of(h):
    return {k: [float(v) for v in vals] for k, vals in h.history.items()}


def moved(weights, reference):
    """The largest absolute difference between two lists of weights."""
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights, reference, strict=True))


def zeros_of(model):
    kernels = [w for w in model.get_weights() if w.ndim == 2 and w.shape[0] == 64]
    return float(np.mean(kernels[0] == 0)) if kernels else None


out = {"replicas": None}
strategy = get_strategy("mirrored", devices=DEVICES)  # the logical CPUs, even beside a GPU
out["replicas"] = strategy.num_replicas_in_sync
out["devices"] = DEVICES
out["global_batch_16"] = global_batch_size(16, strategy)
out["per_replica_64"] = per_replica_batch_size(64, strategy)
try:
    per_replica_batch_size(33, strategy)
except ValueError as error:
    out["per_replica_33_error"] = str(error)
for scenario in SCENARIOS:
    result = {}
    model, callbacks = build(scenario)
    result["single"] = history_of(model.fit(dataset(), epochs=EPOCHS, callbacks=callbacks,
                                            verbose=0))
    result["single_sparsity"] = zeros_of(model)
    single_weights = model.get_weights()
    with strategy.scope():
        model, callbacks = build(scenario)
    result["mirrored"] = history_of(model.fit(dataset(), epochs=EPOCHS, callbacks=callbacks,
                                              verbose=0))
    result["mirrored_sparsity"] = zeros_of(model)
    if scenario == "blocks":  # how far training moved the weights, and the gap to one device
        result["moved"] = moved(single_weights, INITIAL["blocks"])
        result["mirrored_weight_gap"] = moved(model.get_weights(), single_weights)
    with strategy.scope():
        model, callbacks = build(scenario)
    result["loop"] = history_of(fit_distributed(model, dataset(), epochs=EPOCHS,
                                                strategy=strategy, callbacks=callbacks))
    result["loop_sparsity"] = zeros_of(model)
    out[scenario] = result
print("JSON" + json.dumps(out))
