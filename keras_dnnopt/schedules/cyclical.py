"""Cyclical learning rates (Smith 2017)."""

from keras_dnnopt.backend import keras, register_serializable, tf
from keras_dnnopt.schedules.base import (
    as_float_step,
    check_number,
    check_rate,
    check_steps,
    whole_periods,
)
from keras_dnnopt.utils.validation import check_choice

MODES = ("triangular", "triangular2", "exp_range")


@register_serializable
class CyclicalLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that cycles between two bounds along a triangle.

    With `base = initial_learning_rate`, `top = maximal_learning_rate` and
    `n = step_size`:

        cycle = floor(1 + step / (2 * n))
        x     = |step / n - 2 * cycle + 1|
        lr    = base + (top - base) * max(0, 1 - x) * scale

    where `scale` is 1 (`"triangular"`), `1 / 2 ** (cycle - 1)` (`"triangular2"`, the
    amplitude halves every cycle) or `gamma ** step` (`"exp_range"`). The rate is
    `base` at steps `0, 2n, 4n, ...` and peaks at steps `n, 3n, ...`.

    Args:
        initial_learning_rate: the lower bound, a Python float > 0.
        maximal_learning_rate: the upper bound, a float >= `initial_learning_rate`.
        step_size: half a cycle, in steps (Smith suggests 2-10 epochs' worth), an
            integer > 0.
        mode: `"triangular"`, `"triangular2"` or `"exp_range"`. Defaults to
            `"triangular"`.
        gamma: the per-step amplitude factor of `"exp_range"`, in (0, 1]. Defaults to
            1.0.
        name: optional name of the operation. Defaults to `"CyclicalLearningRate"`.

    Returns:
        A schedule: calling it with the optimizer step gives the learning rate, a
        float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range or `mode` is unknown.

    Example:

    >>> schedule = CyclicalLearningRate(0.01, 0.1, step_size=10, mode="triangular2")
    >>> [round(float(schedule(s)), 4) for s in (0, 5, 10, 20, 30, 40)]
    [0.01, 0.055, 0.1, 0.01, 0.055, 0.01]

    Reference:
        Smith, [Cyclical Learning Rates for Training Neural Networks](
        https://arxiv.org/abs/1506.01186), WACV 2017.
    """

    def __init__(self, initial_learning_rate, maximal_learning_rate, step_size,
                 mode="triangular", gamma=1.0, name=None):
        super().__init__()
        self.initial_learning_rate = check_rate("initial_learning_rate", initial_learning_rate)
        self.maximal_learning_rate = check_number("maximal_learning_rate",
                                                  maximal_learning_rate)
        if self.maximal_learning_rate < self.initial_learning_rate:
            raise ValueError(
                "Argument `maximal_learning_rate` must be >= `initial_learning_rate` "
                f"({self.initial_learning_rate!r}). "
                f"Received: maximal_learning_rate={maximal_learning_rate!r}"
            )
        self.step_size = check_steps("step_size", step_size)
        self.mode = check_choice("mode", mode, MODES)
        self.gamma = check_number("gamma", gamma, low=0.0, high=1.0, low_inclusive=False)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "CyclicalLearningRate"):
            step = as_float_step(step)
            step_size = tf.constant(float(self.step_size), tf.float32)
            # `cycle - 1` whole cycles done, counted in steps so that the position in the
            # cycle stays exact far from 0 (`step / step_size - 2 * cycle` would not).
            done = whole_periods(step, 2.0 * step_size)
            cycle = done + 1.0
            x = tf.abs((step - 2.0 * step_size * done) / step_size - 1.0)
            if self.mode == "triangular":
                scale = tf.constant(1.0, tf.float32)
            elif self.mode == "triangular2":
                scale = 1.0 / tf.pow(2.0, cycle - 1.0)
            else:
                scale = tf.pow(tf.constant(self.gamma, tf.float32), step)
            base = tf.constant(self.initial_learning_rate, tf.float32)
            amplitude = self.maximal_learning_rate - self.initial_learning_rate
            return base + amplitude * tf.maximum(0.0, 1.0 - x) * scale

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "name": self.name,
        }
