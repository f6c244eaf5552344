"""Global batch sizes and the linear learning-rate scaling rule, wired to a strategy's
replica count.

Under `tf.distribute` the dataset is batched with the *global* batch size, which the
strategy splits evenly across its replicas; a model tuned with a per-device batch `b` and a
learning rate `lr` keeps its per-device batch on `n` replicas, so the global batch grows to
`n * b` and, by the linear scaling rule (Goyal et al. 2017), the learning rate to `n * lr`.
"""

from keras_dnnopt.backend import tf
from keras_dnnopt.schedules import scale_learning_rate
from keras_dnnopt.utils.validation import check_positive


def num_replicas(strategy=None):
    """The number of replicas of `strategy` (None: the current strategy), on every worker."""
    strategy = strategy or tf.distribute.get_strategy()
    return int(strategy.num_replicas_in_sync)


def global_batch_size(per_replica_batch_size, strategy=None):
    """The global batch size for a per-replica batch size: `per_replica * replicas`.

    Args:
        per_replica_batch_size: the batch each replica (device) processes per step, an
            integer >= 1.
        strategy: a `tf.distribute.Strategy`; None uses the current one. Defaults to None.

    Returns:
        The global batch size to batch the dataset with, an int.

    Raises:
        ValueError: if `per_replica_batch_size` is not a positive integer.

    Example:

    ```python
    strategy = get_strategy()
    batch = global_batch_size(64, strategy)          # 64 on one device, 512 on 8 GPUs
    dataset = dataset.batch(batch, drop_remainder=True)
    ```
    """
    per_replica_batch_size = check_positive("per_replica_batch_size", per_replica_batch_size,
                                            integer=True)
    return per_replica_batch_size * num_replicas(strategy)


def per_replica_batch_size(global_batch_size, strategy=None):
    """The batch each replica processes when the dataset is batched with `global_batch_size`.

    Args:
        global_batch_size: the batch size of the dataset, an integer >= 1 divisible by the
            number of replicas.
        strategy: a `tf.distribute.Strategy`; None uses the current one. Defaults to None.

    Returns:
        `global_batch_size // replicas`, an int.

    Raises:
        ValueError: if `global_batch_size` is not a positive integer or not divisible by
            the number of replicas (the replicas would get unequal batches, and the loss
            of one replica would be averaged over a different number of samples).

    Example:

    >>> per_replica_batch_size(64, tf.distribute.get_strategy())
    64
    """
    global_batch_size = check_positive("global_batch_size", global_batch_size, integer=True)
    replicas = num_replicas(strategy)
    if global_batch_size % replicas:
        lower = global_batch_size - global_batch_size % replicas
        suggestions = f"{lower} or {lower + replicas}" if lower else f"{replicas}"
        raise ValueError(
            f"Argument `global_batch_size` must be divisible by the number of replicas "
            f"({replicas}) so that every replica gets the same batch; use e.g. "
            f"{suggestions}. Received: global_batch_size={global_batch_size}")
    return global_batch_size // replicas


def scaled_learning_rate(base_lr, per_replica_batch_size, strategy=None, base_batch_size=None):
    """The learning rate for the global batch of `strategy`, by the linear scaling rule.

    `lr = base_lr * (per_replica_batch_size * replicas) / base_batch_size`, computed by
    `keras_dnnopt.schedules.scale_learning_rate`. With the default `base_batch_size` (the
    per-replica batch), a rate tuned on one device is multiplied by the replica count.
    Pair large factors with a warm-up (`WarmupCosineDecay(warmup_steps=...)`).

    Args:
        base_lr: the learning rate tuned for `base_batch_size`, a float > 0.
        per_replica_batch_size: the batch per replica, an integer >= 1.
        strategy: a `tf.distribute.Strategy`; None uses the current one. Defaults to None.
        base_batch_size: the batch size `base_lr` was tuned for, an integer >= 1.
            Defaults to None (`per_replica_batch_size`: tuned on one device).

    Returns:
        The scaled learning rate, a Python float.

    Raises:
        ValueError: if an argument is out of range.

    Example:

    ```python
    strategy = get_strategy("mirrored")      # say 4 GPUs
    lr = scaled_learning_rate(0.1, 64, strategy)   # 0.4, for the global batch of 256
    ```

    Reference:
        Goyal et al., [Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour](
        https://arxiv.org/abs/1706.02677), 2017.
    """
    batch = global_batch_size(per_replica_batch_size, strategy)
    if base_batch_size is None:
        base_batch_size = per_replica_batch_size
    return scale_learning_rate(base_lr, batch, base_batch_size=base_batch_size)
