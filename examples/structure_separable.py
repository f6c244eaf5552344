"""Structure: MobileNetV1 vs its plain-convolution twin vs the separable variant of your CNN.

Builds three kinds of model for scikit-learn's 8x8 digits and compares them side by side:

- `mobilenet_v1` (depthwise-separable blocks) and `plain_cnn` (the same shape with full
  convolutions), from `keras_dnnopt.models`;
- a small `Conv2D` CNN of the kind a user writes, and `separable_variant` of it (each
  full `Conv2D` rewritten as a `SeparableConv2D`, initialised from the trained kernels by a
  truncated SVD, then fine-tuned).

It prints a profile table (parameters, MACs, float32 weight bytes, batch-1 latency from
`keras_dnnopt.profile` / `measure_latency`) and the test accuracy of each after a short
training. Runs offline in one to two minutes on a 2-core CPU, on either Keras:

    python examples/structure_separable.py                          # Keras 3
    TF_USE_LEGACY_KERAS=1 python examples/structure_separable.py    # tf_keras (Keras 2)
    python examples/structure_separable.py --epochs 15 --alpha 0.5   # longer, wider

The last line reads `Result: mobilenet_v1=0.86 plain_cnn=0.95 user_cnn=0.95 separable=0.62`
(test accuracies).
"""

import argparse

import keras_dnnopt
from keras_dnnopt import models
from keras_dnnopt.backend import KERAS_NAME, keras
from keras_dnnopt.data import load_dataset


def load_digits(seed):
    """Digits split 70/10/20 (stratified, duplicates removed), pixels scaled to [0, 1]."""
    data = load_dataset("digits", validation_split=0.1, test_split=0.2, normalize=False,
                        seed=seed)
    scale = lambda x: (x / 16.0).astype("float32")  # noqa: E731
    return ((scale(data.x_train), data.y_train), (scale(data.x_val), data.y_val),
            (scale(data.x_test), data.y_test))


def user_cnn():
    """A plain Conv2D network, as a user might have written it."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="conv3"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="user_cnn")


def train(model, train_data, val_data, epochs, batch_size, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*train_data, validation_data=val_data, epochs=epochs, batch_size=batch_size,
              verbose=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per model")
    parser.add_argument("--finetune-epochs", type=int, default=4,
                        help="fine-tuning epochs of the separable variant")
    parser.add_argument("--alpha", type=float, default=0.25, help="MobileNet width")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train_data, val_data, test_data = load_digits(args.seed)
    print(f"Keras in use: {KERAS_NAME}; digits train/val/test = "
          f"{len(train_data[1])}/{len(val_data[1])}/{len(test_data[1])}")

    # Short training on few samples: a faster batch-norm momentum than the default 0.99
    # lets the moving statistics catch up within a few hundred steps. min_feature_size=2
    # keeps two stride-2 stages on 8x8 inputs (a 2x2 last map instead of 4x4): a third
    # of the MACs, which keeps plain_cnn's training short on a CPU.
    common = dict(input_shape=(8, 8, 1), num_classes=10, alpha=args.alpha, dropout=0.1,
                  batch_norm_momentum=0.9, min_feature_size=2)
    built = {
        "mobilenet_v1": models.mobilenet_v1(**common),
        "plain_cnn": models.plain_cnn(**common),
        "user_cnn": user_cnn(),
    }
    for name in ("mobilenet_v1", "plain_cnn", "user_cnn"):
        train(built[name], train_data, val_data, args.epochs, args.batch_size,
              args.learning_rate)

    # The rewrite of the trained user CNN: same layers, each 3x3 Conv2D made separable.
    separable, report = models.separable_variant(built["user_cnn"], weights="approximate")
    print()
    print(report)
    separable.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = separable.evaluate(*test_data, verbose=0)[1]
    train(separable, train_data, val_data, args.finetune_epochs, args.batch_size,
          args.learning_rate)
    print(f"separable variant: test accuracy {before:.4f} straight after the rewrite "
          f"(SVD-initialised), after {args.finetune_epochs} fine-tuning epochs below")
    built["separable"] = separable

    print("\n| model | params | MACs | float32 bytes | latency (ms, batch 1) | test accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    accuracies = {}
    for name, model in built.items():
        prof = keras_dnnopt.profile(model)
        latency = keras_dnnopt.measure_latency(model, batch_size=1, warmup=5,
                                               runs=args.latency_runs)
        accuracies[name] = model.evaluate(*test_data, verbose=0)[1]
        print(f"| {name} | {prof.params:,} | {prof.macs:,} | {prof.bytes['float32']:,} | "
              f"{latency.median_ms:.3f} | {accuracies[name]:.4f} |")
    ratio = keras_dnnopt.profile(built["plain_cnn"]).macs / max(
        keras_dnnopt.profile(built["mobilenet_v1"]).macs, 1)
    print(f"\nplain_cnn needs {ratio:.1f}x the MACs of mobilenet_v1 at alpha={args.alpha}; "
          f"the separable variant keeps {report.params_after / report.params_before:.0%} of "
          "the user CNN's parameters.")
    print("Result: " + " ".join(f"{k}={v:.4f}" for k, v in accuracies.items()))
    return accuracies


if __name__ == "__main__":
    main()
