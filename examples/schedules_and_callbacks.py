"""Schedules and callbacks: find a learning rate, then train with 1cycle and warm-up cosine.

On scikit-learn's 8x8 digits, with a small CNN and SGD:

1. `LRFinder` sweeps the learning rate (the model and optimizer are restored after) and
   suggests one (the learning rate of the lowest smoothed loss, divided by 10);
2. training with `OneCycle` (peaking at `--peak-factor` times the suggestion) and
   `OneCycleMomentum` (momentum cycled inversely);
3. training with `WarmupCosineDecay` at the same peak, for comparison;

both runs with the monitors `LearningRateMonitor`, `GradientNormMonitor` and
`ThroughputMonitor`. When matplotlib is installed it saves the LR-finder curve, both
schedules and both histories as PNGs in `--out`. Runs offline in about a minute on a
2-core CPU, on either Keras:

    python examples/schedules_and_callbacks.py                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python examples/schedules_and_callbacks.py    # tf_keras (Keras 2)
    python examples/schedules_and_callbacks.py --epochs 3 --out /tmp/sched

The last line reads `Result: suggested_lr=0.1252 one_cycle=0.87 warmup_cosine=0.95`
(test accuracies).
"""

import argparse
import importlib.util
import math
import os

from keras_dnnopt import callbacks, schedules, visualization
from keras_dnnopt.backend import KERAS_NAME, keras
from keras_dnnopt.data import load_dataset


def load_digits(seed):
    """Digits split 70/10/20 (stratified, duplicates removed), pixels scaled to [0, 1]."""
    data = load_dataset("digits", validation_split=0.1, test_split=0.2, normalize=False,
                        seed=seed)
    scale = lambda x: (x / 16.0).astype("float32")  # noqa: E731
    return ((scale(data.x_train), data.y_train), (scale(data.x_val), data.y_val),
            (scale(data.x_test), data.y_test))


def build(width, learning_rate=0.01):
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu"),
        # Flatten, not global pooling: with pooling this plain-SGD network can sit on
        # the uniform-output plateau (loss ln 10) for the whole short sweep.
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_cnn")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def monitors():
    return [callbacks.LearningRateMonitor(), callbacks.GradientNormMonitor(frequency=10),
            callbacks.ThroughputMonitor()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32,
                        help="filters of the first convolution (doubled twice)")
    parser.add_argument("--finder-steps", type=int, default=60,
                        help="steps of the learning-rate range test")
    parser.add_argument("--peak-factor", type=float, default=1.0,
                        help="peak learning rate = this x the finder's suggestion")
    parser.add_argument("--out", default=os.path.join("runs", "examples", "schedules"),
                        help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), val_data, (x_test, y_test) = load_digits(args.seed)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    print(f"Keras in use: {KERAS_NAME}; {len(x_train)} training images, "
          f"{steps_per_epoch} steps per epoch, {total_steps} steps")

    # 1. The range test on a fresh model (float learning rate: LRFinder sets it per step).
    finder = callbacks.LRFinder(min_learning_rate=1e-4, max_learning_rate=3.0,
                                num_steps=args.finder_steps)
    finder.find(build(args.width), x_train, y_train, batch_size=args.batch_size)
    # "min_loss": a tenth of the rate of the lowest smoothed loss, safely below the
    # divergence; steadier than "steepest" on a short, noisy sweep.
    suggested = finder.suggestion(method="min_loss")
    peak = args.peak_factor * suggested
    print(f"LRFinder: {len(finder.learning_rates)} steps, suggested learning rate "
          f"{suggested:.4g}; peak used {peak:.4g}")

    runs = {
        "one_cycle": schedules.OneCycle(peak, total_steps=total_steps, pct_start=0.3),
        "warmup_cosine": schedules.WarmupCosineDecay(
            peak, decay_steps=total_steps - steps_per_epoch, warmup_steps=steps_per_epoch),
    }
    histories, accuracies = {}, {}
    for name, schedule in runs.items():
        keras.utils.set_random_seed(args.seed)
        model = build(args.width)
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        extra = [callbacks.OneCycleMomentum(total_steps=total_steps, pct_start=0.3)] \
            if name == "one_cycle" else []
        cbs = [*extra, *monitors()]
        history = model.fit(x_train, y_train, validation_data=val_data, epochs=args.epochs,
                            batch_size=args.batch_size, callbacks=cbs, verbose=0)
        histories[name] = history
        accuracies[name] = model.evaluate(x_test, y_test, verbose=0)[1]
        grad_norm = cbs[-2]
        logs = history.history
        print(f"{name}: final lr {logs['learning_rate'][-1]:.3g}, last sampled grad norm "
              f"{grad_norm.grad_norms[-1]:.3f} (step {grad_norm.steps[-1]}), "
              f"{logs['samples_per_second'][-1]:,.0f} samples/s, "
              f"val accuracy {logs['val_accuracy'][-1]:.4f}, "
              f"test accuracy {accuracies[name]:.4f}")

    if importlib.util.find_spec("matplotlib") is not None:
        os.makedirs(args.out, exist_ok=True)
        saved = [os.path.join(args.out, "lr_finder.png")]
        visualization.plot_lr_finder(finder, save_path=saved[-1])
        for name, schedule in runs.items():
            saved.append(os.path.join(args.out, f"schedule_{name}.png"))
            visualization.plot_schedule(schedule, total_steps, label=name,
                                        save_path=saved[-1])
            saved.append(os.path.join(args.out, f"history_{name}.png"))
            visualization.plot_history(histories[name], save_path=saved[-1])
        print("Saved: " + ", ".join(saved))
    else:
        print("matplotlib is not installed: no plots (pip install keras_dnnopt[viz])")
    print(f"Result: suggested_lr={suggested:.4g} "
          + " ".join(f"{k}={v:.4f}" for k, v in accuracies.items()))
    return accuracies


if __name__ == "__main__":
    main()
