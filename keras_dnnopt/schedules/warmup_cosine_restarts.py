"""Cosine decay with warm restarts (SGDR) and an optional linear warm-up."""

import math

from keras_dnnopt.backend import register_serializable, tf
from keras_dnnopt.schedules.base import (
    WarmupSchedule,
    check_number,
    check_steps,
    whole_periods,
)


@register_serializable
class WarmupCosineRestarts(WarmupSchedule):
    """Linear warm-up, then cosine decay with warm restarts (SGDR).

    With `W = warmup_steps`, `T0 = first_decay_steps` and `lr = learning_rate`, for
    `step < W` the rate is `lr * step / W`. After it, with `s = step - W`, cycle `i`
    (from 0) lasts `T0 * t_mul**i` steps and starts at
    `S_i = T0 * (t_mul**i - 1) / (t_mul - 1)` (`S_i = T0 * i` when `t_mul == 1`);
    inside cycle `i`, with `f = (s - S_i) / (T0 * t_mul**i)` in [0, 1):

        lr * (alpha + (1 - alpha) * m_mul**i * 0.5 * (1 + cos(pi * f)))

    This is Keras' `CosineDecayRestarts(lr, T0, t_mul, m_mul, alpha)` shifted by the
    warm-up, except that a step on a restart always starts the new cycle (Keras' float32
    `log` formula can land one cycle early there: `CosineDecayRestarts(1.0, 10,
    t_mul=1.1)(21)` is 0, not 1).

    Args:
        learning_rate: the peak learning rate, a Python float > 0.
        first_decay_steps: length of the first cycle in steps, an integer > 0.
        t_mul: factor by which each cycle is longer than the previous one, a float
            >= 1. Defaults to 2.0.
        m_mul: factor by which each cycle's peak is scaled relative to the previous
            one, a float in (0, 1]. Defaults to 1.0.
        alpha: the minimum learning rate as a fraction of `learning_rate`, in [0, 1].
            Defaults to 0.0.
        warmup_steps: number of linear warm-up steps, an integer >= 0. Defaults to 0.
        name: optional name of the operation. Defaults to `"WarmupCosineRestarts"`.

    Returns:
        A schedule: calling it with the optimizer step gives the learning rate, a
        float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range.

    Example:

    >>> schedule = WarmupCosineRestarts(0.1, first_decay_steps=10, warmup_steps=5)
    >>> [round(float(schedule(s)), 4) for s in (0, 5, 10, 15, 25, 35)]
    [0.0, 0.1, 0.05, 0.1, 0.05, 0.1]

    Reference:
        Loshchilov & Hutter, [SGDR: Stochastic Gradient Descent with Warm Restarts](
        https://arxiv.org/abs/1608.03983), ICLR 2017.
    """

    def __init__(self, learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0,
                 warmup_steps=0, name=None):
        super().__init__(learning_rate, warmup_steps, name)
        self.first_decay_steps = check_steps("first_decay_steps", first_decay_steps)
        self.t_mul = check_number("t_mul", t_mul, low=1.0)
        # A factor > 1 would let the peaks grow without bound (to inf in float32).
        self.m_mul = check_number("m_mul", m_mul, low=0.0, high=1.0, low_inclusive=False)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0)

    def _cycle_start(self, i):
        """Start of cycle `i` in units of `first_decay_steps`."""
        if self.t_mul == 1.0:
            return i
        # (t_mul**i - 1) / (t_mul - 1), with expm1 to avoid the cancellation in
        # `t_mul**i - 1` (float32 would lose ~1e-6 of the phase for t_mul near 1).
        return tf.math.expm1(i * math.log(self.t_mul)) / (self.t_mul - 1.0)

    def _decay(self, step):
        first = tf.constant(float(self.first_decay_steps), tf.float32)
        if self.t_mul == 1.0:
            # Equal cycles: count whole cycles in steps, exact at every restart and to
            # the step far from 0 (a quotient `step / first - i` would keep a few bits).
            i = whole_periods(step, first)
            in_cycle = tf.clip_by_value((step - i * first) / first, 0.0, 1.0)
            return self._cosine(i, in_cycle)
        fraction = step / first
        # A few float32 ulps of slack, so that a step on a restart (where the exact
        # cycle start is an integer) starts the new cycle whatever the rounding of
        # `log`, `pow` and the division on the device in use.
        slack = 1e-6 * tf.maximum(fraction, 1.0)
        i = tf.floor(tf.math.log1p(fraction * (self.t_mul - 1.0)) / math.log(self.t_mul))
        i = tf.maximum(i, 0.0)
        # The log estimate can be one off near a restart: settle on the i with
        # start(i) <= fraction < start(i + 1).
        i = tf.where(self._cycle_start(i + 1.0) <= fraction + slack, i + 1.0, i)
        i = tf.where(self._cycle_start(i) > fraction + slack, i - 1.0, i)
        in_cycle = (fraction - self._cycle_start(i)) / tf.pow(self.t_mul, i)
        return self._cosine(i, tf.clip_by_value(in_cycle, 0.0, 1.0))

    def _cosine(self, i, in_cycle):
        """The rate in cycle `i` at position `in_cycle` in [0, 1] of it."""
        cosine = 0.5 * tf.pow(self.m_mul, i) * (1.0 + tf.cos(math.pi * in_cycle))
        return self.learning_rate * (self.alpha + (1.0 - self.alpha) * cosine)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }
