"""Train a small CNN of keras_dnnopt blocks on digits under any `tf.distribute` strategy.

The same script runs on one CPU, on several GPUs, on a TPU, or on several machines
(docs/distributed.md):

    python examples/distributed_digits.py                                # auto: 1 device here
    python examples/distributed_digits.py --strategy mirrored --split-cpu 2   # rehearse 2 devices
    python examples/distributed_digits.py --mixed-precision              # bf16 CPU/TPU, fp16 GPU
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/distributed_digits.py --strategy multi_worker --backup-dir /shared/bk

Add `TF_USE_LEGACY_KERAS=1` in front for tf_keras. What changes with the hardware is the
strategy (and with it the replica count, the global batch and the learning rate); the model,
the data and the training code do not.
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="auto",
                        choices=("auto", "mirrored", "multi_worker", "tpu", "one_device",
                                 "default"))
    parser.add_argument("--split-cpu", type=int, default=0,
                        help="split the CPU into N logical devices first (rehearsal)")
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-replica-batch", type=int, default=64)
    parser.add_argument("--base-lr", type=float, default=0.1,
                        help="learning rate tuned for one replica's batch")
    parser.add_argument("--backup-dir", default=None,
                        help="per-epoch backup to resume from after a failure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from keras_dnnopt import distribute

    if args.split_cpu:  # must precede everything that initialises TensorFlow's devices
        distribute.split_cpu(args.split_cpu)
    strategy = distribute.get_strategy(args.strategy)  # multi_worker: before any op, too

    from keras_dnnopt import callbacks, layers, schedules
    from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras, tf

    if args.mixed_precision:
        print("policy:", distribute.enable_mixed_precision())

    keras.utils.set_random_seed(args.seed)
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y,
                                                        random_state=args.seed)

    batch = distribute.global_batch_size(args.per_replica_batch, strategy)
    lr = distribute.scaled_learning_rate(args.base_lr, args.per_replica_batch, strategy)
    steps = len(x_train) // batch
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=args.seed).batch(batch, drop_remainder=True)
             .prefetch(tf.data.AUTOTUNE))

    with strategy.scope():
        # The package's blocks, without batch norm (its moving statistics need far more
        # steps than this short run, and under a strategy its batch statistics are per
        # replica: see docs/distributed.md).
        model = distribute.float32_output(keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.ConvBlock(16, activation="relu", use_batch_norm=False),
            layers.SeparableConvBlock(32, strides=2, activation="relu", use_batch_norm=False),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]))
        schedule = schedules.WarmupCosineDecay(lr, decay_steps=steps * (args.epochs - 1),
                                               warmup_steps=steps)
        model.compile(keras.optimizers.SGD(schedule, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])

    print(f"{KERAS_NAME}, {type(strategy).__name__}, {strategy.num_replicas_in_sync} "
          f"replica(s): global batch {batch}, learning rate {lr:g}")
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker and not USING_TF_KERAS:  # Keras 3's fit fails there (keras#20585)
        history = distribute.fit_distributed(
            model, train, epochs=args.epochs, strategy=strategy, backup_dir=args.backup_dir,
            callbacks=[callbacks.LearningRateMonitor()], verbose=1)
    else:
        extra = ([keras.callbacks.BackupAndRestore(args.backup_dir)] if args.backup_dir
                 else [])
        history = model.fit(train, epochs=args.epochs, verbose=2,
                            callbacks=[callbacks.LearningRateMonitor(), *extra])
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    print(f"final loss {history.history['loss'][-1]:.4f}, test accuracy {accuracy:.4f}")
    if distribute.is_chief(strategy):
        print("(the chief would save the model here)")
    print(f"Result: test_accuracy={accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
