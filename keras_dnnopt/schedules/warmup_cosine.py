"""Cosine decay with linear warm-up."""

from keras_dnnopt.backend import register_serializable, tf
from keras_dnnopt.schedules.base import (
    WarmupSchedule,
    check_number,
    check_steps,
    check_warmup_fits,
    cosine_anneal,
)


@register_serializable
class WarmupCosineDecay(WarmupSchedule):
    """Linear warm-up to `learning_rate`, then cosine decay to `alpha * learning_rate`.

    With `W = warmup_steps`, `D = decay_steps` and `lr = learning_rate`:

        step < W:          lr * step / W
        s = step - W >= 0: lr * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * min(s, D) / D)))

    so the rate is 0 at step 0, `lr` at step `W`, `alpha * lr` at step `W + D` and
    constant after. The decay steps are counted after the warm-up, as in Keras 3's
    `CosineDecay(..., warmup_target=lr, warmup_steps=W)` started from 0.

    Args:
        learning_rate: the peak learning rate, a Python float > 0.
        decay_steps: number of cosine decay steps after the warm-up, an integer > 0.
        warmup_steps: number of linear warm-up steps, an integer in [0, `decay_steps`].
            Defaults to 0 (no warm-up: the decay starts at `learning_rate`).
        alpha: the final learning rate as a fraction of `learning_rate`, in [0, 1].
            Defaults to 0.0.
        name: optional name of the operation. Defaults to `"WarmupCosineDecay"`.

    Returns:
        A schedule: calling it with the optimizer step gives the learning rate, a
        float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range, or `warmup_steps > decay_steps`.

    Example:

    >>> schedule = WarmupCosineDecay(0.1, decay_steps=100, warmup_steps=10)
    >>> [round(float(schedule(s)), 4) for s in (0, 5, 10, 60, 110, 500)]
    [0.0, 0.05, 0.1, 0.05, 0.0, 0.0]
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)  # doctest: +SKIP

    Reference:
        Loshchilov & Hutter, [SGDR: Stochastic Gradient Descent with Warm Restarts](
        https://arxiv.org/abs/1608.03983), ICLR 2017; Goyal et al., [Accurate, Large
        Minibatch SGD](https://arxiv.org/abs/1706.02677), 2017 (warm-up).
    """

    def __init__(self, learning_rate, decay_steps, warmup_steps=0, alpha=0.0, name=None):
        super().__init__(learning_rate, warmup_steps, name)
        self.decay_steps = check_steps("decay_steps", decay_steps)
        check_warmup_fits(self.warmup_steps, self.decay_steps)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0)

    def _decay(self, step):
        decay_steps = tf.constant(float(self.decay_steps), tf.float32)
        fraction = tf.minimum(step, decay_steps) / decay_steps
        peak = tf.constant(self.learning_rate, tf.float32)
        return cosine_anneal(peak, peak * self.alpha, fraction)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "alpha": self.alpha,
            "name": self.name,
        }
