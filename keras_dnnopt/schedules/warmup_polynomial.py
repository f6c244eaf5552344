"""Polynomial decay with an optional linear warm-up."""

from keras_dnnopt.backend import register_serializable, tf
from keras_dnnopt.schedules.base import (
    WarmupSchedule,
    check_number,
    check_steps,
    check_warmup_fits,
)


@register_serializable
class WarmupPolynomialDecay(WarmupSchedule):
    """Linear warm-up, then polynomial decay to `end_learning_rate`.

    With `W = warmup_steps`, `D = decay_steps` and `lr = learning_rate`, for
    `step < W` the rate is `lr * step / W`; after it, with `s = min(step - W, D)`:

        (lr - end_learning_rate) * (1 - s / D) ** power + end_learning_rate

    constant at `end_learning_rate` after `W + D` steps. (Keras' `PolynomialDecay`
    with `cycle=False`, counted after the warm-up; `power=1` is linear decay.)

    Args:
        learning_rate: the peak learning rate, a Python float > 0.
        decay_steps: number of decay steps after the warm-up, an integer > 0.
        end_learning_rate: the final learning rate, a float >= 0. Defaults to 0.0.
        power: the power of the polynomial, a float > 0. Defaults to 1.0.
        warmup_steps: number of linear warm-up steps, an integer in [0, `decay_steps`].
            Defaults to 0.
        name: optional name of the operation. Defaults to `"WarmupPolynomialDecay"`.

    Returns:
        A schedule: calling it with the optimizer step gives the learning rate, a
        float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range, or `warmup_steps > decay_steps`.

    Example:

    >>> schedule = WarmupPolynomialDecay(0.1, decay_steps=100, warmup_steps=10)
    >>> [round(float(schedule(s)), 4) for s in (0, 10, 60, 110, 200)]
    [0.0, 0.1, 0.05, 0.0, 0.0]

    Reference:
        Chen et al., [DeepLab: Semantic Image Segmentation with Deep Convolutional Nets](
        https://arxiv.org/abs/1606.00915), 2016 ("poly" schedule, power 0.9).
    """

    def __init__(self, learning_rate, decay_steps, end_learning_rate=0.0, power=1.0,
                 warmup_steps=0, name=None):
        super().__init__(learning_rate, warmup_steps, name)
        self.decay_steps = check_steps("decay_steps", decay_steps)
        check_warmup_fits(self.warmup_steps, self.decay_steps)
        self.end_learning_rate = check_number("end_learning_rate", end_learning_rate, low=0.0)
        self.power = check_number("power", power, low=0.0, low_inclusive=False)

    def _decay(self, step):
        decay_steps = tf.constant(float(self.decay_steps), tf.float32)
        # (D - s) / D rather than 1 - s / D: the subtraction is exact for integer steps,
        # so a small power near the end of the decay does not magnify float32 rounding.
        remaining = (decay_steps - tf.minimum(step, decay_steps)) / decay_steps
        end = tf.constant(self.end_learning_rate, tf.float32)
        peak = tf.constant(self.learning_rate, tf.float32)
        return (peak - end) * tf.pow(remaining, self.power) + end

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }
