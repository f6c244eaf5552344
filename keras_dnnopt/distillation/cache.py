"""`cache_teacher_outputs`: run the teacher once, then distill without its forward pass.

The returned dataset yields `({"inputs": x, "teacher_outputs": t}, y[, sample_weight])`
batches, where `t` stacks every teacher's raw outputs along axis 1
(`(batch, num_teachers, classes)`). The `Distiller` recognises the dict and uses `t`
instead of calling the teachers. The teacher outputs travel with the *inputs* rather
than the labels, so that `y` stays the plain labels: `class_weight`, compiled metrics
and Keras 3's symbolic build all keep working unchanged.

How random augmentation is refused: the inputs are stored together with the teacher
outputs (so the pairing can never go wrong, shuffled or not), and a `tf.data.Dataset`
is read twice: if the multiset of per-example input fingerprints (a hash of each
example's bytes) differs between the two passes, the pipeline changes its inputs from
one epoch to the next (random augmentation, random crops, noise) and caching would
freeze one random view of each example, so it is refused with an error. Shuffling the
order alone passes the check. Limits: randomness that happens to repeat across two
passes (for example an op with a fixed seed that restarts every epoch) is not detected,
and needs no detection since the inputs then do not change; augmentation done *inside*
the student model (random preprocessing layers) is not seen by the check; the whole
dataset is held in memory (inputs, labels and teacher outputs).
"""

import collections
import hashlib

import numpy as np

from keras_dnnopt.backend import check_model, keras, tf
from keras_dnnopt.utils.validation import check_positive

INPUTS_KEY = "inputs"
TEACHER_OUTPUTS_KEY = "teacher_outputs"


def cache_teacher_outputs(teacher, x, y=None, sample_weight=None, *, batch_size=None,
                          shuffle=True, seed=None, check_inputs=True):
    """Runs the teacher(s) once over the data and returns a dataset carrying their outputs.

    Args:
        teacher: a built `keras.Model`, or a list of them (an ensemble; the `Distiller`
            must then be given the same teachers in the same order).
        x: the inputs: arrays (NumPy or tensors, possibly nested), or a batched
            `tf.data.Dataset` of `(x, y)` / `(x, y, sample_weight)` / `x` elements
            (finite).
        y: the labels, with array inputs only. Defaults to None.
        sample_weight: per-sample weights, with array inputs only. Defaults to None.
        batch_size: the batch size of the returned dataset. Defaults to the batch size of
            the input dataset, or 32 for arrays.
        shuffle: whether the returned dataset reshuffles the examples every epoch.
            Defaults to True.
        seed: the shuffle seed. Defaults to None.
        check_inputs: whether to read a `tf.data.Dataset` twice and refuse one whose
            inputs change between passes (random augmentation). Defaults to True.

    Returns:
        A `tf.data.Dataset` of `({"inputs": x, "teacher_outputs": t}, y[, sample_weight])`
        batches, `t` of shape `(batch, num_teachers, *teacher_output_shape)` in float32;
        pass it to `Distiller.fit` (or `evaluate`) like any dataset.

    Raises:
        ValueError: if the dataset applies random augmentation (its inputs differ between
            two passes), is infinite, or is given with `y`/`sample_weight`; or if a
            teacher is not built or `batch_size <= 0`.
        TypeError: if a teacher is not a model of the Keras in use.

    Example:

    ```python
    data = cache_teacher_outputs(teacher, x_train, y_train, batch_size=64, seed=0)
    distiller = Distiller(teacher, student)
    distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(data, epochs=30)  # no teacher forward pass during training
    ```
    """
    teachers = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    for model in teachers:
        check_model(model, "teacher")
        check_built(model, "teacher")
    if batch_size is not None:
        batch_size = check_positive("batch_size", batch_size, integer=True)

    forward = _teacher_forward(teachers)
    if isinstance(x, tf.data.Dataset):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "Arguments `y` and `sample_weight` must be None when `x` is a tf.data.Dataset "
                "(its elements carry them). Received: "
                f"y={_describe(y)}, sample_weight={_describe(sample_weight)}")
        inputs, labels, weights, outputs, first_batch = _run_dataset(x, forward, check_inputs)
        batch_size = batch_size or first_batch
    else:
        inputs, labels, weights = x, y, sample_weight
        batch_size = batch_size or 32
        outputs = _run_arrays(inputs, forward, batch_size)

    features = {INPUTS_KEY: inputs, TEACHER_OUTPUTS_KEY: outputs}
    element = (features,) + tuple(v for v in (labels, weights) if v is not None)
    if weights is not None and labels is None:
        raise ValueError("Argument `sample_weight` needs labels `y`. Received: y=None")
    dataset = tf.data.Dataset.from_tensor_slices(element)
    if shuffle:
        dataset = dataset.shuffle(_num_examples(outputs), seed=seed,
                                  reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def split_cached_inputs(x):
    """`(inputs, teacher_outputs)` from a batch's `x`: the cached outputs, or None if live."""
    if isinstance(x, dict) and set(x) == {INPUTS_KEY, TEACHER_OUTPUTS_KEY}:
        return x[INPUTS_KEY], x[TEACHER_OUTPUTS_KEY]
    return x, None


def check_built(model, role):
    """Raises a clear error if a model has no weights yet (it cannot give outputs)."""
    if not model.built:
        raise ValueError(
            f"Argument `{role}` must be a built model (with its weights): call it on a batch "
            f"or call `build(input_shape)` first, or define it with `keras.Input`. "
            f"Received: {role}={model.name!r} (built=False)")
    return model


def _teacher_forward(teachers):
    @tf.function(reduce_retracing=True)
    def forward(x):
        outputs = [tf.cast(model(x, training=False), tf.float32) for model in teachers]
        return tf.stack(outputs, axis=1)

    return forward


def _run_arrays(inputs, forward, batch_size):
    flat = tf.nest.flatten(inputs)
    n = int(flat[0].shape[0])
    chunks = []
    for start in range(0, n, batch_size):
        batch = tf.nest.map_structure(lambda a, s=start: a[s:s + batch_size], inputs)
        chunks.append(forward(batch).numpy())
    return np.concatenate(chunks, axis=0)


def _run_dataset(dataset, forward, check_inputs):
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("Argument `x` must be a finite dataset: the teacher is run over it "
                         "once. Received: an infinite dataset (remove `.repeat()`).")
    xs, ys, ws, outputs = [], [], [], []
    for element in dataset:
        x, y, w = keras.utils.unpack_x_y_sample_weight(element)
        xs.append(tf.nest.map_structure(np.asarray, x))
        ys.append(None if y is None else tf.nest.map_structure(np.asarray, y))
        ws.append(None if w is None else np.asarray(w))
        outputs.append(forward(x).numpy())
    if not outputs:
        raise ValueError("Argument `x` must yield at least one batch. Received: an empty dataset")
    first_batch = int(outputs[0].shape[0])
    inputs = _concat(xs)
    if check_inputs:
        _refuse_changing_inputs(dataset, inputs)
    labels = None if ys[0] is None else _concat(ys)
    weights = None if ws[0] is None else np.concatenate(ws, axis=0)
    return inputs, labels, weights, np.concatenate(outputs, axis=0), first_batch


def _concat(batches):
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *batches)


def _fingerprints(inputs):
    leaves = [np.ascontiguousarray(a) for a in tf.nest.flatten(inputs)]
    n = leaves[0].shape[0]
    rows = [a.reshape(n, -1).view(np.uint8).reshape(n, -1) for a in leaves]
    prints = []
    for i in range(n):
        digest = hashlib.blake2b(digest_size=16)
        for r in rows:
            digest.update(r[i].tobytes())
        prints.append(digest.digest())
    return collections.Counter(prints)


def _refuse_changing_inputs(dataset, inputs):
    first = _fingerprints(inputs)
    xs = []
    for element in dataset:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(element)
        xs.append(tf.nest.map_structure(np.asarray, x))
    second = _fingerprints(_concat(xs))
    changed = sum((first - second).values())
    if changed:
        total = sum(first.values())
        raise ValueError(
            f"The dataset yields different inputs on two passes ({changed} of {total} examples "
            "changed): it applies random augmentation (or reads inputs nondeterministically), so "
            "cached teacher outputs would freeze one random view of each example. Distill with "
            "the live teacher (pass the dataset to `Distiller.fit` directly), cache the "
            "un-augmented data, or pass `check_inputs=False` to accept one fixed view.")


def _num_examples(outputs):
    return int(outputs.shape[0])


def _describe(value):
    return None if value is None else f"<{type(value).__name__}>"
