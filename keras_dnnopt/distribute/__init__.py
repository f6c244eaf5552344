"""Hardware and scale: `tf.distribute` strategies, mixed precision, global batches and a
training loop for multi-worker runs, on Keras 3 and tf_keras.

- `get_strategy`: TPU, several GPUs, one device, multi-worker (TF_CONFIG/Slurm) or default.
- `split_cpu`: N logical CPU devices, to rehearse multi-device runs on a laptop.
- `parse_tf_config`, `is_chief`: a validated TF_CONFIG; whether this process writes.
- `enable_mixed_precision`, `disable_mixed_precision`, `mixed_precision_policy`,
  `precision_policy`, `float32_output`, `loss_scale_optimizer`: mixed precision with the
  dtype the hardware wants, the loss scaling the Keras in use needs, float32 outputs.
- `num_replicas`, `global_batch_size`, `per_replica_batch_size`, `scaled_learning_rate`:
  batch sizes and the linear learning-rate scaling rule wired to the replica count.
- `fit_distributed`: the model's own `train_step` under any strategy, with per-epoch
  backups (MultiWorkerMirroredStrategy on Keras 3, where `fit` fails upstream).
"""

from keras_dnnopt.distribute.batching import (
    global_batch_size,
    num_replicas,
    per_replica_batch_size,
    scaled_learning_rate,
)
from keras_dnnopt.distribute.mixed_precision import (
    disable_mixed_precision,
    enable_mixed_precision,
    float32_output,
    global_policy_name,
    loss_scale_optimizer,
    mixed_precision_policy,
    precision_policy,
)
from keras_dnnopt.distribute.strategy import (
    STRATEGY_KINDS,
    get_strategy,
    is_chief,
    parse_tf_config,
    split_cpu,
)
from keras_dnnopt.distribute.training_loop import fit_distributed

__all__ = [
    "STRATEGY_KINDS",
    "disable_mixed_precision",
    "enable_mixed_precision",
    "fit_distributed",
    "float32_output",
    "get_strategy",
    "global_batch_size",
    "global_policy_name",
    "is_chief",
    "loss_scale_optimizer",
    "mixed_precision_policy",
    "num_replicas",
    "parse_tf_config",
    "per_replica_batch_size",
    "precision_policy",
    "scaled_learning_rate",
    "split_cpu",
]
