"""Multi-step decay with an optional linear warm-up."""

from keras_dnnopt.backend import register_serializable, tf
from keras_dnnopt.schedules.base import WarmupSchedule, check_number, check_steps


@register_serializable
class StepDecay(WarmupSchedule):
    """Linear warm-up, then the learning rate times `gamma` at each boundary.

    With `W = warmup_steps` and `lr = learning_rate`, for `step < W` the rate is
    `lr * step / W`; after it, with `s = step - W`:

        lr * gamma ** (number of boundaries b with s >= b)

    (PyTorch's `MultiStepLR` with `milestones=boundaries`, counted after the warm-up.)

    Args:
        learning_rate: the learning rate before the first boundary, a Python float > 0.
        boundaries: the steps after the warm-up at which the rate is multiplied by
            `gamma`: a list (or tuple, or 1-D NumPy array) of strictly increasing
            integers > 0; may be empty, for a constant rate after the warm-up.
        gamma: the multiplicative factor, a float > 0. Defaults to 0.1.
        warmup_steps: number of linear warm-up steps, an integer >= 0. Defaults to 0.
        name: optional name of the operation. Defaults to `"StepDecay"`.

    Returns:
        A schedule: calling it with the optimizer step gives the learning rate, a
        float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range or `boundaries` is not strictly
            increasing.

    Example:

    >>> schedule = StepDecay(0.1, boundaries=[30, 60], gamma=0.1)
    >>> [round(float(schedule(s)), 4) for s in (0, 29, 30, 59, 60, 1000)]
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]

    Reference:
        He et al., [Deep Residual Learning for Image Recognition](
        https://arxiv.org/abs/1512.03385), CVPR 2016 (divide by 10 at fixed epochs).
    """

    def __init__(self, learning_rate, boundaries, gamma=0.1, warmup_steps=0, name=None):
        super().__init__(learning_rate, warmup_steps, name)
        if hasattr(boundaries, "tolist") and not isinstance(boundaries, (str, bytes)):
            boundaries = boundaries.tolist()  # a NumPy array
        if not isinstance(boundaries, (list, tuple)):
            raise ValueError(
                "Argument `boundaries` must be a list of strictly increasing integers > 0. "
                f"Received: boundaries={boundaries!r}"
            )
        self.boundaries = [check_steps(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        for previous, current in zip(self.boundaries, self.boundaries[1:], strict=False):
            if current <= previous:
                raise ValueError(
                    "Argument `boundaries` must be strictly increasing. "
                    f"Received: boundaries={list(boundaries)!r}"
                )
        self.gamma = check_number("gamma", gamma, low=0.0, low_inclusive=False)

    def _decay(self, step):
        if not self.boundaries:
            return tf.constant(self.learning_rate, tf.float32)
        boundaries = tf.constant([float(b) for b in self.boundaries], tf.float32)
        passed = tf.reduce_sum(tf.cast(step >= boundaries, tf.float32))
        return self.learning_rate * tf.pow(tf.constant(self.gamma, tf.float32), passed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "boundaries": list(self.boundaries),
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }
