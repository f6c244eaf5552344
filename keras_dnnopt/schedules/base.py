"""Shared logic of the learning-rate schedules: step handling, warm-up, validation.

`WarmupSchedule` does the linear warm-up from 0 to the peak learning rate and hands
the rest of the curve to `_decay(step_after_warmup)`, which each subclass defines in a
few lines. Every schedule computes in float32 with `tf` ops (Keras 3 on its TensorFlow
backend and tf_keras alike) and returns a float32 scalar tensor.
"""

import math
import numbers

from keras_dnnopt.backend import keras, tf
from keras_dnnopt.utils.validation import check_number

PI = math.pi


def as_float_step(step):
    """Casts an optimizer step (Python number, int or float tensor or variable) to a
    float32 scalar tensor, clipped at 0."""
    step = tf.cast(tf.convert_to_tensor(step), tf.float32)
    return tf.maximum(step, 0.0)


def check_steps(name, value, *, allow_zero=False):
    """Checks a number of steps: a non-negative (or positive) integer. An integral
    float such as `1000.0` (e.g. `0.5 * total`) is accepted and returned as `int`."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        if math.isfinite(value) and float(value).is_integer():
            value = int(value)
    return check_number(name, value, low=0, low_inclusive=allow_zero, integer=True)


def check_rate(name, value):
    """Checks a learning rate: a number > 0."""
    return check_number(name, value, low=0, low_inclusive=False)


def check_warmup_fits(warmup_steps, decay_steps, decay_name="decay_steps"):
    """Checks that a warm-up is not longer than the decay that follows it.

    The decay steps of the warm-up schedules are counted *after* the warm-up (the whole
    schedule spans `warmup_steps + decay_steps` steps), so `warmup_steps=50,
    decay_steps=10` would be 50 steps of warm-up for 10 of decay: almost always
    `decay_steps` given as the total length of training. The rule is
    `warmup_steps <= decay_steps` (equal is a triangle, half up and half down).
    """
    if warmup_steps > decay_steps:
        raise ValueError(
            f"Argument `warmup_steps` must be <= `{decay_name}`: the decay steps are counted "
            f"after the warm-up, so the warm-up must not be longer than the decay. For T "
            f"steps of training in all, pass {decay_name}=T - warmup_steps. "
            f"Received: warmup_steps={warmup_steps!r}, {decay_name}={decay_steps!r}"
        )


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"Argument `{name}` must be a bool. Received: {name}={value!r}")
    return value


def whole_periods(step, period):
    """`floor(step / period)` for float32 tensors, settled so that
    `k * period <= step < (k + 1) * period` holds exactly.

    The quotient alone rounds: far from 0, `step / period` can land on the next integer
    while `step` is still inside the previous period. Counting in steps (`step - k *
    period`, exact for integer and quarter steps below 2**22) keeps the position inside
    the period to the step, where `step / period - k` would keep only a few bits of it.
    """
    k = tf.floor(step / period)
    k = tf.where(k * period > step, k - 1.0, k)
    return tf.where((k + 1.0) * period <= step, k + 1.0, k)


def cosine_anneal(start, end, fraction):
    """`end + (start - end) / 2 * (1 + cos(pi * fraction))`, `fraction` in [0, 1]."""
    return end + (start - end) * 0.5 * (1.0 + tf.cos(PI * fraction))


def linear_anneal(start, end, fraction):
    """`start + (end - start) * fraction`, `fraction` in [0, 1]."""
    return start + (end - start) * fraction


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Base of the warm-up schedules: linear warm-up, then a subclass's decay.

    For `step < warmup_steps`: `lr(step) = learning_rate * step / warmup_steps`
    (so `lr(0) = 0`); from then on `lr(step) = _decay(step - warmup_steps)`, where the
    subclass's `_decay(0)` is the peak `learning_rate`. `warmup_steps=0` means no
    warm-up: `lr(step) = _decay(step)`.

    Subclasses set their own attributes, call `super().__init__(learning_rate,
    warmup_steps, name)`, implement `_decay(step)` (a float32 scalar tensor step
    `>= 0`, counted after the warm-up) and extend `get_config`.

    Args:
        learning_rate: the peak learning rate, reached at the end of the warm-up.
            A Python float > 0.
        warmup_steps: number of linear warm-up steps, an integer >= 0. Defaults to 0.
        name: optional name of the operation. Defaults to the class name.

    Raises:
        ValueError: if `learning_rate <= 0` or `warmup_steps` is negative or not an
            integer.
    """

    def __init__(self, learning_rate, warmup_steps=0, name=None):
        super().__init__()
        self.learning_rate = check_rate("learning_rate", learning_rate)
        self.warmup_steps = check_steps("warmup_steps", warmup_steps, allow_zero=True)
        self.name = name

    def _decay(self, step):
        """The learning rate `step` steps after the warm-up (float32 tensor, >= 0)."""
        raise NotImplementedError

    def __call__(self, step):
        with tf.name_scope(self.name or type(self).__name__):
            step = as_float_step(step)
            if self.warmup_steps == 0:
                return self._decay(step)
            warmup_steps = tf.constant(float(self.warmup_steps), tf.float32)
            warming = tf.constant(self.learning_rate, tf.float32) * (step / warmup_steps)
            decayed = self._decay(tf.maximum(step - warmup_steps, 0.0))
            return tf.where(step < warmup_steps, warming, decayed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }
