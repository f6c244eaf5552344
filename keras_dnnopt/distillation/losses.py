"""Per-sample distillation losses and the (ensemble) soft targets they compare against.

`KLDistillationLoss` and `MSEDistillationLoss` are the same losses as Keras loss objects
(`loss(teacher_logits, student_logits)`, registered, with `get_config`), for a plain
`compile` on teacher outputs (e.g. `cache_teacher_outputs`) or as a `Distiller`'s
`distillation_loss`, saved with the model.

Every function here returns one value per sample, shape `(batch,)`, so that the
`Distiller` can weight samples (sample and class weights) and reduce the batch the
way Keras reduces its own losses. They take logits; a teacher or student ending in a
softmax is handled by the `Distiller` (`from_logits=False`), which passes log-probabilities
(valid logits: `softmax(log p) = p`).
"""

from keras_dnnopt.backend import keras, register_serializable, tf
from keras_dnnopt.utils.validation import check_positive

DISTILLATION_LOSSES = ("kl", "mse")


def soft_targets(teacher_logits, temperature):
    """The teacher's softened output distribution, averaged over several teachers.

    `softmax(logits / temperature)` for one teacher; for an ensemble, the mean of each
    teacher's softened distribution (not the softmax of the mean logits).

    Args:
        teacher_logits: a tensor of logits `(batch, classes)`, or a list of them, one per
            teacher.
        temperature: the softmax temperature, a number > 0.

    Returns:
        A float32 tensor `(batch, classes)` of probabilities summing to 1 over the last axis.

    Raises:
        ValueError: if `temperature <= 0` or the list of teachers is empty.

    Example:

    >>> soft_targets([[[2.0, 0.0]], [[0.0, 2.0]]], temperature=1.0).numpy()
    array([[0.5, 0.5]], dtype=float32)
    """
    temperature = check_positive("temperature", temperature)
    logits = _as_list(teacher_logits)
    probs = [tf.nn.softmax(_f32(t) / temperature, axis=-1) for t in logits]
    return probs[0] if len(probs) == 1 else tf.add_n(probs) / float(len(probs))


def kl_distillation_loss(teacher_logits, student_logits, temperature):
    """Hinton's soft-target loss per sample: `T^2 * KL(soft_targets || softmax(s / T))`.

    The `T^2` factor keeps the gradient scale of the soft term independent of the
    temperature, so that it can be mixed with the hard-label loss (Hinton et al. 2015, §2).

    Args:
        teacher_logits: teacher logits `(batch, classes)`, or a list of them (ensemble:
            their softened outputs are averaged, see `soft_targets`).
        student_logits: student logits `(batch, classes)`.
        temperature: the softmax temperature, a number > 0.

    Returns:
        A float32 tensor `(batch,)`.

    Reference:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015.
        https://arxiv.org/abs/1503.02531
    """
    temperature = check_positive("temperature", temperature)
    targets = soft_targets(teacher_logits, temperature)
    log_q = tf.nn.log_softmax(_f32(student_logits) / temperature, axis=-1)
    kl = tf.reduce_sum(tf.math.xlogy(targets, targets) - targets * log_q, axis=-1)
    return _per_sample(kl) * (temperature**2)


def mse_distillation_loss(teacher_logits, student_logits, temperature=None):
    """Mean squared error between student and teacher logits, per sample.

    With several teachers the student is matched to their mean logits. The temperature
    is not used (MSE on logits is the high-temperature limit of the soft-target loss).

    Args:
        teacher_logits: teacher logits `(batch, classes)`, or a list of them.
        student_logits: student logits `(batch, classes)`.
        temperature: ignored; accepted for a uniform signature.

    Returns:
        A float32 tensor `(batch,)`.
    """
    del temperature
    target = mean_logits(teacher_logits)
    return _per_sample(tf.square(_f32(student_logits) - target))


class _DistillationLoss(keras.losses.Loss):
    """A per-sample distillation function as a Keras loss: `y_true` holds the teacher's
    logits, `y_pred` the student's; the reduction is Keras' (the loss's `reduction`)."""

    def __init__(self, temperature=4.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = check_positive("temperature", temperature)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config


@register_serializable
class KLDistillationLoss(_DistillationLoss):
    """Hinton's soft-target loss as a Keras loss: `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    `y_true` is the teacher's logits `(batch, classes)`, `y_pred` the student's; the
    per-sample values are `kl_distillation_loss(y_true, y_pred, temperature)`, reduced as
    Keras reduces any loss (weighted by sample weights). Use it to train a student with a
    plain `compile`/`fit` on stored teacher logits, or as the `distillation_loss` of a
    `Distiller` (which passes the mean logits of an ensemble; the `Distiller`'s `"kl"`
    averages the softened outputs instead).

    Args:
        temperature: the softmax temperature, a number > 0. Defaults to 4.0.
        name: the loss name. Defaults to `"kl_distillation_loss"`.
        **kwargs: other `keras.losses.Loss` arguments (`reduction`, ...).

    Raises:
        ValueError: if `temperature <= 0`.

    Example:

    ```python
    student.compile("adam", loss=KLDistillationLoss(temperature=4.0))
    student.fit(x, teacher.predict(x), epochs=10)
    ```

    Reference:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015.
        https://arxiv.org/abs/1503.02531
    """

    def __init__(self, temperature=4.0, name="kl_distillation_loss", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return kl_distillation_loss(y_true, y_pred, self.temperature)


@register_serializable
class MSEDistillationLoss(_DistillationLoss):
    """Mean squared error between student and teacher logits, as a Keras loss.

    `y_true` is the teacher's logits, `y_pred` the student's; the per-sample values are
    `mse_distillation_loss(y_true, y_pred)`. The temperature is not used (MSE on logits
    is the high-temperature limit of the soft-target loss); it is accepted, and saved,
    so that the two losses swap for one another.

    Args:
        temperature: ignored, a number > 0. Defaults to 4.0.
        name: the loss name. Defaults to `"mse_distillation_loss"`.
        **kwargs: other `keras.losses.Loss` arguments (`reduction`, ...).

    Example:

    ```python
    student.compile("adam", loss=MSEDistillationLoss())
    student.fit(x, teacher.predict(x), epochs=10)
    ```
    """

    def __init__(self, temperature=4.0, name="mse_distillation_loss", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return mse_distillation_loss(y_true, y_pred)


def mean_logits(teacher_logits):
    """The mean of several teachers' logits (the logits themselves for one teacher)."""
    logits = [_f32(t) for t in _as_list(teacher_logits)]
    return logits[0] if len(logits) == 1 else tf.add_n(logits) / float(len(logits))


def per_sample_loss(loss_fn, y_true, y_pred):
    """Calls a Keras loss (object or function) and returns its unreduced per-sample values.

    A `keras.losses.Loss` object is called through its `call` method, which skips its
    own reduction (and Keras 3's per-replica scaling under `tf.distribute`); anything
    else is called directly. Values of rank > 1 are averaged over the non-batch axes; a
    scalar is broadcast to the batch.

    Returns:
        A float32 tensor `(batch,)`.
    """
    if isinstance(loss_fn, keras.losses.Loss):
        values = loss_fn.call(y_true, y_pred)
    else:
        values = loss_fn(y_true, y_pred)
    values = _f32(values)
    if values.shape.rank == 0:
        return tf.fill(tf.shape(y_pred)[:1], values)
    return _per_sample(values)


def _per_sample(values):
    values = _f32(values)
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def _f32(t):
    t = tf.convert_to_tensor(t)
    return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def _as_list(teacher_logits):
    """A list or tuple holds one tensor per teacher; anything else is one teacher's logits."""
    if isinstance(teacher_logits, (list, tuple)):
        if not teacher_logits:
            raise ValueError("Argument `teacher_logits` must hold at least one teacher's "
                             "logits. Received: teacher_logits=[]")
        return list(teacher_logits)
    return [teacher_logits]
