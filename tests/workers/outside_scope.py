"""Models built outside a strategy scope, used inside one, run by tests/test_outside_scope.py.

The order of work this rehearses: a model (a teacher, a model to compress or to train) is
built, and usually trained, on one device; later a 2-replica `MirroredStrategy` on two
logical CPUs is opened and the model is handed to one of the package's entry points inside
its scope. Each check runs the same work twice from the same initial weights on the same
batches: on one device (`MirroredStrategy(["/cpu:0"])`) and on two; it records the epoch
logs of both (or the error), so that the test compares them. Deterministic models only (no
dropout, no shuffling; batch norm only in frozen teachers). The `*_scope_check`s instead
record what `fit_distributed` and `cross_validate` do with a plain model built outside the
2-replica scope (the error text) and with the same model built inside it (the logs). One
process runs every check, because the CPU must be split before TensorFlow initialises and a
process costs seconds.

Usage: `python outside_scope.py CHECK[,CHECK...] OUT_DIR`; prints
`JSON{check: {"one": logs, "two": logs, ...} or {"error": text}}`.
"""

import json
import os
import sys
import tempfile
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_dnnopt.distribute import fit_distributed, split_cpu  # noqa: E402

DEVICES = split_cpu(2)

import numpy as np  # noqa: E402

from keras_dnnopt.backend import USING_TF_KERAS, keras, tf  # noqa: E402
from keras_dnnopt.distillation import (  # noqa: E402
    Distiller,
    FeatureMatch,
    cache_teacher_outputs,
)

CHECKS = sys.argv[1].split(",")
OUT_DIR = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
BATCH = 16
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
y = rng.integers(0, 3, size=32).astype("int64")
w = rng.uniform(0.0, 2.0, size=32).astype("float32")


def cnn(filters, name, batch_norm=False):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                            name=f"{name}_conv")(inputs)
    if batch_norm:
        h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(8, activation="relu", name=f"{name}_hidden")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_logits")(h), name=name)


def trained_teacher(filters, name):
    """A teacher built and trained on one device, outside any strategy scope."""
    teacher = cnn(filters, name, batch_norm=True)
    teacher.compile(keras.optimizers.Adam(0.01), LOSS)
    teacher.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    return teacher


keras.utils.set_random_seed(0)
TEACHER = trained_teacher(8, "teacher")
TEACHER_2 = trained_teacher(6, "teacher_2")
BASE = cnn(4, "base")  # a model built (and trained) earlier, to compress or train
BASE.compile(keras.optimizers.Adam(0.01), LOSS)
BASE.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
STUDENT_WEIGHTS = cnn(4, "student").get_weights()


def student():
    model = cnn(4, "student")
    model.set_weights(STUDENT_WEIGHTS)
    return model


def sgd():
    return keras.optimizers.SGD(0.05, momentum=0.9)  # momentum: one slot per variable


def logs(history):
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def dataset():
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(BATCH)


def distiller_fit(teachers, **kwargs):
    def work():
        distiller = Distiller(teachers, student(), alpha=0.3, temperature=2.0, **kwargs)
        distiller.compile(sgd(), loss=LOSS, metrics=["accuracy"])
        return lambda: logs(distiller.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=1,
                                          shuffle=False, verbose=0,
                                          validation_data=(x, y)))
    return work


def cached_fit():
    def work():
        data = cache_teacher_outputs([TEACHER, TEACHER_2], x, y, w, batch_size=BATCH,
                                     shuffle=False)
        distiller = Distiller([TEACHER, TEACHER_2], student(), alpha=0.3, temperature=2.0)
        distiller.compile(sgd(), loss=LOSS)
        return lambda: logs(distiller.fit(data, epochs=1, verbose=0))
    return work


def distiller_loop():
    def work():
        distiller = Distiller(TEACHER, student(), alpha=0.3, temperature=2.0)
        distiller.compile(sgd(), loss=LOSS)
        strategy = tf.distribute.get_strategy()
        return lambda: logs(fit_distributed(distiller, dataset(), strategy=strategy))
    return work


def distiller_builder(record):
    """A `build(hp)` of Distillers of the teacher built earlier."""
    def build(hp):
        distiller = Distiller(TEACHER, student(), alpha=0.3,
                              temperature=hp.Choice("temperature", [1.0, 4.0]))
        distiller.compile(sgd(), loss=LOSS, metrics=["accuracy"])
        record.append(tf.distribute.get_strategy().num_replicas_in_sync)
        return distiller
    return build


def tune_run(strategy):
    from keras_dnnopt.tuning import tune

    replicas = []
    model, best_hp, tuner = tune(
        x, y, validation_data=(x, y), max_trials=2, hypermodel=distiller_builder(replicas),
        seed=0, directory=tempfile.mkdtemp(dir=OUT_DIR), distribution_strategy=strategy,
        fit_kwargs={"epochs": 1, "batch_size": BATCH, "shuffle": False})
    scores = sorted((t.hyperparameters.values["temperature"], t.score)
                    for t in tuner.oracle.trials.values())
    evaluation = model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    return {"scores": scores, "replicas": replicas,
            "evaluate": {k: float(v) for k, v in evaluation.items()}}


def cross_validate_run(strategy):
    from keras_dnnopt.tuning import cross_validate

    def build():
        distiller = Distiller(TEACHER, student(), alpha=0.3, temperature=2.0)
        distiller.compile(sgd(), loss=LOSS, metrics=["accuracy"])
        return distiller

    with strategy.scope():
        result = cross_validate(build, x, y, k=2, stratified=False, shuffle=False,
                                batch_size=BATCH, fit_kwargs={"shuffle": False})
    return {"folds": result.fold_metrics}


def error_of(run):
    """`"Type: message"` of what `run()` raised, or None when it returned."""
    try:
        run()
    except Exception as error:  # noqa: BLE001 - the test matches the type and the text
        return f"{type(error).__name__}: {error}"
    return None


def compiled_cnn(name):
    model = cnn(4, name)
    model.compile(sgd(), LOSS)
    return model


def fit_distributed_scope_check():
    """`fit_distributed` of a model built outside the 2-replica scope (the error), given
    the strategy or taking the current one, and of the same model built inside (logs)."""
    keras.utils.set_random_seed(1)
    outside = compiled_cnn("built_outside")
    result = {"given": error_of(lambda: fit_distributed(outside, dataset(), strategy=TWO))}
    with TWO.scope():
        result["current"] = error_of(lambda: fit_distributed(outside, dataset()))
        inside = compiled_cnn("built_inside")
    result["inside"] = logs(fit_distributed(inside, dataset(), strategy=TWO))
    return result


def cross_validate_scope_check():
    """`cross_validate` in the 2-replica scope of a `build_fn` returning a model built
    before, outside the scope (the error), and of one building it (the fold metrics)."""
    from keras_dnnopt.tuning import cross_validate

    keras.utils.set_random_seed(1)
    prebuilt = compiled_cnn("prebuilt")
    kwargs = {"k": 2, "stratified": False, "shuffle": False, "batch_size": BATCH,
              "fit_kwargs": {"shuffle": False}}
    with TWO.scope():
        error = error_of(lambda: cross_validate(lambda: prebuilt, x, y, **kwargs))
        folds = cross_validate(lambda: compiled_cnn("fresh"), x, y, **kwargs).fold_metrics
    return {"prebuilt": error, "inside": folds}


def compressed(make):
    def work():
        from keras_dnnopt.compression import PruningCallback

        model = make(BASE)
        model.compile(sgd(), LOSS)
        callbacks = [PruningCallback()] if "prune" in model.layers[1].name else []
        return lambda: logs(model.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=1,
                                      shuffle=False, verbose=0, callbacks=callbacks))
    return work


def prune_base(model):
    from keras_dnnopt.compression import prune

    return prune(model, 0.5, schedule="constant", frequency=1)


def cluster_base(model):
    from keras_dnnopt.compression import cluster

    return cluster(model, 4, centroid_init="linear")


def quantize_base(model):
    from keras_dnnopt.compression import quantize

    return quantize(model)


def run_in(strategy, work):
    """Builds under `strategy`'s scope (`work()` returns the training to run), trains."""
    keras.utils.set_random_seed(1)  # the same initial feature projections in every run
    with strategy.scope():
        train = work()
    return train()


# One strategy of each kind for the whole process: two MirroredStrategy objects on the same
# devices would number their collective all-reduces alike, and clash.
ONE = tf.distribute.MirroredStrategy(DEVICES[:1])
TWO = tf.distribute.MirroredStrategy(DEVICES)


def compare(work):
    return {"one": run_in(ONE, work), "two": run_in(TWO, work),
            "replicas": TWO.num_replicas_in_sync}


SCENARIOS = {
    "distiller": lambda: compare(distiller_fit(TEACHER)),
    "multi_teacher": lambda: compare(distiller_fit([TEACHER, TEACHER_2])),
    "feature_match": lambda: compare(distiller_fit(
        TEACHER, feature_matches=[FeatureMatch("student_conv", "teacher_bn", 0.5)])),
    "cached": lambda: compare(cached_fit()),
    "distiller_loop": lambda: compare(distiller_loop()),
    "prune": lambda: compare(compressed(prune_base)),
    "cluster": lambda: compare(compressed(cluster_base)),
    "quantize": lambda: compare(compressed(quantize_base)),
    "tune": lambda: {"one": tune_run(ONE), "two": tune_run(TWO)},
    "cross_validate": lambda: {"one": cross_validate_run(ONE), "two": cross_validate_run(TWO)},
    "fit_distributed_scope_check": fit_distributed_scope_check,
    "cross_validate_scope_check": cross_validate_scope_check,
}

out = {"tf_keras": USING_TF_KERAS, "devices": DEVICES}
for check in CHECKS:
    try:
        out[check] = SCENARIOS[check]()
    except Exception as error:  # noqa: BLE001 - reported to the test, which fails on it
        out[check] = {"error": f"{type(error).__name__}: {str(error)[:600]}",
                      "traceback": traceback.format_exc()[-3000:]}
print("JSON" + json.dumps(out))
