"""Train a small MobileNet on scikit-learn's bundled digits, with a warm-up cosine schedule
and keras_dnnopt's training callbacks, then profile it. Runs offline in about a minute on a
2-core CPU, on either Keras:

    python examples/train_digits.py                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python examples/train_digits.py    # tf_keras (Keras 2)
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_dnnopt
from keras_dnnopt import callbacks, models, schedules
from keras_dnnopt.backend import KERAS_NAME, keras


def load_data(seed):
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.seed)

    # A few hundred steps are few for Keras' default batch-norm momentum (0.99): the moving
    # statistics would lag the weights. 0.9 follows them within a few dozen steps (20
    # epochs: 98.9% test accuracy, against 97.8% with 0.99).
    model = models.mobilenet_v1(
        input_shape=(8, 8, 1), num_classes=10, alpha=args.alpha, dropout=0.1,
        batch_norm_momentum=0.9,
    )
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    total_steps = steps_per_epoch * args.epochs
    schedule = schedules.WarmupCosineDecay(
        learning_rate=keras_dnnopt.schedules.scale_learning_rate(0.4, args.batch_size),
        decay_steps=total_steps - 2 * steps_per_epoch,
        warmup_steps=2 * steps_per_epoch,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    throughput = callbacks.ThroughputMonitor()
    grad_norm = callbacks.GradientNormMonitor(frequency=20)
    model.fit(
        x_train, y_train,
        validation_split=0.1,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[callbacks.LearningRateMonitor(), grad_norm, throughput],
        verbose=2,
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print()
    print(keras_dnnopt.profile(model))
    print(f"\nKeras in use: {KERAS_NAME}")
    print(f"Test accuracy on digits ({len(x_test)} held-out images): {accuracy:.4f}")
    print(f"Result: test_accuracy={accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
