"""Exponential decay with an optional linear warm-up."""

from keras_dnnopt.backend import register_serializable, tf
from keras_dnnopt.schedules.base import WarmupSchedule, check_bool, check_number, check_steps


@register_serializable
class WarmupExponentialDecay(WarmupSchedule):
    """Linear warm-up, then exponential decay.

    With `W = warmup_steps`, `D = decay_steps` and `lr = learning_rate`, for
    `step < W` the rate is `lr * step / W`; after it, with `s = step - W`:

        lr * decay_rate ** (s / D)           (staircase=False)
        lr * decay_rate ** floor(s / D)      (staircase=True)

    (Keras' `ExponentialDecay`, counted after the warm-up.)

    Args:
        learning_rate: the peak learning rate, a Python float > 0.
        decay_steps: the number of steps over which the rate is multiplied by
            `decay_rate`, an integer > 0.
        decay_rate: the decay factor, a float in (0, 1].
        staircase: whether to decay in discrete steps of `decay_steps`. Defaults to
            False.
        warmup_steps: number of linear warm-up steps, an integer >= 0. Defaults to 0.
        name: optional name of the operation. Defaults to `"WarmupExponentialDecay"`.

    Returns:
        A schedule: calling it with the optimizer step gives the learning rate, a
        float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range.

    Example:

    >>> schedule = WarmupExponentialDecay(0.1, decay_steps=10, decay_rate=0.5,
    ...                                   warmup_steps=5)
    >>> [round(float(schedule(s)), 4) for s in (0, 5, 15, 25)]
    [0.0, 0.1, 0.05, 0.025]

    Reference:
        Goyal et al., [Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour](
        https://arxiv.org/abs/1706.02677), 2017 (gradual warm-up).
    """

    def __init__(self, learning_rate, decay_steps, decay_rate, staircase=False, warmup_steps=0,
                 name=None):
        super().__init__(learning_rate, warmup_steps, name)
        self.decay_steps = check_steps("decay_steps", decay_steps)
        # A rate > 1 would grow without bound (to inf in float32): not a decay.
        self.decay_rate = check_number("decay_rate", decay_rate, low=0.0, high=1.0,
                                       low_inclusive=False)
        self.staircase = check_bool("staircase", staircase)

    def _decay(self, step):
        exponent = step / tf.constant(float(self.decay_steps), tf.float32)
        if self.staircase:
            exponent = tf.floor(exponent)
        return self.learning_rate * tf.pow(tf.constant(self.decay_rate, tf.float32), exponent)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }
