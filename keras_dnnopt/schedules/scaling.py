"""The linear scaling rule for the learning rate."""

from keras_dnnopt.schedules.base import check_rate, check_steps


def scale_learning_rate(base_lr, batch_size, base_batch_size=256):
    """Scales a learning rate linearly with the batch size (the linear scaling rule).

    `lr = base_lr * batch_size / base_batch_size`: when the batch grows `k` times, the
    learning rate grows `k` times too. Combine it with a warm-up (`warmup_steps` of
    the schedules here) for large batches.

    Args:
        base_lr: the learning rate tuned for `base_batch_size`, a float > 0.
        batch_size: the batch size in use (the global one, across replicas), an
            integer > 0.
        base_batch_size: the batch size `base_lr` was tuned for, an integer > 0.
            Defaults to 256 (0.1 for ResNet-50 with SGD at 256, per Goyal et al.).

    Returns:
        The scaled learning rate, a Python float.

    Raises:
        ValueError: if an argument is out of range.

    Example:

    >>> scale_learning_rate(0.1, batch_size=1024)
    0.4

    Reference:
        Goyal et al., [Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour](
        https://arxiv.org/abs/1706.02677), 2017.
    """
    base_lr = check_rate("base_lr", base_lr)
    batch_size = check_steps("batch_size", batch_size)
    base_batch_size = check_steps("base_batch_size", base_batch_size)
    return base_lr * batch_size / base_batch_size
